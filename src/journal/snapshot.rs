//! Snapshots: the books and the sessions' counts at one journal sequence number, so that
//! recovery is snapshot + tail instead of re-running the whole day.
//!
//! A snapshot file `<sequence, 20 digits>.ims` sits next to the segments. The sequence
//! number is that of the last journal record it covers, always the last event of a command.
//! It is written to a temporary name, `fsync`ed, then renamed, so a crash leaves either the
//! whole file or none. Layout (little-endian), 64-byte header then the payload:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `IRONMSNP` |
//! | 8 | 2 | format version (2; version 1, before the trading day, is skipped: recovery replays the journal instead) |
//! | 10 | 2 | header length (64) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | engine instance id of the journal |
//! | 24 | 8 | sequence number of the last record covered |
//! | 32 | 8 | fingerprint of the book configuration |
//! | 40 | 8 | creation time, ns since the Unix epoch |
//! | 48 | 8 | payload length |
//! | 56 | 4 | CRC32C of the payload |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//! | 64 | .. | payload: postcard encoding of [`SnapshotBody`] |
//!
//! Where the state comes from is `[journal] snapshot_source` (`"auto"`, shipped: the
//! follower when each stage has a thread, the matcher when they share one):
//! - `"matcher"`: the matcher stage itself, at the end of a batch, every
//!   `interval` records ([`SnapshotTaker`]): it copies its state, which stalls that batch
//!   for a time proportional to the resting orders, and hands it to a thread that writes
//!   it once the journal has written that far ([`spawn_snapshot_writer`]). Nothing else
//!   costs anything between snapshots but a counter per event.
//! - `"follower"`: a thread of its own ([`run_snapshotter`]) follows the journal files as
//!   they grow and re-runs the commands through its own matcher, checking every event: the
//!   matcher never waits for a snapshot, but the re-run costs about as much CPU again as
//!   matching, all day (on a machine with cores to spare).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::follow::Follower;
use super::format::Entry;
use super::reader::{JournalError, Replayer, files_ending};
use crate::book::{BookConfig, BookState, Event, Matcher};
use crate::types::OwnerId;

/// First 8 bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"IRONMSNP";
/// Snapshot format version written and understood.
pub const SNAPSHOT_VERSION: u16 = 2;
const HEADER_LEN: usize = 64;
/// Snapshots kept; older ones are removed once a newer one is written.
pub const SNAPSHOTS_KEPT: usize = 2;

/// What a snapshot holds besides its header.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotBody {
    /// Per user: sequenced messages sent so far (events with that owner).
    pub sessions: Vec<u64>,
    /// The books.
    pub book: BookState,
}

/// A snapshot read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Engine instance id of the journal it belongs to.
    pub instance: u64,
    /// Last journal record covered.
    pub seq: u64,
    /// Book configuration fingerprint.
    pub fingerprint: u64,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
    /// Contents.
    pub body: SnapshotBody,
}

impl Snapshot {
    /// Why the snapshot does not belong to the journal of engine `instance` with book
    /// configuration `fingerprint`, if it does not (recovery and `replay` skip it then).
    pub fn foreign_to(&self, instance: u64, fingerprint: u64) -> Option<&'static str> {
        if self.instance != instance {
            Some("of another journal (engine instance differs)")
        } else if self.fingerprint != fingerprint {
            Some("of another book configuration")
        } else {
            None
        }
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not readable.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Bad magic, version or header length.
    #[error("not an ironmatch snapshot of version {SNAPSHOT_VERSION}")]
    Format,
    /// A checksum does not match.
    #[error("CRC32C mismatch ({0})")]
    Crc(&'static str),
    /// The payload does not decode.
    #[error("payload does not decode")]
    Payload,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The file name of the snapshot covering records up to `seq`.
pub fn snapshot_name(seq: u64) -> String {
    format!("{seq:020}.ims")
}

/// Encodes a snapshot file's bytes.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let payload = postcard::to_allocvec(&snapshot.body).expect("a snapshot body serializes");
    let mut out = vec![0u8; HEADER_LEN];
    out[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    out[8..10].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out[16..24].copy_from_slice(&snapshot.instance.to_le_bytes());
    out[24..32].copy_from_slice(&snapshot.seq.to_le_bytes());
    out[32..40].copy_from_slice(&snapshot.fingerprint.to_le_bytes());
    out[40..48].copy_from_slice(&snapshot.created_ns.to_le_bytes());
    out[48..56].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out[56..60].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let crc = crc32c::crc32c(&out[..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes and checks a snapshot file's bytes.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    if bytes.len() < HEADER_LEN
        || bytes[0..8] != SNAPSHOT_MAGIC
        || u16::from_le_bytes([bytes[8], bytes[9]]) != SNAPSHOT_VERSION
        || u16::from_le_bytes([bytes[10], bytes[11]]) as usize != HEADER_LEN
    {
        return Err(SnapshotError::Format);
    }
    if crc32c::crc32c(&bytes[..60]) != u32_at(bytes, 60) {
        return Err(SnapshotError::Crc("header"));
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != u64_at(bytes, 48) {
        return Err(SnapshotError::Crc("payload length"));
    }
    if crc32c::crc32c(payload) != u32_at(bytes, 56) {
        return Err(SnapshotError::Crc("payload"));
    }
    let body = match postcard::take_from_bytes::<SnapshotBody>(payload) {
        Ok((body, [])) => body,
        _ => return Err(SnapshotError::Payload),
    };
    Ok(Snapshot {
        instance: u64_at(bytes, 16),
        seq: u64_at(bytes, 24),
        fingerprint: u64_at(bytes, 32),
        created_ns: u64_at(bytes, 40),
        body,
    })
}

/// Snapshot files in `dir`, oldest first, with the sequence number their name gives.
pub fn snapshot_paths(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = files_ending(dir, ".ims")?
        .into_iter()
        .filter_map(|path| {
            let seq = path.file_stem()?.to_str()?.parse::<u64>().ok()?;
            Some((seq, path))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Removes temporary files of snapshots a crash cut short (`*.ims.tmp`).
pub fn remove_partial(dir: &Path) -> io::Result<()> {
    for path in files_ending(dir, ".ims.tmp")? {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// Writes `snapshot` into `dir` atomically (temporary file, fsync, rename, fsync of the
/// directory), then removes all but the newest [`SNAPSHOTS_KEPT`]. Returns its path.
pub fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> io::Result<PathBuf> {
    let bytes = encode_snapshot(snapshot);
    let path = super::write_file_atomically(dir, &snapshot_name(snapshot.seq), &bytes, true)?;
    let paths = snapshot_paths(dir)?;
    for (_, old) in paths.iter().rev().skip(SNAPSHOTS_KEPT) {
        std::fs::remove_file(old)?;
    }
    Ok(path)
}

/// Wall-clock ns since the Unix epoch (for headers only; matching never reads a clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// What the snapshot thread starts from: the state recovery ended with.
pub struct SnapshotterStart {
    /// Directory of the journal.
    pub dir: PathBuf,
    /// Book configuration (the snapshotter runs its own matcher).
    pub book: BookConfig,
    /// Instance id of the journal.
    pub instance: u64,
    /// The matcher's state after record `next_seq - 1`.
    pub state: BookState,
    /// Per user: sequenced messages up to there.
    pub sessions: Vec<u64>,
    /// The next journal record to read.
    pub next_seq: u64,
    /// Records between snapshots.
    pub interval: u64,
    /// The last record the newest snapshot covers (0: none): the next is due `interval`
    /// records after it, so a journal recovered without one gets one soon.
    pub last_snapshot: u64,
}

/// How often the snapshot thread looks for new records when it has caught up.
const FOLLOW_PERIOD: Duration = Duration::from_millis(50);

/// The snapshot thread: follows the journal, re-runs its commands (checking every event,
/// like recovery does), and writes a snapshot every `interval` records at the next
/// command boundary. `stop` is set once the journal writer has ended: the thread then
/// catches up, writes a last snapshot and ends. A problem stops snapshots, never the engine.
/// With `written` (the writer's [`written`](super::JournalWriter::written) count), it reads
/// only records written (with `fsync = "always"`, made durable), so a snapshot never
/// covers a record a power loss can take (one that did was removed at the next start).
pub fn run_snapshotter(
    start: SnapshotterStart,
    stop: &AtomicBool,
    written: Option<Arc<AtomicU64>>,
) {
    if let Err(e) = snapshot_loop(start, stop, written) {
        eprintln!("ironmatch snapshots: stopped, recovery will replay more of the journal: {e}");
    }
}

fn snapshot_loop(
    mut start: SnapshotterStart,
    stop: &AtomicBool,
    written: Option<Arc<AtomicU64>>,
) -> Result<(), String> {
    let matcher = Matcher::from_state(&start.book, &start.state)?;
    start.state = BookState::default();
    let fingerprint = super::fingerprint(&start.book);
    let mut replayer = Replayer::new(matcher, std::mem::take(&mut start.sessions));
    let mut follower =
        Follower::new(&start.dir, fingerprint, start.next_seq).of_instance(start.instance);
    if let Some(written) = written {
        follower = follower.limited_to(written);
    }
    let mut last_snapshot = start.last_snapshot;
    loop {
        // Read before the journal is read: only a poll that finds nothing after the flag
        // was seen is at the journal's end (see the feed publisher's loop).
        let stopping = stop.load(Ordering::Acquire);
        let read = follower
            .poll(|place, entry: &Entry| {
                replayer.feed(place, entry, &mut |_| {})?;
                if replayer.at_boundary()
                    && place.seq >= last_snapshot.saturating_add(start.interval)
                {
                    take(&start, fingerprint, &replayer, place.seq).map_err(|source| {
                        JournalError::Io {
                            path: start.dir.clone(),
                            source,
                        }
                    })?;
                    last_snapshot = place.seq;
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        if read == 0 && stopping {
            // Caught up after the writer ended: a last snapshot makes the next start quick.
            let end = follower.next_seq() - 1;
            if replayer.at_boundary() && end > last_snapshot {
                take(&start, fingerprint, &replayer, end)
                    .map_err(|e| format!("{}: {e}", start.dir.display()))?;
            }
            return Ok(());
        }
        if read == 0 {
            std::thread::sleep(FOLLOW_PERIOD);
        }
    }
}

/// Writes the replayer's state as the snapshot covering records up to `seq`.
fn take(
    start: &SnapshotterStart,
    fingerprint: u64,
    replayer: &Replayer,
    seq: u64,
) -> io::Result<()> {
    let snapshot = Snapshot {
        instance: start.instance,
        seq,
        fingerprint,
        created_ns: now_ns(),
        body: SnapshotBody {
            sessions: replayer.sessions().to_vec(),
            book: replayer.matcher().state(),
        },
    };
    write_snapshot(&start.dir, &snapshot).map(|_| ())
}

/// Scheduling niceness of the snapshot thread: the lowest priority. It only has to keep up
/// on average, so when cores are short (2 of them, `shared` threading beside a load
/// generator) the pipeline runs first: the follower stays off the hot path in every mode.
const SNAPSHOT_NICE: i32 = 19;

/// Starts [`run_snapshotter`] on its own thread (named `im-snapshot`, niceness 19, the
/// lowest priority).
pub fn spawn_snapshotter(
    start: SnapshotterStart,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("im-snapshot".into())
        .spawn(move || {
            lower_priority();
            run_snapshotter(start, &stop, Some(written))
        })
}

/// Gives the calling snapshot thread niceness [`SNAPSHOT_NICE`].
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), SNAPSHOT_NICE) {
        eprintln!("ironmatch snapshots: cannot set niceness {SNAPSHOT_NICE}: {e}");
    }
}

/// Where snapshots come from (`[journal] snapshot_source`; see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotSource {
    /// `follower` when the pipeline runs a thread per stage (there are cores to spare),
    /// `matcher` when it shares one thread (there are not).
    Auto,
    /// The matcher stage copies its state at the end of a batch.
    Matcher,
    /// A thread re-runs the journal through its own matcher.
    Follower,
}

impl SnapshotSource {
    /// `"auto"`, `"matcher"` or `"follower"`.
    pub fn parse(text: &str) -> Option<SnapshotSource> {
        match text {
            "auto" => Some(SnapshotSource::Auto),
            "matcher" => Some(SnapshotSource::Matcher),
            "follower" => Some(SnapshotSource::Follower),
            _ => None,
        }
    }

    /// The configuration's name for it.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotSource::Auto => "auto",
            SnapshotSource::Matcher => "matcher",
            SnapshotSource::Follower => "follower",
        }
    }

    /// `Auto` resolved for a pipeline that has (`dedicated`) or has not (`shared`) a
    /// thread per stage.
    pub fn resolve(self, thread_per_stage: bool) -> SnapshotSource {
        match self {
            SnapshotSource::Auto if thread_per_stage => SnapshotSource::Follower,
            SnapshotSource::Auto => SnapshotSource::Matcher,
            other => other,
        }
    }
}

/// The matcher stage's part of matcher-made snapshots: it counts each user's sequenced
/// messages as the events pass and, at the end of a batch once `interval` records have
/// gone by, copies the matcher's state for the snapshot writer thread.
#[derive(Debug)]
pub struct SnapshotTaker {
    interval: u64,
    /// Sequence number the journal gives the next record the matcher pushes.
    next_seq: u64,
    /// The last record the newest snapshot covers (0: none).
    last: u64,
    /// Per user: sequenced messages so far.
    sessions: Vec<u64>,
    instance: u64,
    fingerprint: u64,
    /// The snapshot and how long copying the state took (the matcher's pause).
    to_writer: crossbeam::channel::Sender<(Snapshot, Duration)>,
}

impl SnapshotTaker {
    /// Counts `event` in its owner's session.
    #[inline]
    pub fn count(&mut self, event: &Event) {
        if let Some(owner) = event.body.owner() {
            self.count_owner(owner);
        }
    }

    /// Counts one event of `owner`'s in its session: what [`count`](Self::count) does for
    /// an event with an owner, for a sink that knows the owners of a record's events
    /// without building them (a match: its two executions; a full cancel and an order
    /// that went to the book as accepted: one each, the feed's event having none).
    #[inline]
    pub fn count_owner(&mut self, owner: OwnerId) {
        if let Some(n) = self.sessions.get_mut(usize::from(owner.0)) {
            *n += 1;
        }
    }

    /// A taker whose snapshots go nowhere, counting `users` sessions from 0.
    #[cfg(test)]
    pub(crate) fn detached(users: usize) -> SnapshotTaker {
        let (to_writer, _) = crossbeam::channel::bounded(1);
        SnapshotTaker {
            interval: u64::MAX,
            next_seq: 1,
            last: 0,
            sessions: vec![0; users],
            instance: 0,
            fingerprint: 0,
            to_writer,
        }
    }

    /// Per user: sequenced messages counted so far.
    #[cfg(test)]
    pub(crate) fn sessions(&self) -> &[u64] {
        &self.sessions
    }

    /// `records` more records went to the journal writer.
    #[inline]
    pub fn pushed(&mut self, records: u64) {
        self.next_seq += records;
    }

    /// Whether a snapshot is due (call at a command boundary: the end of a batch).
    #[inline]
    pub fn due(&self) -> bool {
        self.next_seq > self.last.saturating_add(self.interval)
    }

    /// Copies `matcher`'s state as the snapshot covering every record pushed so far, for
    /// the writer thread, unless there is nothing new or the writer is still busy (then
    /// the next batch tries again). Returns whether it took one.
    pub fn take(&mut self, matcher: &Matcher) -> bool {
        self.take_waiting(matcher, Duration::ZERO)
    }

    /// [`take`](Self::take), waiting up to `patience` for the writer to be free (the last
    /// snapshot, at shutdown: the writer's previous snapshot covers records already
    /// written, so it finishes).
    pub fn take_waiting(&mut self, matcher: &Matcher, patience: Duration) -> bool {
        let seq = self.next_seq - 1;
        if seq <= self.last {
            return false;
        }
        let free_by = std::time::Instant::now() + patience;
        while self.to_writer.is_full() {
            if std::time::Instant::now() >= free_by {
                return false;
            }
            std::thread::sleep(WRITTEN_POLL);
        }
        let started = std::time::Instant::now();
        let snapshot = Snapshot {
            instance: self.instance,
            seq,
            fingerprint: self.fingerprint,
            created_ns: now_ns(),
            body: SnapshotBody {
                sessions: self.sessions.clone(),
                book: matcher.state(),
            },
        };
        match self.to_writer.try_send((snapshot, started.elapsed())) {
            Ok(()) => {
                self.last = seq;
                true
            }
            // Full: cannot be, only this thread sends.
            Err(crossbeam::channel::TrySendError::Full(_)) => false,
            // The writer stopped (a snapshot it could not write): no snapshot is due again.
            // Left due, every batch copied the whole book for nothing (57 ms a batch for a
            // million resting orders), for the rest of the day.
            Err(crossbeam::channel::TrySendError::Disconnected(_)) => {
                self.interval = u64::MAX;
                false
            }
        }
    }
}

/// How often the snapshot writer looks whether the journal has written a snapshot's
/// records yet.
const WRITTEN_POLL: Duration = Duration::from_millis(1);

/// Starts matcher-made snapshots from `start` (its `state` is not used): returns the
/// matcher's [`SnapshotTaker`] and the writer thread (`im-snapshot`, niceness 19, the
/// lowest priority). The thread writes each snapshot once `written` (the last record
/// the journal writer has written, see
/// [`JournalWriter::written`](super::writer::JournalWriter::written)) has reached it, so
/// a snapshot never covers records the journal lacks after a process crash. It ends when
/// the taker is dropped; `stop` is set once the journal writer has ended (a snapshot it
/// never reached is dropped).
pub fn spawn_snapshot_writer(
    start: SnapshotterStart,
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> io::Result<(SnapshotTaker, std::thread::JoinHandle<()>)> {
    let (to_writer, from_taker) = crossbeam::channel::bounded::<(Snapshot, Duration)>(1);
    let taker = SnapshotTaker {
        interval: start.interval,
        next_seq: start.next_seq,
        last: start.last_snapshot,
        sessions: start.sessions,
        instance: start.instance,
        fingerprint: super::fingerprint(&start.book),
        to_writer,
    };
    let dir = start.dir;
    let thread = std::thread::Builder::new()
        .name("im-snapshot".into())
        .spawn(move || {
            lower_priority();
            while let Ok((snapshot, copied_in)) = from_taker.recv() {
                while written.load(Ordering::Acquire) < snapshot.seq {
                    if stop.load(Ordering::Acquire) && written.load(Ordering::Acquire) < snapshot.seq
                    {
                        eprintln!(
                            "ironmatch snapshots: the journal ended before record {}; no snapshot there",
                            snapshot.seq
                        );
                        return;
                    }
                    std::thread::sleep(WRITTEN_POLL);
                }
                let started = std::time::Instant::now();
                if let Err(e) = write_snapshot(&dir, &snapshot) {
                    eprintln!(
                        "ironmatch snapshots: stopped, recovery will replay more of the journal: {}: {e}",
                        dir.display()
                    );
                    return;
                }
                eprintln!(
                    "ironmatch snapshots: record {}, {} resting orders: the matcher paused {} us to copy them, written in {} ms",
                    snapshot.seq,
                    snapshot.body.book.orders.len(),
                    copied_in.as_micros(),
                    started.elapsed().as_millis()
                );
            }
        })?;
    Ok((taker, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Once the writer has stopped (a snapshot it could not write), no snapshot is due
    /// again: the matcher no longer copies its book after every batch for nothing.
    #[test]
    fn a_writer_gone_makes_no_snapshot_due_again() {
        let config = crate::book::flow::stp_test_config(0);
        let matcher = Matcher::new(&config);
        let mut taker = SnapshotTaker::detached(config.owners.len());
        taker.interval = 10;
        taker.pushed(20);
        assert!(taker.due());
        assert!(!taker.take(&matcher), "the writer has gone");
        assert!(!taker.due());
        taker.pushed(1_000);
        assert!(!taker.due());
    }
}
