//! The journal: restart recovery over loopback, torn tails at every byte offset, corruption
//! detection, and recovery's check that replayed commands give the journaled events.

mod common;

use common::*;
use ironmatch::book::flow::{ByteSource, FlowDecoder, test_config as flow_config};
use ironmatch::book::{Matcher, StpMode};
use ironmatch::journal::{self, Entry, FsyncMode, Header, JournalError, JournalWriter};
use ironmatch::server::Server;
use ironmatch::wire::ouch::outbound;

const PX: u64 = 1_500_000;

#[test]
fn a_restart_brings_back_books_sessions_and_references() {
    let dir = temp_dir("restart");
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    c.limit(1, b'S', 100, "AAPL", PX).unwrap();
    c.limit(2, b'S', 50, "AAPL", PX + 100).unwrap();
    c.cancel(2, 20).unwrap();
    let before: Vec<(u64, Vec<u8>)> = (0..3).map(|_| next(&mut c)).collect();
    drop(c);
    server.stop().unwrap();

    let server = Server::start(&config).unwrap();
    let addr = server.local_addr();
    let mut c = login(addr, "MM3", "pw3", 1);
    let after: Vec<(u64, Vec<u8>)> = (0..3).map(|_| next(&mut c)).collect();
    assert_eq!(
        after, before,
        "the session's stream survives the restart byte for byte"
    );
    // The UserRefNum high-water mark survived: 2 is used.
    c.limit(2, b'S', 10, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut c).0, outbound::REJECTED);
    // The books survived: MM3's resting order trades after the restart.
    let mut taker = login(addr, "MM2", "pw2", 1);
    taker.limit(1, b'B', 100, "AAPL", PX).unwrap();
    next(&mut taker);
    assert_eq!(next_type(&mut taker).0, outbound::EXECUTED);
    assert_eq!(next_type(&mut c).0, outbound::EXECUTED);
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// The header of a fresh journal for `book`.
fn first_header(book: &ironmatch::book::BookConfig) -> Header {
    Header {
        instance: 1,
        first_seq: 1,
        fingerprint: journal::fingerprint(book),
        created_ns: 0,
    }
}

/// Writes `commands` flow commands and their events to a journal in a fresh directory.
fn write_flow(commands: usize) -> (TempDir, ironmatch::book::BookConfig) {
    write_flow_in_segments(commands, 1 << 30)
}

/// Like [`write_flow`], rotating segments past `segment_bytes` bytes.
fn write_flow_in_segments(
    commands: usize,
    segment_bytes: u64,
) -> (TempDir, ironmatch::book::BookConfig) {
    write_flow_keeping(commands, segment_bytes, <[ironmatch::book::Event]>::len)
}

/// Like [`write_flow_in_segments`], journaling of each command's events only the first
/// `keep(events)`.
fn write_flow_keeping(
    commands: usize,
    segment_bytes: u64,
    keep: impl FnMut(&[ironmatch::book::Event]) -> usize,
) -> (TempDir, ironmatch::book::BookConfig) {
    write_flow_batched(commands, segment_bytes, 1, keep)
}

/// Like [`write_flow_keeping`], `per_batch` commands (with their events) to a batch.
fn write_flow_batched(
    commands: usize,
    segment_bytes: u64,
    per_batch: usize,
    mut keep: impl FnMut(&[ironmatch::book::Event]) -> usize,
) -> (TempDir, ironmatch::book::BookConfig) {
    let dir = temp_dir("flow");
    let book = flow_config(StpMode::CancelResting);
    let header = first_header(&book);
    let mut writer =
        JournalWriter::open(&dir, header, None, 1, FsyncMode::Never, segment_bytes).unwrap();
    let mut matcher = Matcher::new(&book);
    let mut decoder = FlowDecoder::new(&book);
    let bytes: Vec<u8> = (0..commands * 16).map(|i| (i * 7919 % 251) as u8).collect();
    let mut src = ByteSource::new(&bytes);
    let mut events = Vec::new();
    for i in 0..commands {
        let Some(cmd) = decoder.next(&mut src) else {
            break;
        };
        events.clear();
        matcher.apply(&cmd, &mut events);
        writer.stage(&Entry::Command(cmd));
        for e in &events[..keep(&events)] {
            writer.stage(&Entry::Event(*e));
        }
        if (i + 1) % per_batch == 0 {
            writer.commit().unwrap();
        }
    }
    writer.commit().unwrap();
    (dir, book)
}

fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let paths = journal::segment_paths(dir).unwrap();
    assert_eq!(paths.len(), 1);
    paths[0].clone()
}

#[test]
fn a_torn_last_record_is_truncated_at_every_byte_offset() {
    let (dir, book) = write_flow(40);
    let path = only_segment(&dir);
    let full = std::fs::read(&path).unwrap();
    let scan = journal::scan_journal(&dir, None, false, None, |_, _| Ok(())).unwrap();
    // Find where the last record starts by walking the records.
    let mut at = 64;
    let mut last_start = at;
    while at < full.len() {
        let (_, _, len) = journal::read_record(&full[at..]).unwrap();
        last_start = at;
        at += len;
    }
    // `replay` reads a torn tail without repairing it, and says where it is.
    std::fs::write(&path, &full[..full.len() - 1]).unwrap();
    let mut text = Vec::new();
    let options = ironmatch::replay::ReplayOptions::default();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut text).unwrap();
    assert_eq!(
        summary.last_seq,
        scan.next_seq - 2,
        "the torn record is not replayed"
    );
    let torn = summary.torn.expect("the torn tail is in the summary");
    assert_eq!(
        (torn.offset, torn.bytes),
        (last_start as u64, (full.len() - 1 - last_start) as u64)
    );
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("torn tail:") && text.contains("a write cut short, never acknowledged"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap().len(),
        full.len() - 1,
        "not repaired"
    );
    // A tail longer than one write can be (65,536 records of 256 bytes; zeros: a power loss
    // kept the file's length, not its data) is not called never acknowledged.
    let zeros = 17 << 20;
    std::fs::write(&path, [&full[..], &vec![0u8; zeros]].concat()).unwrap();
    let mut text = Vec::new();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut text).unwrap();
    assert_eq!(summary.torn.map(|t| t.bytes), Some(zeros as u64));
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("longer than one write can be") && !text.contains("never acknowledged"),
        "{text}"
    );
    let whole = {
        std::fs::write(&path, &full).unwrap();
        ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new()).unwrap()
    };
    assert_eq!(whole.torn, None);
    let mut recovered = 0;
    for cut in last_start..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let recovery =
            journal::recover(&dir, &book, |_| {}).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(
            recovery.scan.next_seq,
            scan.next_seq - 1,
            "cut at {cut}: the torn record is dropped"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            last_start as u64,
            "truncated at the record's start"
        );
        recovered += 1;
    }
    eprintln!("torn tail: recovered from {recovered} cut points");
    std::fs::remove_dir_all(&dir).ok();
}

/// A whole record this build cannot decode (its checksum holds: say, written by a build
/// with another record layout) at the end of the journal: refused and named, never
/// truncated as a torn write.
#[test]
fn a_whole_record_this_build_cannot_read_is_refused_not_truncated() {
    let (dir, book) = write_flow(40);
    let path = only_segment(&dir);
    let full = std::fs::read(&path).unwrap();
    let scan = journal::scan_journal(&dir, None, false, None, |_, _| Ok(())).unwrap();
    // The first record's payload: a command that decodes.
    let (_, _, first_len) = journal::read_record(&full[64..]).unwrap();
    let command = full[64 + 16..64 + first_len - 4].to_vec();
    for (kind, flags, payload) in [
        (9u8, 0u8, vec![0u8; 8]),
        (1, 0, vec![0xFF; 8]),
        (1, 0, vec![0; 400]),
        (1, 2, command),
    ] {
        // An unknown type, a command payload that does not decode, a record longer than
        // this build writes, a command whose reserved byte (13) is not 0.
        let mut record = Vec::new();
        let len = 16 + payload.len() + 4;
        record.extend_from_slice(&(len as u32).to_le_bytes());
        record.extend_from_slice(&scan.next_seq.to_le_bytes());
        record.extend_from_slice(&[kind, flags, 0, 0]);
        record.extend_from_slice(&payload);
        record.extend_from_slice(&crc32c::crc32c(&record).to_le_bytes());
        let mut bytes = full.clone();
        bytes.extend_from_slice(&record);
        std::fs::write(&path, &bytes).unwrap();
        match journal::recover(&dir, &book, |_| {}) {
            Err(e @ JournalError::Undecodable { .. }) => {
                assert!(e.to_string().contains("journal format version"), "{e}");
            }
            other => panic!(
                "type {kind}: not refused: {:?}",
                other.map(|r| r.scan.next_seq)
            ),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "type {kind}: nothing cut"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A follower limited to the writer's count (the feed publisher) visits nothing past it:
/// records in the file but not yet made durable wait for the next poll.
#[test]
fn a_limited_follower_reads_no_further_than_the_writer_has_written() {
    let (dir, book) = write_flow(40);
    let scan = journal::scan_journal(&dir, None, false, None, |_, _| Ok(())).unwrap();
    let total = scan.next_seq - 1;
    assert!(total > 40, "{total} records");
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut follower = journal::Follower::new(&dir, journal::fingerprint(&book), 1)
        .limited_to(std::sync::Arc::clone(&written));
    let mut seen = Vec::new();
    let mut poll = |follower: &mut journal::Follower| {
        follower
            .poll(|place, _| {
                seen.push(place.seq);
                Ok(())
            })
            .unwrap()
    };
    assert_eq!(poll(&mut follower), 0, "nothing written yet");
    for limit in [1, 7, total / 2, total] {
        written.store(limit, std::sync::atomic::Ordering::Release);
        while poll(&mut follower) > 0 {}
        assert_eq!(follower.next_seq(), limit + 1);
    }
    assert_eq!(seen, (1..=total).collect::<Vec<u64>>());
    std::fs::remove_dir_all(&dir).ok();
}

/// `replay --verify-determinism` notices an event missing from the journal, not only a
/// different one: a command whose last event is gone, followed by the next command.
#[test]
fn replay_verification_notices_a_missing_event() {
    let verify = |dir: &std::path::Path, book: &ironmatch::book::BookConfig| {
        ironmatch::replay::replay(
            dir,
            book,
            &ironmatch::replay::ReplayOptions {
                verify_determinism: true,
                ..Default::default()
            },
            &mut Vec::new(),
        )
    };
    let (whole, book) = write_flow(40);
    verify(&whole, &book).expect("the whole journal verifies");
    // The first command of two events or more loses its last one.
    let mut dropped = false;
    let (short, _) = write_flow_keeping(40, 1 << 30, |events| {
        if !dropped && events.len() >= 2 {
            dropped = true;
            events.len() - 1
        } else {
            events.len()
        }
    });
    assert!(dropped, "the flow has a command of two events or more");
    match verify(&short, &book) {
        Err(e @ JournalError::Diverged { .. }) => {
            assert!(e.to_string().contains("journaled events"), "{e}");
        }
        other => panic!(
            "a missing event not noticed: {:?}",
            other.map(|s| s.records)
        ),
    }
}

/// One engine per journal: a second `serve` on a directory in use refuses to start before
/// its recovery touches anything (it would cut the live writer's batch as a torn tail);
/// once the first has stopped, the directory is free again.
#[test]
fn a_journal_in_use_is_refused_to_a_second_engine() {
    let dir = temp_dir("locked");
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    c.limit(1, b'S', 100, "AAPL", PX).unwrap();
    next(&mut c);
    let segment = only_segment(&dir);
    let before = std::fs::read(&segment).unwrap();
    let second = Server::start(&config)
        .err()
        .expect("a second engine on the journal");
    assert!(second.to_string().contains("in use"), "{second}");
    // The refusal waits for the lock ([`journal::LOCK_PATIENCE`]), while the first engine
    // goes on (its silent client is disconnected, journaled): the second cut nothing.
    let after = std::fs::read(&segment).unwrap();
    assert!(after.starts_with(&before), "nothing touched");
    drop(c);
    server.stop().unwrap();
    let again = Server::start(&config).unwrap();
    again.stop().unwrap();
}

/// A journal whose `fdatasync` failed in this boot of the machine (its marker names this
/// boot) is not started on: recovery would read back records the disk may not hold.
#[test]
fn a_journal_whose_sync_failed_in_this_boot_is_not_started() {
    let dir = temp_dir("sync-failed");
    let config = test_config_in(&dir, "");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let marker = dir.join(journal::SYNC_FAILED_NAME);
    std::fs::write(&marker, format!("{}\nInput/output error\n", boot.trim())).unwrap();
    let e = Server::start(&config).err().expect("refused");
    assert!(e.to_string().contains("failed in this boot"), "{e}");
    std::fs::remove_file(&marker).unwrap();
    Server::start(&config).unwrap().stop().unwrap();
}

/// A second engine on another journal but the first one's order entry port fails to
/// start, naming the setting and the address.
#[test]
fn a_port_in_use_is_named_by_its_setting() {
    let first_dir = temp_dir("port-first");
    let server = Server::start(&test_config_in(&first_dir, "")).unwrap();
    let taken = server.local_addr();
    let dir = temp_dir("port-second");
    let mut config = test_config_in(&dir, "");
    config.gateway.listen = taken.to_string();
    let e = Server::start(&config).err().expect("the port is taken");
    assert!(
        e.to_string().contains(&format!("gateway.listen {taken}")),
        "{e}"
    );
    server.stop().unwrap();
}

/// A server dropped by a panicking thread only asks its stages to stop and returns: they
/// may still be writing, so its journal stays locked (it used to be released with the
/// struct, and a second engine could open the journal beside them).
#[test]
fn a_server_dropped_while_panicking_keeps_its_journal_locked() {
    let dir = temp_dir("locked-panic");
    let config = test_config_in(&dir, "");
    let first = config.clone();
    let dropped = std::thread::spawn(move || {
        let _server = Server::start(&first).unwrap();
        panic!("a test thread fails with its engine running");
    })
    .join();
    assert!(dropped.is_err());
    let second = Server::start(&config)
        .err()
        .expect("the journal is still locked");
    assert!(second.to_string().contains("in use"), "{second}");
}

/// A last segment whose length reached the disk but whose bytes did not (a power loss while
/// it was created: all zeros) holds nothing and is removed like a header cut short.
#[test]
fn a_zero_filled_last_segment_is_removed() {
    let (dir, book) = write_flow(40);
    let first = only_segment(&dir);
    let scan = journal::scan_journal(&dir, None, false, None, |_, _| Ok(())).unwrap();
    let next = dir.join(format!("{:020}.imj", scan.next_seq));
    std::fs::write(&next, [0u8; 64]).unwrap();
    let recovery = journal::recover(&dir, &book, |_| {}).unwrap();
    assert_eq!(recovery.scan.next_seq, scan.next_seq);
    assert!(!next.exists(), "the empty segment is gone");
    assert!(first.exists());
    // Zeros beyond a page are records that never reached the disk, not a creation cut
    // short: refused, and the file left as it is.
    std::fs::write(&next, vec![0u8; 64 << 10]).unwrap();
    match journal::recover(&dir, &book, |_| {}) {
        Err(e @ JournalError::Zeroed { .. }) => {
            assert!(e.to_string().contains("65536 bytes of zeros"), "{e}")
        }
        other => panic!("not refused: {:?}", other.map(|r| r.scan.next_seq)),
    }
    assert_eq!(std::fs::metadata(&next).unwrap().len(), 64 << 10);
    std::fs::remove_dir_all(&dir).ok();
}

/// `replay` of a directory without a journal says so (a mistyped path), instead of
/// reporting an empty day.
#[test]
fn replay_of_a_directory_without_a_journal_is_an_error() {
    let dir = temp_dir("nojournal");
    let book = flow_config(StpMode::CancelResting);
    let options = ironmatch::replay::ReplayOptions::default();
    for path in [dir.join("missing"), dir.to_path_buf()] {
        let e = ironmatch::replay::replay(&path, &book, &options, &mut Vec::new())
            .map(|summary| summary.records)
            .expect_err("no journal");
        assert!(e.to_string().contains("no journal segment"), "{e}");
    }
    // A journal whose only segment a crash cut at its creation (zeros within a page, as
    // recovery removes): replay reads it as what it is, no record, read only.
    let cut = dir.join(format!("{:020}.imj", 1));
    std::fs::write(&cut, [0u8; 100]).unwrap();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new()).unwrap();
    assert_eq!(summary.records, 0);
    assert!(cut.exists(), "replay changes nothing");
    assert_eq!(journal::first_header(&dir).unwrap(), None);
    // Zeros beyond a page are records that never reached the disk: replay says so, as
    // recovery does, rather than calling the zeros a bad header.
    std::fs::write(&cut, vec![0u8; 64 << 10]).unwrap();
    let e = ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new())
        .map(|summary| summary.records)
        .expect_err("records lost");
    assert!(e.to_string().contains("never reached the disk"), "{e}");
    assert!(matches!(
        journal::first_header(&dir),
        Err(JournalError::Zeroed { len: 65536, .. })
    ));
    assert_eq!(std::fs::metadata(&cut).unwrap().len(), 64 << 10);
}

/// Version 2 of the format added a command and nothing else, version 3 records' indexes in
/// their batches, version 4 reject reasons, version 5 a mass cancel's side:
/// a version 1, 2, 3 or 4 journal recovers as it did;
/// a version this build does not know is refused by its header, saying which it reads.
#[test]
fn journals_of_format_version_1_are_still_read() {
    let (dir, book) = write_flow(400);
    let path = only_segment(&dir);
    let full = std::fs::read(&path).unwrap();
    assert_eq!(
        u16::from_le_bytes([full[8], full[9]]),
        5,
        "written as version 5"
    );
    let full_replay = journal::recover(&dir, &book, |_| {}).unwrap().scan.next_seq;
    let with_version = |version: u16| {
        let mut bytes = full.clone();
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
    };
    for version in [1, 2, 3, 4] {
        with_version(version);
        assert_eq!(
            journal::recover(&dir, &book, |_| {}).unwrap().scan.next_seq,
            full_replay
        );
    }
    with_version(6);
    // A snapshot beside it (its content is not read before the refusal) stays: a start
    // that is refused changes nothing on disk.
    let snapshot = dir.join(format!("{:020}.ims", 100));
    std::fs::write(&snapshot, b"a snapshot of the newer build").unwrap();
    match journal::recover(&dir, &book, |_| {}) {
        Err(e @ JournalError::Header { .. }) => {
            assert!(
                e.to_string()
                    .contains("format version 6 (this build reads 1 to 5)"),
                "{e}"
            )
        }
        other => panic!("not refused: {:?}", other.map(|r| r.scan.next_seq)),
    }
    assert!(snapshot.exists(), "the refused start removed a snapshot");
    std::fs::remove_dir_all(&dir).ok();
}

/// A journal of format 4 holding mass cancels by side, as such a build wrote them (the
/// last event `MassCanceled`, no side), recovers, verifies (`replay
/// --verify-determinism`) and feeds a follower's replayer: each reads the segment's version
/// from its header. The same records under a version 5 header diverge.
#[test]
fn mass_cancels_by_side_of_format_4_recover_and_verify() {
    use ironmatch::book::EventBody;
    let dir = temp_dir("format4");
    let book = flow_config(StpMode::CancelResting);
    let mut writer = JournalWriter::open(
        &dir,
        first_header(&book),
        None,
        1,
        FsyncMode::Never,
        1 << 30,
    )
    .unwrap();
    let mut matcher = Matcher::new(&book);
    let mut decoder = FlowDecoder::new(&book);
    // Xorshift bytes: the flow's short repeating pattern of `write_flow` has one such mass
    // cancel.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..3_000 * 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut src = ByteSource::new(&bytes);
    let mut rewritten = 0;
    while let Some(cmd) = decoder.next(&mut src) {
        let mut events = Vec::new();
        matcher.apply(&cmd, &mut events);
        writer.stage(&Entry::Command(cmd));
        for mut e in events {
            if let EventBody::MassCanceledSide {
                owner,
                user_ref,
                firm,
                symbol,
                count,
                ..
            } = e.body
            {
                e.body = EventBody::MassCanceled {
                    owner,
                    user_ref,
                    firm,
                    symbol,
                    count,
                };
                rewritten += 1;
            }
            writer.stage(&Entry::Event(e));
        }
        writer.commit().unwrap();
    }
    drop(writer);
    assert!(
        rewritten >= 3,
        "{rewritten} mass cancels by side in the flow"
    );
    let path = only_segment(&dir);
    let with_version = |version: u16| {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
    };
    let verify = || {
        ironmatch::replay::replay(
            &dir,
            &book,
            &ironmatch::replay::ReplayOptions {
                verify_determinism: true,
                ..Default::default()
            },
            &mut Vec::new(),
        )
    };
    let follow = || {
        let mut follower = journal::Follower::new(&dir, journal::fingerprint(&book), 1);
        let mut replayer = journal::Replayer::new(Matcher::new(&book), vec![0; book.owners.len()]);
        let mut read = 0;
        loop {
            let n = follower.poll(|place, entry| replayer.feed(place, entry, &mut |_| {}))?;
            if n == 0 {
                return Ok::<_, JournalError>(read);
            }
            read += n;
        }
    };
    with_version(4);
    let records = journal::recover(&dir, &book, |_| {}).unwrap().scan.next_seq - 1;
    assert_eq!(verify().unwrap().records, records);
    assert_eq!(follow().unwrap() as u64, records);
    with_version(5);
    for (what, result) in [
        (
            "recovery",
            journal::recover(&dir, &book, |_| {}).map(|_| ()),
        ),
        ("replay", verify().map(|_| ())),
        ("follower", follow().map(|_| ())),
    ] {
        match result {
            Err(JournalError::Diverged { detail, .. }) => {
                assert!(detail.contains("MassCanceled"), "{what}: {detail}")
            }
            other => panic!("{what}: a version 5 segment without the side not refused: {other:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bit_flip_before_valid_records_refuses_to_start() {
    let (dir, book) = write_flow(40);
    let path = only_segment(&dir);
    let full = std::fs::read(&path).unwrap();
    let (_, _, first_len) = journal::read_record(&full[64..]).unwrap();
    let mut checked = 0;
    for bit in (64 * 8)..((64 + first_len) * 8) {
        let mut damaged = full.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &damaged).unwrap();
        match journal::recover(&dir, &book, |_| {}) {
            Err(JournalError::Corrupt { offset, .. }) => assert_eq!(offset, 64),
            Err(JournalError::Sequence { .. }) => {}
            other => panic!(
                "flip of bit {bit} not refused: {:?}",
                other.map(|r| r.scan.next_seq)
            ),
        }
        checked += 1;
    }
    eprintln!("bit flips: {checked} flips in the first record, all refused");
    std::fs::write(&path, &full).unwrap();
    assert!(journal::recover(&dir, &book, |_| {}).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

/// A power loss in the middle of the last batch's write (with `fsync = "always"`, before
/// its `fdatasync` returned, so none of it was acknowledged) can leave that batch's later
/// pages on disk and an earlier one not: a sector of zeros in a damaged record, with whole
/// records of the same batch after it. Each record carries its index in its batch (format
/// version 3), so recovery cuts that as a torn write. Refused, the file left as it is: the
/// same zeros where a record of the next batch follows (the damage is in a batch written
/// before the last), a flipped bit in the last batch (damage, not a lost write), and the
/// zeros in a segment of version 2 (no indexes).
#[test]
fn a_gap_in_the_last_batch_is_cut_and_one_before_it_is_refused() {
    const SECTOR: usize = 512;
    let (dir, book) = write_flow_batched(60, 1 << 30, 20, <[ironmatch::book::Event]>::len);
    let path = only_segment(&dir);
    let full = std::fs::read(&path).unwrap();
    // Each record's offset and sequence number, and where each batch starts.
    let mut records = Vec::new();
    let mut starts = Vec::new();
    let mut at = 64;
    while at < full.len() {
        let (seq, _, len) = journal::read_record(&full[at..]).unwrap();
        if journal::batch_index(&full[at..]) == 0 {
            starts.push(records.len());
        }
        assert_eq!(
            usize::from(journal::batch_index(&full[at..])),
            records.len() - starts.last().unwrap(),
            "indexes count on within a batch"
        );
        records.push((at, seq));
        at += len;
    }
    assert_eq!(starts.len(), 3, "three batches of 20 commands");
    // The record holding byte `b`: the first damaged by damage there.
    let holding = |b: usize| *records.iter().rev().find(|r| r.0 <= b).unwrap();
    // `full` with `damage` done, in a segment of `version`.
    let damaged = |damage: &dyn Fn(&mut Vec<u8>), version: u16| -> Vec<u8> {
        let mut bytes = full.clone();
        damage(&mut bytes);
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        bytes
    };
    // A sector of zeros inside the last batch, with records of it after; one that ends
    // the batch before it, only the next batch's records after.
    let last_batch = records[starts[2] + 2].0.next_multiple_of(SECTOR);
    assert!(last_batch + SECTOR < records.last().unwrap().0);
    let batch_before = (records[starts[2]].0 - 1) / SECTOR * SECTOR;
    assert!(batch_before > records[starts[1]].0 && batch_before + SECTOR > records[starts[2]].0);
    let zeros = |b: usize| move |bytes: &mut Vec<u8>| bytes[b..b + SECTOR].fill(0);
    let flip = |b: usize| move |bytes: &mut Vec<u8>| bytes[b + 100] ^= 0x10;
    for (what, damage, version, first) in [
        (
            "zeros ending the batch before",
            &zeros(batch_before) as &dyn Fn(&mut Vec<u8>),
            3,
            batch_before,
        ),
        (
            "zeros in a version 2 segment",
            &zeros(last_batch),
            2,
            last_batch,
        ),
        (
            "a flipped bit in the last batch",
            &flip(last_batch),
            3,
            last_batch + 100,
        ),
    ] {
        let bytes = damaged(damage, version);
        std::fs::write(&path, &bytes).unwrap();
        match journal::recover(&dir, &book, |_| {}) {
            Err(JournalError::Corrupt { offset, .. }) => {
                assert_eq!(offset, holding(first).0 as u64, "{what}")
            }
            other => panic!("{what}: not refused: {:?}", other.map(|r| r.scan.next_seq)),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: nothing cut");
    }
    let bytes = damaged(&zeros(last_batch), 3);
    let (offset, seq) = holding(last_batch);
    std::fs::write(&path, &bytes).unwrap();
    let recovery = journal::recover(&dir, &book, |_| {}).unwrap();
    assert_eq!(
        recovery.scan.torn,
        Some((path.clone(), offset as u64, (full.len() - offset) as u64))
    );
    assert_eq!(recovery.scan.next_seq, seq, "the batch cut from the gap on");
    assert_eq!(std::fs::read(&path).unwrap(), &bytes[..offset]);
    let again = journal::recover(&dir, &book, |_| {}).unwrap();
    assert_eq!((again.scan.torn, again.scan.next_seq), (None, seq));
    std::fs::remove_dir_all(&dir).ok();
}

/// The order entry sessions keep the name the journal's streams were announced under: a
/// restart on the same journal with another `gateway.session` announces the journal's
/// (Login Accepted of a login naming none, and a login naming it is taken; one naming the
/// configuration's is refused as an unknown session), and a new journal takes the
/// configuration's and keeps it, even before its first record (logins are not journaled:
/// the name was announced).
#[test]
fn a_restart_with_another_session_name_keeps_the_journals() {
    use ironmatch::client::{Client, Received};
    use ironmatch::gateway::SessionSettings;
    let dir = temp_dir("session-name");
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    c.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut c).0, outbound::ACCEPTED);
    server.stop().unwrap();
    drop(c);
    let kept = SessionSettings::read(&dir)
        .unwrap()
        .expect("the journal keeps its name");
    assert_eq!(kept.session, config.gateway.session);
    // A login of `user` naming `session`: the answer.
    let ask = |server: &Server, user: &str, password: &str, session: &str| -> Received {
        let mut c = Client::connect(server.local_addr()).unwrap();
        let mut out = Vec::new();
        ironmatch::wire::soupbin::write_login_request(&mut out, user, password, session, 1);
        c.send_raw(&out).unwrap();
        c.recv(std::time::Duration::from_secs(5))
            .unwrap()
            .expect("a login answer")
    };
    let mut other = config.clone();
    other.gateway.session = "OTHER".into();
    let server = Server::start(&other).unwrap();
    for (user, password, named) in [("MM1", "pw1", ""), ("MM2", "pw2", kept.session.as_str())] {
        match ask(&server, user, password, named) {
            Received::LoginAccepted { session, .. } => assert_eq!(session, kept.session),
            answer => panic!("{user} naming {named:?}: {answer:?}"),
        }
    }
    assert_eq!(
        ask(&server, "MM3", "pw3", "OTHER"),
        Received::LoginRejected(b'S'),
        "the configuration's name is not the journal's sessions'"
    );
    server.stop().unwrap();
    assert_eq!(SessionSettings::read(&dir).unwrap(), Some(kept));
    // A new journal: the configuration's name.
    let fresh = temp_dir("session-name-new");
    let mut other = test_config_in(&fresh, "");
    other.gateway.session = "OTHER".into();
    let server = Server::start(&other).unwrap();
    match ask(&server, "MM1", "pw1", "") {
        Received::LoginAccepted { session, .. } => assert_eq!(session, "OTHER"),
        answer => panic!("a new journal: {answer:?}"),
    }
    server.stop().unwrap();
    other.gateway.session = "THIRD".into();
    let server = Server::start(&other).unwrap();
    assert_eq!(server.session(), "OTHER");
    match ask(&server, "MM1", "pw1", "") {
        Received::LoginAccepted { session, .. } => assert_eq!(session, "OTHER"),
        answer => panic!("a journal with no record, its name announced: {answer:?}"),
    }
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&fresh).ok();
}

/// An owner is known by its place in `[[users]]`: a start that renamed or moved a user
/// within the list (its firm and settings the same, so the book configuration's
/// fingerprint could not tell) would give the journal's member's stream and live orders to
/// whoever logged in under the new name. Refused, naming the place; the list put back
/// starts, and the member's stream is its own.
#[test]
fn a_restart_with_users_renamed_or_moved_is_refused() {
    let dir = temp_dir("user-names");
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    c.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut c).0, outbound::ACCEPTED);
    server.stop().unwrap();
    drop(c);
    let mut renamed = config.clone();
    renamed.users[2].username = "XX3".into();
    let e = Server::start(&renamed).err().expect("refused");
    assert!(
        e.to_string()
            .contains("users[2] is \"XX3\" but this journal's owner 2 is \"MM3\""),
        "{e}"
    );
    // A changed password is not a changed owner.
    let mut password = config.clone();
    password.users[2].password = "pw9".into();
    let server = Server::start(&password).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw9", 1);
    assert_eq!(next_type(&mut c).0, outbound::ACCEPTED, "MM3's own stream");
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn recovery_refuses_another_configuration() {
    let (dir, _) = write_flow(10);
    let other = flow_config(StpMode::CancelBoth);
    assert!(matches!(
        journal::recover(&dir, &other, |_| {}),
        Err(JournalError::Fingerprint { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// A segment of another engine's journal (a restore mixing two directories) is refused by
/// recovery, by `replay` and by a follower, naming the file, and nothing on disk changes.
#[test]
fn a_segment_of_another_journal_is_refused() {
    let (dir, book) = write_flow_in_segments(600, 16 * 1024);
    let paths = journal::segment_paths(&dir).unwrap();
    assert!(paths.len() >= 3, "{} segments", paths.len());
    // The second segment's header as another engine would have written it: same
    // configuration and sequence numbers, another instance.
    let foreign = &paths[1];
    let mut bytes = std::fs::read(foreign).unwrap();
    let mut header = journal::read_header(&bytes).unwrap();
    header.instance = 0x5eed;
    bytes[..journal::HEADER_LEN].copy_from_slice(&journal::write_header(&header));
    std::fs::write(foreign, &bytes).unwrap();
    let before: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let refused = |result: Result<(), JournalError>, what: &str| match result {
        Err(e @ JournalError::Instance { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&foreign.display().to_string())
                    && text.contains("0000000000005eed")
                    && text.contains("another journal"),
                "{what}: {text}"
            );
        }
        other => panic!("{what}: {other:?}"),
    };
    refused(
        journal::recover(&dir, &book, |_| {}).map(|_| ()),
        "recovery",
    );
    refused(
        ironmatch::replay::replay(
            &dir,
            &book,
            &ironmatch::replay::ReplayOptions::default(),
            &mut Vec::new(),
        )
        .map(|_| ()),
        "replay",
    );
    let mut follower = journal::Follower::new(&dir, journal::fingerprint(&book), 1);
    refused(
        (|| loop {
            if follower.poll(|_, _| Ok(()))? == 0 {
                return Ok(());
            }
        })(),
        "follower",
    );
    let after: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(after == before, "nothing changed on disk");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn recovery_replays_to_the_same_books() {
    let (dir, book) = write_flow(3_000);
    let recovery = journal::recover(&dir, &book, |_| {}).unwrap();
    // The same commands through a fresh matcher give the same books.
    let mut matcher = Matcher::new(&book);
    journal::scan_journal(&dir, None, false, None, |_, entry| {
        if let Entry::Command(c) = entry {
            matcher.apply(c, &mut Vec::new());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(recovery.matcher.view(), matcher.view());
    assert!(recovery.pending.is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn replay_verifies_summarises_audits_and_exports() {
    let dir = temp_dir("replay");
    let config_path = dir.join("ironmatch.toml");
    std::fs::write(&config_path, test_config_text(&dir, "")).unwrap();
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let addr = server.local_addr();
    let mut maker = login(addr, "MM3", "pw3", 1);
    let mut taker = login(addr, "MM2", "pw2", 1);
    maker.limit(1, b'S', 100, "AAPL", PX).unwrap();
    maker.limit(2, b'S', 100, "AAPL", PX + 100).unwrap();
    next(&mut maker);
    next(&mut maker);
    taker.limit(1, b'B', 150, "AAPL", PX + 100).unwrap();
    for _ in 0..3 {
        next(&mut taker);
    }
    // Order 2 (50 shares left) is replaced as 3, then a replace of 3 as 4 off the tick
    // fails: 3 is canceled and 4 rejected.
    for _ in 0..2 {
        next(&mut maker);
    }
    maker.replace(2, 3, 100, PX + 200).unwrap();
    assert_eq!(next_type(&mut maker).0, outbound::REPLACED);
    maker.replace(3, 4, 100, PX + 201).unwrap();
    let mut answers = [next_type(&mut maker).0, next_type(&mut maker).0];
    answers.sort_unstable();
    assert_eq!(answers, {
        let mut a = [outbound::CANCELED, outbound::REJECTED];
        a.sort_unstable();
        a
    });
    // The failed replace left reference 4 free (OUCH): a later order takes it.
    maker.limit(4, b'S', 100, "AAPL", PX + 300).unwrap();
    assert_eq!(next_type(&mut maker).0, outbound::ACCEPTED);
    maker.limit(5, b'S', 100, "AAPL", PX + 100).unwrap();
    assert_eq!(next_type(&mut maker).0, outbound::ACCEPTED);
    // A resend of order 5's entry and a mass cancel naming 5: both rejected as duplicates,
    // neither is order 5's.
    maker.limit(5, b'S', 100, "AAPL", PX + 100).unwrap();
    assert_eq!(next_type(&mut maker).0, outbound::REJECTED);
    maker.mass_cancel(5, "MMC").unwrap();
    assert_eq!(next_type(&mut maker).0, outbound::REJECTED);
    server.stop().unwrap();

    // `ironmatch replay` of this journal with `args`.
    let output = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
            .args([
                "replay",
                "--journal",
                dir.to_str().unwrap(),
                "--config",
                config_path.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let run = |args: &[&str]| {
        let out = output(args);
        assert!(
            out.status.success(),
            "replay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let summary = run(&["--verify-determinism"]);
    assert!(summary.contains("orders accepted 5, trades 2"), "{summary}");
    assert!(
        summary.contains("determinism: every journaled event equals the re-run's"),
        "{summary}"
    );
    assert!(
        summary.contains("150.0100"),
        "the remaining ask is in the book: {summary}"
    );
    let audit = run(&["--order", "MM3:2"]);
    assert!(
        audit.contains("Accepted") && audit.contains("Executed") && audit.contains("MdExecute"),
        "{audit}"
    );
    // Only order 2's events; the taker's order that traded with it appears once, as the
    // command that caused its execution, just before it.
    assert!(
        !audit
            .lines()
            .any(|l| l.contains(" event ") && l.contains("user_ref: UserRef(1)")),
        "only order 2's events: {audit}"
    );
    let cause = audit
        .lines()
        .position(|l| l.contains(" cause ") && l.contains("owner: OwnerId(1)"))
        .unwrap_or_else(|| panic!("the taker's command: {audit}"));
    let executed = audit.lines().position(|l| l.contains("Executed")).unwrap();
    assert_eq!(cause + 1, executed, "{audit}");
    // The order's whole life over its replaces, whichever of its references is asked
    // for: accepted as 2, traded, replaced as 3, its failed replace (the rejection
    // answers with 4) and its cancel.
    for order in ["MM3:2", "MM3:3"] {
        let audit = run(&["--order", order]);
        let has = |what: &str, r: u64| {
            audit.lines().any(|l| {
                l.contains(" event ")
                    && l.contains(what)
                    && l.contains(&format!("user_ref: UserRef({r})"))
            })
        };
        assert!(has("Accepted", 2) && has("Executed", 2), "{order}: {audit}");
        assert!(
            audit.contains("orig_user_ref: UserRef(2)"),
            "{order}: {audit}"
        );
        assert!(has("Rejected", 4), "{order}: {audit}");
        assert!(
            has("Canceled", 3) && audit.contains("ReplaceFailed"),
            "{order}: {audit}"
        );
        assert!(
            !has("Accepted", 4),
            "the later order 4 is not: {order}: {audit}"
        );
    }
    // The later order 4's audit is that order's alone: its entry, acceptance and add to
    // the feed, not the failed replace that named 4 before it, nor that replace's
    // rejection.
    let audit = run(&["--order", "MM3:4"]);
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 3, "{audit}");
    for (line, what) in lines.iter().zip([" command ", " event ", " event "]) {
        assert!(line.contains(what), "{audit}");
    }
    for (line, what) in lines.iter().zip(["New(", "Accepted", "MdAdd"]) {
        assert!(line.contains(what), "{audit}");
    }
    // Order 5's audit is its entry, acceptance and add: not the resend of its entry nor
    // the mass cancel, which reused its reference, nor their rejections. Its times read
    // as times of day.
    let audit = run(&["--order", "MM3:5"]);
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 3, "{audit}");
    for (line, what) in lines.iter().zip(["New(", "Accepted", "MdAdd"]) {
        assert!(line.contains(what), "{audit}");
    }
    let time = lines[0]
        .split("Timestamp(")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_else(|| panic!("a time: {audit}"));
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "99:99:99.999999999", "{audit}");
    let json: serde_json::Value = serde_json::from_str(run(&["--json"]).trim()).unwrap();
    assert_eq!(json["summary"]["trades"], 2);
    let early = run(&["--until", "2"]);
    assert!(early.contains("records 2 "), "{early}");
    // Record 2 is the first command's first event: the books show the whole command (its
    // order rests), and the report says so.
    assert!(
        early.contains("--until 2 falls among the events of the command at 1"),
        "{early}"
    );
    let whole = run(&["--until", "3"]);
    assert!(!whole.contains("falls among"), "{whole}");
    // The ITCH export re-runs nothing: a check asked for with it is refused, not skipped.
    let itch = dir.join("x.itch");
    let refused = output(&["--itch", itch.to_str().unwrap(), "--verify-determinism"]);
    assert_eq!(refused.status.code(), Some(2));
    // So is a depth, even the default's (it was taken and ignored), and the report's
    // options with an audit, which prints no book.
    for args in [
        &["--itch", itch.to_str().unwrap(), "--depth", "5"][..],
        &["--order", "MM3:2", "--book", "AAPL"],
        &["--order", "MM3:2", "--depth", "10"],
    ] {
        let refused = output(args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        assert!(!itch.exists());
    }
    // An audit with the determinism check says the check passed, beside the trail.
    let checked = output(&["--order", "MM3:2", "--verify-determinism"]);
    assert_eq!(checked.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("determinism: every journaled event"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout),
        run(&["--order", "MM3:2"])
    );
    // An order the journal never mentions is said to be absent, not an empty audit.
    let absent = output(&["--order", "MM3:99"]);
    assert_eq!(absent.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&absent.stderr).contains("no command or event of order MM3:99"),
        "{}",
        String::from_utf8_lossy(&absent.stderr)
    );
    // A book not configured (symbols are case-sensitive) is refused, not an empty report.
    assert!(run(&["--book", "AAPL"]).contains("150.0100"));
    let unknown = output(&["--book", "aapl"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("not a configured symbol"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs the snapshot thread over the journal in `dir` from its start until it has caught up
/// (its stop flag is set from the outset, so it ends with a final snapshot).
fn take_snapshots(dir: &std::path::Path, book: &ironmatch::book::BookConfig, interval: u64) {
    take_snapshots_up_to(dir, book, interval, None);
}

/// [`take_snapshots`], reading only records up to `written` if given (the writer's count
/// of durable records).
fn take_snapshots_up_to(
    dir: &std::path::Path,
    book: &ironmatch::book::BookConfig,
    interval: u64,
    written: Option<u64>,
) {
    use ironmatch::journal::snapshot::{SnapshotterStart, run_snapshotter};
    let stop = std::sync::atomic::AtomicBool::new(true);
    run_snapshotter(
        SnapshotterStart {
            dir: dir.to_path_buf(),
            book: book.clone(),
            instance: 1,
            state: Matcher::new(book).state(),
            sessions: vec![0; book.owners.len()],
            next_seq: 1,
            interval,
            last_snapshot: 0,
        },
        &stop,
        written.map(|w| std::sync::Arc::new(std::sync::atomic::AtomicU64::new(w))),
    );
}

/// The snapshot thread reads only records the writer has made durable: a snapshot never
/// covers a record a power loss can take (one that did was deleted at the next start,
/// and the whole day replayed from its first record).
#[test]
fn the_snapshot_thread_reads_only_durable_records() {
    use ironmatch::journal::snapshot::snapshot_paths;
    let (dir, book) = write_flow(6000);
    let end = journal::scan_journal(&dir, None, false, None, |_, _| Ok(()))
        .unwrap()
        .next_seq
        - 1;
    let durable = end / 2;
    take_snapshots_up_to(&dir, &book, 1000, Some(durable));
    let newest = snapshot_paths(&dir).unwrap().last().unwrap().0;
    assert!(
        newest <= durable && newest + 1000 > durable,
        "newest snapshot at {newest}, durable up to {durable} of {end}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// State, sessions and delivered events of a recovery of `dir`.
fn recovered(
    dir: &std::path::Path,
    book: &ironmatch::book::BookConfig,
) -> (
    ironmatch::book::BookState,
    Vec<u64>,
    Vec<ironmatch::book::Event>,
    Option<u64>,
) {
    let mut events = Vec::new();
    let r = journal::recover(dir, book, |e| events.push(*e)).unwrap();
    (r.matcher.state(), r.sessions, events, r.snapshot)
}

/// `ironmatch replay` of `dir`: (snapshots equal to the replayed state, damaged snapshots).
fn replayed_snapshots(dir: &std::path::Path, book: &ironmatch::book::BookConfig) -> (u64, u64) {
    let options = ironmatch::replay::ReplayOptions::default();
    let summary = ironmatch::replay::replay(dir, book, &options, &mut Vec::new()).unwrap();
    (summary.snapshots_verified, summary.snapshots_damaged)
}

/// A copy of the journal in `dir` without its snapshots.
fn without_snapshots(dir: &std::path::Path) -> TempDir {
    let copy = temp_dir("nosnap");
    for path in journal::segment_paths(dir).unwrap() {
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    copy
}

#[test]
fn snapshot_plus_tail_equals_full_replay() {
    use ironmatch::journal::snapshot::{decode_snapshot, snapshot_paths};
    let (dir, book) = write_flow(6000);
    let full = recovered(&without_snapshots(&dir), &book);
    assert_eq!(full.3, None);
    assert!(
        full.0.orders.len() > 10,
        "the flow leaves a book to snapshot"
    );
    let end = journal::scan_journal(&dir, None, false, None, |_, _| Ok(()))
        .unwrap()
        .next_seq
        - 1;

    take_snapshots(&dir, &book, 2000);
    let snaps = snapshot_paths(&dir).unwrap();
    assert_eq!(snaps.len(), 2, "the two newest snapshots are kept");
    assert_eq!(snaps[1].0, end, "a final snapshot at the end");
    assert!(snaps[0].0 < end && snaps[0].0 >= end - 2000 - 64);
    let s = decode_snapshot(&std::fs::read(&snaps[0].1).unwrap()).unwrap();
    assert_eq!(s.seq, snaps[0].0);

    // From the final snapshot: no tail at all.
    let from_end = recovered(&dir, &book);
    assert_eq!(from_end.3, Some(end));
    assert_eq!(
        from_end,
        (full.0.clone(), full.1.clone(), full.2.clone(), Some(end))
    );

    // From the older one: a tail of re-run commands.
    std::fs::remove_file(&snaps[1].1).unwrap();
    let from_mid = recovered(&dir, &book);
    assert_eq!(from_mid.3, Some(snaps[0].0));
    assert_eq!(
        (from_mid.0, from_mid.1, from_mid.2),
        (full.0, full.1, full.2),
        "snapshot + tail gives the state, sessions and events of a full replay"
    );

    // Replay checks every snapshot against the state it rebuilds at that point.
    assert_eq!(replayed_snapshots(&dir, &book), (1, 0));
}

#[test]
fn a_damaged_snapshot_is_skipped_and_recovery_replays_more() {
    use ironmatch::journal::snapshot::snapshot_paths;
    let (dir, book) = write_flow(3000);
    let full = recovered(&without_snapshots(&dir), &book);
    take_snapshots(&dir, &book, 1000);
    let snaps = snapshot_paths(&dir).unwrap();
    assert_eq!(snaps.len(), 2);
    let flip = |path: &std::path::Path, at: usize| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 0x10;
        std::fs::write(path, bytes).unwrap();
    };
    // The newest damaged in its payload: the older one is used.
    flip(&snaps[1].1, 200);
    let r = recovered(&dir, &book);
    assert_eq!(r.3, Some(snaps[0].0));
    assert_eq!((&r.0, &r.1, &r.2), (&full.0, &full.1, &full.2));
    // Both damaged (the older in its header): a full replay.
    flip(&snaps[0].1, 30);
    let r = recovered(&dir, &book);
    assert_eq!(r.3, None);
    assert_eq!((&r.0, &r.1, &r.2), (&full.0, &full.1, &full.2));
    // Replay reports them instead of trusting them.
    assert_eq!(replayed_snapshots(&dir, &book), (0, 2));
}

/// A snapshot of another journal (engine instance) or another book configuration, left in
/// the directory: recovery skips it, and `replay` reports it as such instead of failing on
/// the state it does not match.
#[test]
fn replay_skips_snapshots_of_another_journal_as_recovery_does() {
    use ironmatch::journal::snapshot::{decode_snapshot, encode_snapshot, snapshot_paths};
    let (dir, book) = write_flow(3000);
    take_snapshots(&dir, &book, 1000);
    let snaps = snapshot_paths(&dir).unwrap();
    assert_eq!(replayed_snapshots(&dir, &book), (2, 0));
    let relabel = |path: &std::path::Path,
                   edit: fn(&mut ironmatch::journal::snapshot::Snapshot)| {
        let mut s = decode_snapshot(&std::fs::read(path).unwrap()).unwrap();
        edit(&mut s);
        s.body.sessions[0] += 1; // and its state no longer that of this journal
        std::fs::write(path, encode_snapshot(&s)).unwrap();
    };
    relabel(&snaps[0].1, |s| s.instance ^= 1);
    relabel(&snaps[1].1, |s| s.fingerprint ^= 1);
    assert_eq!(recovered(&dir, &book).3, None, "recovery uses neither");
    let options = ironmatch::replay::ReplayOptions::default();
    let mut text = Vec::new();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut text).unwrap();
    assert_eq!(
        (
            summary.snapshots_verified,
            summary.snapshots_damaged,
            summary.snapshots_foreign
        ),
        (0, 0, 2)
    );
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("2 of another journal or configuration"),
        "{text}"
    );
    // Past this journal's end, another journal's snapshot proves no loss of records here.
    std::fs::rename(
        &snaps[0].1,
        dir.join(format!("{:020}.ims", snaps[1].0 + 1_000)),
    )
    .unwrap();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new()).unwrap();
    assert_eq!(summary.snapshots_foreign, 1);
}

/// A snapshot that loads (checksums hold) but disagrees with the journal: skipped like a
/// damaged one, and recovery replays the whole journal, delivering every event once.
#[test]
fn a_snapshot_that_disagrees_with_the_journal_is_skipped() {
    use ironmatch::journal::snapshot::{decode_snapshot, encode_snapshot, snapshot_paths};
    let (dir, book) = write_flow(3000);
    let full = recovered(&without_snapshots(&dir), &book);
    take_snapshots(&dir, &book, 1000);
    let snaps = snapshot_paths(&dir).unwrap();
    let end = journal::scan_journal(&dir, None, false, None, |_, _| Ok(()))
        .unwrap()
        .next_seq
        - 1;
    let skew = |path: &std::path::Path, owner: usize| {
        let mut s = decode_snapshot(&std::fs::read(path).unwrap()).unwrap();
        s.body.sessions[owner] += 1;
        std::fs::write(path, encode_snapshot(&s)).unwrap();
    };
    // The final snapshot, at the journal's end: the disagreement shows after every event
    // was delivered once.
    let (newest_seq, newest) = &snaps[snaps.len() - 1];
    assert_eq!(*newest_seq, end);
    skew(newest, 0);
    let r = recovered(&dir, &book);
    assert_eq!(r.3, None, "no snapshot used");
    assert_eq!((&r.0, &r.1, &r.2), (&full.0, &full.1, &full.2));
    // One in the middle: the events after it come from the full replay, once each.
    std::fs::remove_file(newest).unwrap();
    let (middle_seq, middle) = &snaps[0];
    assert!(*middle_seq < end - 100, "{middle_seq} of {end}");
    skew(middle, 1);
    let r = recovered(&dir, &book);
    assert_eq!(r.3, None, "no snapshot used");
    assert_eq!((&r.0, &r.1, &r.2), (&full.0, &full.1, &full.2));
    // `replay` reports it as recovery treats it: counted as differing, the report whole
    // (it failed, with no report, on a journal `serve` starts from).
    let options = ironmatch::replay::ReplayOptions::default();
    let mut out = Vec::new();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut out).unwrap();
    assert_eq!(summary.snapshots_differing, 1);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("1 differing from it"), "{text}");
    assert_eq!(summary.last_seq, end);
    // Checking determinism, it is a divergence: the live engine's state, which the re-run
    // does not reach.
    let verify = ironmatch::replay::ReplayOptions {
        verify_determinism: true,
        ..Default::default()
    };
    let e = ironmatch::replay::replay(&dir, &book, &verify, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, JournalError::Diverged { .. }), "{e}");
}

/// A journal holding the mark of a failed `fdatasync` is replayed with a warning (what
/// reads back may not be on disk), and the mark stays for `serve` to judge; so is one an
/// engine holds (it may be writing its last batch), the lock left to it.
#[test]
fn a_journal_whose_sync_failed_or_in_use_is_replayed_with_a_warning() {
    let (dir, book) = write_flow(100);
    assert!(!ironmatch::replay::warn_if_sync_failed(&dir));
    let mark = dir.join(journal::SYNC_FAILED_NAME);
    std::fs::write(&mark, "some-boot\nInput/output error (os error 5)\n").unwrap();
    assert!(ironmatch::replay::warn_if_sync_failed(&dir));
    let options = ironmatch::replay::ReplayOptions::default();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new()).unwrap();
    assert!(summary.sync_failed, "replay warned of it");
    assert!(!summary.in_use);
    assert!(mark.exists(), "replay changes nothing");
    // A journal an engine holds (its lock taken) is replayed with a warning that it may be
    // being written; the lock is the engine's still.
    let lock = journal::lock_dir(&dir).unwrap();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new()).unwrap();
    assert!(summary.in_use, "replay warned of it");
    assert!(
        ironmatch::replay::warn_if_in_use(&dir),
        "the lock is still the engine's"
    );
    drop(lock);
    assert!(!ironmatch::replay::warn_if_in_use(&dir));
    std::fs::remove_dir_all(&dir).ok();
}

/// A damaged snapshot named past the journal's end proves nothing (recovery skips it):
/// `replay` warns and counts it as damaged, where it used to report records lost.
#[test]
fn a_damaged_snapshot_beyond_the_journal_end_is_only_counted() {
    let (dir, book) = write_flow(200);
    let options = ironmatch::replay::ReplayOptions::default();
    let end = ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new())
        .unwrap()
        .last_seq;
    let damaged = dir.join(format!("{:020}.ims", end + 1000));
    std::fs::write(&damaged, b"not a snapshot").unwrap();
    let summary = ironmatch::replay::replay(&dir, &book, &options, &mut Vec::new()).unwrap();
    assert_eq!(summary.last_seq, end);
    assert_eq!(summary.snapshots_damaged, 1);
    assert!(damaged.exists(), "replay changes nothing");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_snapshot_beyond_the_journal_end_is_removed() {
    use ironmatch::journal::snapshot::snapshot_paths;
    let (dir, book) = write_flow(2000);
    take_snapshots(&dir, &book, 100_000);
    let snaps = snapshot_paths(&dir).unwrap();
    assert_eq!(snaps.len(), 1, "only the final snapshot");
    // Lose the journal's last records (a power loss with fsync = "never"), at a record
    // boundary, so that nothing is torn: the snapshot now covers records that are gone.
    let path = only_segment(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let mut at = 64;
    let mut starts = Vec::new();
    while at < bytes.len() {
        starts.push(at);
        at += journal::read_record(&bytes[at..]).unwrap().2;
    }
    std::fs::write(&path, &bytes[..starts[starts.len() - 50]]).unwrap();
    // `replay` (read-only) reports the loss: the snapshot proves the records existed.
    let replayed = ironmatch::replay::replay(
        &dir,
        &book,
        &ironmatch::replay::ReplayOptions::default(),
        &mut Vec::new(),
    );
    assert!(
        matches!(replayed, Err(JournalError::Ahead { .. })),
        "{replayed:?}"
    );
    let full = recovered(&without_snapshots(&dir), &book);
    let r = recovered(&dir, &book);
    assert_eq!(r.3, None);
    assert!(r.0 == full.0, "books differ");
    assert_eq!(r.1, full.1, "session counts differ");
    for (i, (a, b)) in r.2.iter().zip(&full.2).enumerate() {
        assert_eq!(a, b, "event {i}");
    }
    assert_eq!(
        r.2.len(),
        full.2.len(),
        "events differ: {:?}",
        &r.2[full.2.len()..]
    );
    assert!(r.2 == full.2, "events differ");
    assert!(
        snapshot_paths(&dir).unwrap().is_empty(),
        "the snapshot beyond the end is removed, since its sequence numbers will be reused"
    );
}

/// With an older snapshot inside the journal, recovery starts from it once the one beyond
/// the end is removed, instead of re-running the whole day; same state and events.
#[test]
fn a_snapshot_beyond_the_journal_end_falls_back_to_an_older_one() {
    use ironmatch::journal::snapshot::snapshot_paths;
    let (dir, book) = write_flow(6000);
    take_snapshots(&dir, &book, 2000);
    let snaps = snapshot_paths(&dir).unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let (older, newest) = (snaps[0].0, snaps[1].0);
    // Lose the records after the older snapshot's, at a record boundary.
    let path = only_segment(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let mut at = 64;
    let mut seq = 0;
    while seq < older + 10 {
        at += journal::read_record(&bytes[at..]).unwrap().2;
        seq += 1;
    }
    assert!(seq < newest);
    std::fs::write(&path, &bytes[..at]).unwrap();
    let full = recovered(&without_snapshots(&dir), &book);
    let r = recovered(&dir, &book);
    assert_eq!(r.3, Some(older), "recovered from the older snapshot");
    assert!(r.0 == full.0, "books differ");
    assert_eq!(r.1, full.1, "session counts differ");
    assert!(r.2 == full.2, "events differ");
    assert_eq!(snapshot_paths(&dir).unwrap().len(), 1);
}

#[test]
fn serve_snapshots_while_running_and_restarts_from_one() {
    serve_snapshots_from("matcher");
}

#[test]
fn serve_snapshots_from_a_follower_and_restarts_from_one() {
    serve_snapshots_from("follower");
}

fn serve_snapshots_from(source: &str) {
    let dir = temp_dir(&format!("snapserve-{source}"));
    let text = test_config_text(&dir, "").replace(
        "[journal]\n",
        &format!("[journal]\nsnapshot_interval_records = 40\nsnapshot_source = \"{source}\"\n"),
    );
    let config = ironmatch::config::Config::parse(&text, "test").unwrap();
    let server = Server::start(&config).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    for i in 1..=60u32 {
        c.limit(i, b'S', 10, "AAPL", PX + u64::from(i) * 100)
            .unwrap();
    }
    let mut before: Vec<(u64, Vec<u8>)> = (0..60).map(|_| next(&mut c)).collect();
    // A full cancel, a resting bid and a match: the matcher hands each to the journal
    // writer as one record that makes two or three journal records, and the snapshots
    // must still cover exactly the records journaled before them.
    c.cancel(60, 0).unwrap();
    before.push(next(&mut c));
    let mut bidder = login(server.local_addr(), "MM2", "pw2", 1);
    bidder.limit(1, b'B', 10, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut bidder).0, outbound::ACCEPTED);
    c.limit(61, b'S', 5, "AAPL", PX).unwrap();
    before.push(next(&mut c));
    before.push(next(&mut c));
    let kinds: Vec<u8> = before[60..].iter().map(|(_, m)| m[0]).collect();
    assert_eq!(
        kinds,
        [outbound::CANCELED, outbound::ACCEPTED, outbound::EXECUTED]
    );
    assert_eq!(next_type(&mut bidder).0, outbound::EXECUTED);
    drop(bidder);
    // Snapshots appear while serving (taken by the matcher or the following thread).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while journal::snapshot::snapshot_paths(&dir).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot while serving"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(c);
    server.stop().unwrap();
    let snaps = journal::snapshot::snapshot_paths(&dir).unwrap();
    let end = journal::scan_journal(&dir, None, false, None, |_, _| Ok(()))
        .unwrap()
        .next_seq
        - 1;
    assert_eq!(snaps.last().unwrap().0, end, "a final snapshot at shutdown");

    let server = Server::start(&config).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    let after: Vec<(u64, Vec<u8>)> = (0..before.len()).map(|_| next(&mut c)).collect();
    assert_eq!(
        after, before,
        "the stream survives a restart from a snapshot"
    );
    c.limit(60, b'S', 10, "AAPL", PX).unwrap();
    assert_eq!(
        next_type(&mut c).0,
        outbound::REJECTED,
        "reference 60 is used"
    );
    // MM2's session: its bid's Accepted and Executed, then its cancel when it logged out
    // (cancel on disconnect).
    let mut taker = login(server.local_addr(), "MM2", "pw2", 4);
    taker.limit(2, b'B', 25, "AAPL", PX + 300).unwrap();
    next(&mut taker);
    let fills = (0..3)
        .filter(|_| next_type(&mut taker).0 == outbound::EXECUTED)
        .count();
    assert_eq!(fills, 3, "the restored book trades in price order");
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn snapshots_follow_the_journal_across_segments() {
    let (dir, book) = write_flow_in_segments(4000, 16 * 1024);
    let segments = journal::segment_paths(&dir).unwrap().len();
    assert!(segments > 10, "{segments} segments");
    let full = recovered(&without_snapshots(&dir), &book);
    take_snapshots(&dir, &book, 1500);
    let snaps = journal::snapshot::snapshot_paths(&dir).unwrap();
    std::fs::remove_file(&snaps[1].1).unwrap();
    let r = recovered(&dir, &book);
    assert_eq!(r.3, Some(snaps[0].0));
    assert!(r == (full.0, full.1, full.2, Some(snaps[0].0)));
}

/// A stalled journal writer holds every reply: while it cannot write, the client hears
/// nothing and the journal does not hold the order; once it writes, the reply comes. In
/// `shared` threading the writer and egress share a thread, in `dedicated` egress runs on
/// while the writer stalls: either way no reply leaves before its batch is written.
#[test]
fn no_reply_leaves_while_the_journal_writer_stalls() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = temp_dir("stall");
    let config = test_config_in(&dir, "");
    let hold = Arc::new(AtomicBool::new(false));
    let server = Server::start_with(&config, Some(Arc::clone(&hold))).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    c.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut c).0, outbound::ACCEPTED);

    hold.store(true, Ordering::Release);
    c.limit(2, b'B', 100, "AAPL", PX - 100).unwrap();
    quiet(&mut c, std::time::Duration::from_millis(300));
    let book = config.book_config().unwrap();
    let journaled = |user_ref: u64| {
        let mut found = false;
        journal::recover(&dir, &book, |e| {
            if let ironmatch::book::EventBody::Accepted { order, .. } = e.body {
                found |= order.user_ref.0 == user_ref;
            }
        })
        .unwrap();
        found
    };
    assert!(journaled(1));
    assert!(!journaled(2), "the stalled writer wrote nothing");

    hold.store(false, Ordering::Release);
    let (kind, msg) = next_type(&mut c);
    assert_eq!(kind, outbound::ACCEPTED);
    assert_eq!(u32::from_be_bytes(msg[9..13].try_into().unwrap()), 2);
    assert!(journaled(2));
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// A member's login goes through while the pipeline is full (the journal writer stalled,
/// every ring full of another member's orders): a Login Request is not a command and waits
/// for no room; it used to be held with them, then closed by the login timeout. In `shared`
/// threading the stalled writer holds the gateway's thread too, so this runs in
/// `dedicated` only (`.ci/run` runs the tests in both).
#[test]
fn a_login_goes_through_while_the_pipeline_is_full() {
    let Some((server, hold, _dir)) = stalled_server("full") else {
        return;
    };
    let addr = server.local_addr();
    // More orders than the rings and batches between gateway and writer hold (about
    // 3,300 with the test's rings of 1,024), from their own thread: once the gateway
    // stops reading them, the client's writes may block until the writer goes on.
    let orders = 5_000u32;
    let flooding = flood(addr, "MM3", "pw3", orders);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let late = login_while_full(addr, "MM2", "pw2");
    let c = release_flood(&hold, flooding, orders);
    drop((c, late));
    server.stop().unwrap();
}

/// An engine on a fresh journal (`tag`) whose journal writer is held while the returned
/// flag is true, so that its rings fill; `None` unless the tests run in `dedicated`
/// threading (in `shared` the held writer holds the gateway's thread too: `.ci/run` runs
/// the tests in both modes).
fn stalled_server(
    tag: &str,
) -> Option<(
    Server,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    TempDir,
)> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    if threading() != "dedicated" {
        eprintln!("skipped: needs IRONMATCH_THREADING=dedicated");
        return None;
    }
    let dir = temp_dir(tag);
    let config = test_config_in(&dir, "");
    let hold = Arc::new(AtomicBool::new(true));
    let server = Server::start_with(&config, Some(Arc::clone(&hold))).unwrap();
    Some((server, hold, dir))
}

/// Lets the held journal writer go on, then takes the flooding client back once each of
/// its `orders` has been accepted.
fn release_flood(
    hold: &std::sync::atomic::AtomicBool,
    flooding: std::thread::JoinHandle<ironmatch::client::Client>,
    orders: u32,
) -> ironmatch::client::Client {
    hold.store(false, std::sync::atomic::Ordering::Release);
    let mut c = flooding.join().unwrap();
    for r in 1..=orders {
        let (kind, msg) = next_type(&mut c);
        assert_eq!(kind, outbound::ACCEPTED, "order {r}: {msg:?}");
    }
    c
}

/// Logs `user` in while the pipeline is full: the answer must come within 2 s. While the
/// session is still in use (Login Rejected `S`: the gateway has not yet seen its last
/// close), tries again for 5 s.
fn login_while_full(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> ironmatch::client::Client {
    common::login_after_close_within(addr, user, password, 1, std::time::Duration::from_secs(2)).0
}

/// Floods the test engine with `orders` resting buys from `user` on its own thread while
/// `hold` stalls the journal writer, so that the rings fill and the gateway stops reading
/// that connection; returns the flooding thread, which gives the client back once every
/// order is written.
fn flood(
    addr: std::net::SocketAddr,
    user: &'static str,
    password: &'static str,
    orders: u32,
) -> std::thread::JoinHandle<ironmatch::client::Client> {
    std::thread::spawn(move || {
        let mut c = login(addr, user, password, 1);
        for r in 1..=orders {
            c.limit(r, b'B', 100, "AAPL", PX - 100).unwrap();
        }
        c
    })
}

/// A member that keeps its socket full takes its turn, not the whole pipeline: MM3 floods
/// 150,000 Account Queries while the journal writer is held (so the rings are full and its
/// socket backs up); once 10,000 are sent, MM1 sends one order. When the writer goes on,
/// MM1's order must come among the first commands, not after MM3's flood: the gateway
/// served the waiting connections in the same order every time room came, and the first
/// took all of it until its socket was drained (MM1's order came after 18,820 to 21,709
/// queries in three runs before the fix, after 1,508 to 1,988 in three runs with it).
/// `dedicated` only, as the tests above.
#[test]
fn a_flooding_member_does_not_starve_the_others() {
    use ironmatch::book::CommandBody;
    use ironmatch::types::OwnerId;
    use std::sync::atomic::{AtomicU32, Ordering};
    let Some((server, hold, dir)) = stalled_server("fair") else {
        return;
    };
    let addr = server.local_addr();
    let queries = 150_000u32;
    let sent = std::sync::Arc::new(AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&sent);
    let flooding = std::thread::spawn(move || {
        let mut f = login(addr, "MM3", "pw3", 1);
        for _ in 0..queries {
            f.send_packet(ironmatch::wire::soupbin::kind::UNSEQUENCED, b"Q\0\0")
                .unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
        }
        f
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sent.load(Ordering::Relaxed) < 10_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut m = login_while_full(addr, "MM1", "pw1");
    m.limit(1, b'B', 100, "AAPL", PX - 100).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    hold.store(false, Ordering::Release);
    let (kind, msg) = next_type(&mut m);
    assert_eq!(kind, outbound::ACCEPTED, "{msg:?}");
    let mut f = flooding.join().unwrap();
    for q in 0..queries {
        let (kind, msg) = next_type(&mut f);
        assert_eq!(kind, outbound::ACCOUNT_QUERY_RESPONSE, "query {q}: {msg:?}");
    }
    drop((f, m));
    server.stop().unwrap();
    // Where MM1's order came among the commands.
    let mut commands = Vec::new();
    journal::scan_journal(&dir, None, false, None, |_, entry| {
        if let Entry::Command(c) = entry
            && matches!(c.body, CommandBody::AccountQuery | CommandBody::New(_))
        {
            commands.push(c.owner);
        }
        Ok(())
    })
    .unwrap();
    let queried = commands.iter().filter(|o| **o != OwnerId(0)).count();
    assert_eq!(queried, queries as usize, "every query journaled");
    let at = commands.iter().position(|o| *o == OwnerId(0)).unwrap();
    assert!(at < 10_000, "MM1's order came after {at} of MM3's queries");
}

/// A connection the gateway stops reading because the matcher's ring is full is not
/// closed as "client silent too long": its silence is the engine's. The flooding user has
/// cancel-on-disconnect, so a close would cancel its orders; the stall outlasts the test
/// configuration's client timeout (1.5 s) and every order must still be accepted on the
/// same connection. `dedicated` only, as the test above.
#[test]
fn a_connection_held_for_room_is_not_timed_out() {
    let Some((server, hold, _dir)) = stalled_server("held") else {
        return;
    };
    let orders = 5_000u32;
    let flooding = flood(server.local_addr(), "MM1", "pw1", orders);
    // Twice the client timeout, held.
    std::thread::sleep(std::time::Duration::from_millis(3_000));
    let mut c = release_flood(&hold, flooding, orders);
    quiet(&mut c, std::time::Duration::from_millis(300));
    drop(c);
    server.stop().unwrap();
}

/// A stop while the pipeline is full (the journal writer held) keeps its clients through a
/// drain longer than the client timeout: the drain reads nothing, so their silence is the
/// engine's. The flooding member gets the replies to every order the gateway took, then
/// End of Session (the silence check closed it after `client_timeout_ms`, 1.5 s here,
/// before its last messages). `dedicated` only, as the tests above.
#[test]
fn a_drain_longer_than_the_client_timeout_keeps_its_clients() {
    use ironmatch::client::Received;
    let Some((server, hold, _dir)) = stalled_server("drain") else {
        return;
    };
    let flooding = flood(server.local_addr(), "MM1", "pw1", 2_000);
    std::thread::sleep(std::time::Duration::from_millis(500));
    server
        .shutdown_flag()
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Longer than the client timeout, held.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    hold.store(false, std::sync::atomic::Ordering::Release);
    let mut c = flooding.join().unwrap();
    let (mut accepted, mut ended) = (0u32, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match c.recv(std::time::Duration::from_millis(200)) {
            Ok(Some(Received::Sequenced { msg, .. })) if msg[0] == outbound::ACCEPTED => {
                accepted += 1
            }
            Ok(Some(Received::EndOfSession)) => {
                ended = true;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                panic!("the connection closed before End of Session ({accepted} accepted): {e}")
            }
        }
    }
    assert!(ended, "no End of Session ({accepted} accepted)");
    assert!(
        accepted > 0,
        "the orders taken before the stop are answered"
    );
    server.stop().unwrap();
}

/// While the pipeline is full, a member whose client reconnects in a loop leaves at most
/// one Disconnect waiting in the gateway (each close used to queue one more, an unbounded
/// queue during a long stall): the journal holds one Disconnect for the closes, not one per
/// close, and at most one more for the session held through the stop (a stop that ends the
/// session applies cancel-on-disconnect; it finds the first still waiting, and adds none,
/// when the stall has not cleared it yet). `dedicated` only, as the tests above.
#[test]
fn one_disconnect_per_member_waits_while_the_pipeline_is_full() {
    use ironmatch::book::CommandBody;
    let Some((server, hold, dir)) = stalled_server("redial") else {
        return;
    };
    let addr = server.local_addr();
    let orders = 5_000u32;
    let flooding = flood(addr, "MM3", "pw3", orders);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let closes = 4;
    // Each login waits until the gateway has seen the close before it; the last one, held
    // through the stop, until it has seen the last close.
    for _ in 0..closes {
        drop(login_while_full(addr, "MM2", "pw2"));
    }
    let held = login_while_full(addr, "MM2", "pw2");
    let c = release_flood(&hold, flooding, orders);
    server.stop().unwrap();
    drop((c, held));
    // MM2 is the second user of the test configuration.
    let mut disconnects = 0;
    journal::scan_journal(&dir, None, false, None, |_, entry| {
        if let Entry::Command(c) = entry
            && c.owner.0 == 1
            && c.body == CommandBody::Disconnect
        {
            disconnects += 1;
        }
        Ok(())
    })
    .unwrap();
    assert!(
        (1..=2).contains(&disconnects),
        "{disconnects} Disconnects of a member closed {closes} times in a stall, then stopped"
    );
}

/// One command whose output is larger than the matcher's output ring (1,024 records in
/// the test configuration) goes through: a mass cancel of 3,000 displayed orders is 3,000
/// records. In `shared` threading the journal writer, the ring's only consumer, runs on
/// the matcher's thread after it, so a matcher waiting for room there waited for ever
/// (the whole engine hung, the stop too); the records beyond the ring's room now wait in
/// the matcher stage until the writer has taken the rest. Both threading modes.
#[test]
fn a_command_with_more_output_than_the_ring_holds_goes_through() {
    let dir = temp_dir("big-output");
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    let orders = 3_000u32;
    for r in 1..=orders {
        c.limit(r, b'B', 100, "AAPL", PX - 100 - u64::from(r % 50) * 100)
            .unwrap();
    }
    for _ in 0..orders {
        assert_eq!(next_type(&mut c).0, outbound::ACCEPTED);
    }
    c.mass_cancel(orders + 1, "MMC").unwrap();
    for _ in 0..orders {
        assert_eq!(next_type(&mut c).0, outbound::CANCELED);
    }
    assert_eq!(next_type(&mut c).0, outbound::MASS_CANCEL_RESPONSE);
    drop(c);
    server.stop().unwrap();
}

/// The matcher's stage hands a match, an order that rests as it came and a displayed order
/// canceled in full to the journal writer as one record each (`Record::Fill`, `Rested`,
/// `Removed`), which the writer expands: what it journals and what it releases to egress
/// must be exactly what the matcher writes into a plain `Vec`, in the same order. The
/// stages take turns on this thread as in `shared` threading, with an egress ring far
/// smaller than a batch's events: the writer must take no more than egress has room for
/// (its push would otherwise wait forever for a consumer that runs after it).
///
/// Twice: with the matcher's output ring roomy, and with it small enough that the matcher
/// often stops for room while it holds records taken ahead (for its prefetch), which must
/// still be applied, in order, once room returns.
#[test]
fn the_pipeline_journals_and_releases_the_matchers_events() {
    pipeline_journals_and_releases(1 << 12, 64);
    pipeline_journals_and_releases(256, 64);
    // The writer takes everything in its input while the matcher still holds the rest of
    // a command in its spill.
    pipeline_journals_and_releases(256, 1 << 13);
}

fn pipeline_journals_and_releases(journal_ring: usize, egress_ring: usize) {
    use ironmatch::book::{
        BookConfig, Command, CommandBody, Event, EventBody, EventSink, Fill, NewOrder, Removal,
        Rested,
    };
    use ironmatch::engine::MatcherAgent;
    use ironmatch::journal::JournalAgent;
    use ironmatch::pipeline::{Agent, Record, Ring, Wake};
    use ironmatch::types::{OwnerId, Symbol, Timestamp, UserRef};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    /// The matcher's events, expanded here, and how many groups came whole.
    #[derive(Default)]
    struct Groups {
        events: Vec<Event>,
        fills: usize,
        rested: usize,
        removed: usize,
    }
    impl EventSink for Groups {
        fn push(&mut self, event: Event) {
            self.events.push(event);
        }
        fn fill(&mut self, fill: Fill) {
            self.fills += 1;
            self.events.extend(fill.events());
        }
        fn rested(&mut self, ts: Timestamp, owner: OwnerId, order: &NewOrder, rested: Rested) {
            self.rested += 1;
            self.events.extend(rested.events(ts, owner, order));
        }
        fn removed(&mut self, removal: Removal) {
            self.removed += 1;
            self.events.extend(removal.events());
        }
    }

    let dir = temp_dir("pipeline");
    // Room for the 1,000 bids below.
    let book = BookConfig {
        orders_max: 1_100,
        ..flow_config(StpMode::CancelResting)
    };
    let header = first_header(&book);
    // On a thread of its own, so that a stage stuck in a push fails the test instead of
    // hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let path = dir.to_path_buf();
    std::thread::spawn(move || {
        let writer =
            JournalWriter::open(&path, header, None, 1, FsyncMode::Never, 1 << 30).unwrap();
        let counts = writer.released();
        let to_matcher = Arc::new(Ring::new(1 << 12, Wake::None));
        let to_journal = Arc::new(Ring::new(journal_ring, Wake::None));
        let to_egress = Arc::new(Ring::new(egress_ring, Wake::None));
        let mut matcher_stage = MatcherAgent::new(
            Matcher::new(&book),
            Arc::clone(&to_matcher),
            Arc::clone(&to_journal),
        );
        let mut journal_stage = JournalAgent::new(
            writer,
            to_journal,
            Arc::clone(&to_egress),
            matcher_stage.completed(),
        );
        let mut released: Vec<Event> = Vec::new();
        // `ends[k]`: the events of the first k commands. A command counts as released (what
        // a cluster's new leader waits for before it takes logins) only once all its events
        // went to egress: a batch often ends in the middle of a command's events here.
        let mut ends = vec![0u64];
        let mut run = |matcher_stage: &mut MatcherAgent,
                       journal_stage: &mut JournalAgent,
                       ends: &[u64]| loop {
            let mut worked = matcher_stage.do_work() + journal_stage.do_work();
            let commands = counts.commands.load(Ordering::Acquire);
            let events = counts.events.load(Ordering::Acquire);
            assert!(
                events >= ends[commands as usize],
                "{commands} commands counted released with {events} events released, their events are {}",
                ends[commands as usize]
            );
            while let Some(record) = to_egress.try_pop() {
                worked += 1;
                match record {
                    Record::Event(e) => released.push(e),
                    Record::Shutdown => {}
                    other => panic!("egress got {other:?}"),
                }
            }
            if worked == 0 {
                // Idle: every command is counted.
                assert_eq!(commands as usize, ends.len() - 1, "commands released");
                break;
            }
        };

        let mut reference = Matcher::new(&book);
        let mut expected = Vec::new();
        let mut events = Groups::default();
        let mut decoder = FlowDecoder::new(&book);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let bytes: Vec<u8> = (0..400_000).map(|_| rng.below(256) as u8).collect();
        let mut src = ByteSource::new(&bytes);
        let mut commands = 0;
        // Then the first owner rests 1,000 bids and each owner cancels all its orders: a
        // command with more records than the matcher's output ring holds, which waits in
        // the matcher's spill (with the small ring) while the writer takes its first ones.
        let ccc = &book.instruments[2];
        let bids = (0..1_000u64).map(|i| Command {
            ts: Timestamp(1),
            owner: OwnerId(0),
            body: CommandBody::New(NewOrder {
                user_ref: UserRef(u64::MAX - 2_000 + i),
                side: ironmatch::types::Side::Buy,
                qty: ironmatch::types::Qty(ccc.lot),
                symbol: ccc.symbol,
                price: Some(ccc.min_price),
                tif: ironmatch::book::TimeInForce::Day,
                hidden: false,
                post_only: false,
                min_qty: ironmatch::types::Qty(0),
                max_floor: ironmatch::types::Qty(0),
                firm: book.owners[0].firm,
                echo: Default::default(),
            }),
        });
        let mass_cancels = (0..book.owners.len()).map(|o| Command {
            ts: Timestamp(1),
            owner: OwnerId(o as u16),
            body: CommandBody::MassCancel {
                user_ref: UserRef(u64::MAX),
                firm: book.owners[o].firm,
                symbol: Symbol::BLANK,
                side: None,
            },
        });
        let mut mass_cancels = bids.chain(mass_cancels);
        let mut most_resting = 0;
        while let Some(cmd) = decoder.next(&mut src).or_else(|| {
            most_resting = most_resting.max(reference.resting_orders());
            mass_cancels.next()
        }) {
            events.events.clear();
            reference.apply(&cmd, &mut events);
            expected.push(Entry::Command(cmd));
            expected.extend(events.events.iter().map(|e| Entry::Event(*e)));
            to_matcher.push(Record::Command(cmd));
            ends.push(ends[ends.len() - 1] + events.events.len() as u64);
            commands += 1;
            if commands % 500 == 0 {
                run(&mut matcher_stage, &mut journal_stage, &ends);
            }
        }
        to_matcher.push(Record::Shutdown);
        run(&mut matcher_stage, &mut journal_stage, &ends);
        assert!(matcher_stage.is_done() && journal_stage.is_done());
        assert_eq!(reference.resting_orders(), 0);
        let _ = done.send((expected, released, commands, events, most_resting));
    });
    let (expected, released, commands, groups, most_resting) = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the stages ended (none stuck waiting for ring room)");
    assert!(commands > 20_000, "{commands} commands");
    assert!(most_resting >= 1_000, "{most_resting} orders resting");

    // The flow has every kind of compact record in it, many times, hidden fills too.
    let (fills, rested, removed) = (groups.fills, groups.rested, groups.removed);
    assert!(
        fills > 200 && rested > 200 && removed > 200,
        "{fills} fills, {rested} rested, {removed} removed"
    );
    let hidden_fills = expected
        .iter()
        .filter(|e| matches!(e, Entry::Event(e) if matches!(e.body, EventBody::MdTrade { .. })))
        .count();
    assert!(hidden_fills > 10, "{hidden_fills} hidden fills");

    let want: Vec<Event> = expected
        .iter()
        .filter_map(|e| match e {
            Entry::Event(e) => Some(*e),
            Entry::Command(_) => None,
        })
        .collect();
    assert_eq!(released.len(), want.len(), "events released to egress");
    assert!(
        released == want,
        "egress got other events than the matcher wrote"
    );
    let mut journaled = Vec::new();
    journal::scan_journal(&dir, None, false, None, |_, entry| {
        journaled.push(*entry);
        Ok(())
    })
    .unwrap();
    assert_eq!(journaled.len(), expected.len(), "journal records");
    assert!(
        journaled == expected,
        "the journal differs from the matcher's output"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A server dropped without `stop()` stops as `stop()` does: when the drop returns, its
/// listener is closed and its journal holds what it acknowledged, complete (a restart
/// brings the order back).
#[test]
fn a_dropped_server_stops_and_its_journal_is_complete() {
    let dir = temp_dir("drop");
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let addr = server.local_addr();
    let mut c = login(addr, "MM3", "pw3", 1);
    c.limit(1, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut c).0, outbound::ACCEPTED);
    drop(server);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the dropped server's listener still takes connections"
    );
    drop(c);

    let server = Server::start(&config).unwrap();
    // The order is back on the book: a buyer of another firm trades with it.
    let mut taker = login(server.local_addr(), "MM2", "pw2", 1);
    taker.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut taker).0, outbound::ACCEPTED);
    assert_eq!(next_type(&mut taker).0, outbound::EXECUTED);
    server.stop().unwrap();
}

/// The audit of an order whose replace failed under a halt (the original stays live and
/// the replace's new reference stays free) shows the mass cancel that later takes that
/// reference and cancels the order: the reference was never the order's. (The audit took
/// every replace's new reference as the order's, hid the mass cancel as reusing it, and
/// with it the order's cancel.)
#[test]
fn an_audit_shows_a_cancel_by_a_request_taking_a_failed_replaces_reference() {
    use ironmatch::book::{
        Command, CommandBody, Echo, NewOrder, OperatorAction, ReplaceOrder, TimeInForce,
        VenueCommand,
    };
    use ironmatch::types::{OwnerId, Price, Qty, Side, Timestamp, UserRef};
    let dir = temp_dir("audit-failed-replace");
    let book = flow_config(StpMode::CancelResting);
    let spec = book.instruments[0];
    let mut writer = JournalWriter::open(
        &dir,
        first_header(&book),
        None,
        1,
        FsyncMode::Never,
        1 << 30,
    )
    .unwrap();
    let mut matcher = Matcher::new(&book);
    let owner = OwnerId(1);
    let venue = |request, action| CommandBody::Venue(VenueCommand::Operator { request, action });
    let commands = [
        CommandBody::New(NewOrder {
            user_ref: UserRef(5),
            side: Side::Buy,
            qty: Qty(spec.lot),
            symbol: spec.symbol,
            price: Some(spec.ref_price),
            tif: TimeInForce::Day,
            hidden: false,
            post_only: false,
            min_qty: Qty(0),
            max_floor: Qty(0),
            firm: book.owners[1].firm,
            echo: Echo::default(),
        }),
        venue(1, OperatorAction::VenueHalt(true)),
        CommandBody::Replace(ReplaceOrder {
            orig_user_ref: UserRef(5),
            user_ref: UserRef(7),
            qty: Qty(spec.lot),
            price: Price(spec.ref_price.0 - spec.tick.0),
            tif: TimeInForce::Day,
            hidden: false,
            post_only: false,
            min_qty: Qty(0),
            max_floor: Qty(0),
            echo: Echo::default(),
        }),
        venue(2, OperatorAction::VenueHalt(false)),
        CommandBody::MassCancel {
            user_ref: UserRef(7),
            firm: book.owners[1].firm,
            symbol: spec.symbol,
            side: None,
        },
    ];
    let mut events = Vec::new();
    let mut all = Vec::new();
    for (i, body) in commands.into_iter().enumerate() {
        let cmd = Command {
            ts: Timestamp(34_200_000_000_000 + i as u64),
            owner,
            body,
        };
        events.clear();
        matcher.apply(&cmd, &mut events);
        writer.stage(&Entry::Command(cmd));
        for e in &events {
            writer.stage(&Entry::Event(*e));
        }
        all.extend_from_slice(&events);
    }
    writer.commit().unwrap();
    drop(writer);
    // The flow as meant: the replace refused under the halt, the mass cancel taking 7 and
    // canceling order 5.
    let canceled = |e: &ironmatch::book::Event| matches!(e.body, ironmatch::book::EventBody::Canceled { user_ref, .. } if user_ref == UserRef(5));
    assert!(all.iter().any(canceled), "{all:?}");
    let options = ironmatch::replay::ReplayOptions {
        order: Some((owner, UserRef(5))),
        ..Default::default()
    };
    let mut out = Vec::new();
    ironmatch::replay::replay(&dir, &book, &options, &mut out).unwrap();
    let audit = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = audit.lines().collect();
    let cancel = lines
        .iter()
        .position(|l| l.contains(" event ") && l.contains("Canceled"))
        .unwrap_or_else(|| panic!("the order's cancel: {audit}"));
    assert!(
        cancel > 0 && lines[cancel - 1].contains("MassCancel"),
        "the mass cancel caused it: {audit}"
    );
}
