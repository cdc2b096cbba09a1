//! Stage 3, the journal writer, and everything that reads journals: the source of truth.
//!
//! The writer thread takes every command and event from the matcher, appends them to
//! segment files in batches (group commit), and only then releases the batch's events to
//! egress. So no client hears of anything that is not in the journal: with
//! `fsync = "never"` a fact acknowledged survives a crash of the process (`kill -9`; the
//! bytes are in the kernel), with `fsync = "always"` it also survives a power loss (the
//! batch was `fdatasync`ed before its events left).
//!
//! On start, [`recover`] reads the journal back: it re-runs every command through a fresh
//! matcher, checks that each journaled event is the one the matcher produces again, and
//! hands the events to the gateway to rebuild each session's numbered stream. With a
//! [snapshot] it starts from the newest one that checks out and re-runs only the
//! commands after it; the events before it are still read for the sessions' streams.
//!
//! # Format, version 5
//! A journal is a directory of segment files named `<first sequence, 20 digits>.imj`. All
//! integers are little-endian. This format is also the replication protocol: a standby
//! reads the same records in the same order.
//!
//! Segment header, 64 bytes:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `IRONMJNL` |
//! | 8 | 2 | format version (5, written since a mass cancel limited to a side is journaled with it (`MassCanceledSide`); 4, since the gateway's refusals have reasons of their own (display, pegging, cross order, retail, other); 3, since records carry their index in their batch, 2, with the `InvalidReplace` command, and 1 are read too) |
//! | 10 | 2 | header length (64) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | engine instance id (chosen when the journal was created) |
//! | 24 | 8 | sequence number of the segment's first record |
//! | 32 | 8 | fingerprint of the book configuration (instruments, users, pools, self-trade mode) |
//! | 40 | 8 | creation time, ns since the Unix epoch |
//! | 48 | 12 | reserved, 0 |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! Then records, back to back:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | record length `L`, framing included (21..=256) |
//! | 4 | 8 | sequence number: 1 for the journal's first record, +1 for each record |
//! | 12 | 1 | type: 1 = command (an input, with its user, reference and gateway timestamp), 2 = event (an output of the command before it) |
//! | 13 | 1 | reserved, 0 |
//! | 14 | 2 | the record's index within its batch, from 0, held at 65,535 beyond (written since version 3; 0 by older builds) |
//! | 16 | `L - 20` | payload: the [postcard 1.0](https://postcard.jamesmunns.com/wire-format) encoding of [`Command`](crate::book::Command) or [`Event`](crate::book::Event) |
//! | `L - 4` | 4 | CRC32C of bytes `0..L-4` |
//!
//! A command's events follow it; they may straddle a batch (and so a crash) boundary,
//! in which case recovery regenerates and appends the missing ones before serving.
//!
//! A batch is one `write` (and with `fsync = "always"` one `fdatasync`, returned before
//! the next batch is written and before any of its events leave). A record's index in its
//! batch tells where its batch began (its sequence number less the index), so recovery
//! can tell a power loss that left the last batch's pages on disk out of order (a sector
//! of zeros in a damaged record whose batch every whole record after it belongs to) from
//! damage to a batch written before (a record after it whose batch began after it): the
//! first is cut as a torn write, the second refused.

mod follow;
mod format;
pub mod pinned;
mod reader;
pub mod snapshot;
mod writer;
pub(crate) use reader::replays_as_journaled;
#[cfg(test)]
pub(crate) use writer::FAIL_DIR_SYNC;

pub use follow::Follower;
pub use format::{
    Entry, FormatError, HEADER_LEN, Header, RECORD_LEN_MAX, batch_index, fingerprint, read_header,
    read_record, write_header, write_record,
};
pub use reader::{
    JournalError, Place, Recovery, Replayer, SegmentScan, first_header, recover, scan_journal,
    segment_paths,
};
pub use writer::{
    FsyncMode, JournalAgent, JournalWriter, LOCK_NAME, LOCK_PATIENCE, Released, SYNC_FAILED_NAME,
    check_sync_failed, create_dir_durably, lock_dir, sync_dir_or_mark, sync_or_mark,
    write_file_atomically, write_file_atomically_or_mark,
};

/// Records taken from the ring per batch (one write, one optional fdatasync).
pub const BATCH_LEN_MAX: usize = 1024;

/// Journal records one record from the matcher can make: a match (`Record::Fill`) is three.
pub const RECORDS_PER_INPUT_MAX: usize = 3;
