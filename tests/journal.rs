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

/// Writes `commands` flow commands and their events to a journal in a fresh directory.
fn write_flow(commands: usize) -> (std::path::PathBuf, ironmatch::book::BookConfig) {
    let dir = temp_dir("flow");
    let book = flow_config(StpMode::CancelResting);
    let header = Header {
        instance: 1,
        first_seq: 1,
        fingerprint: journal::fingerprint(&book),
        created_ns: 0,
    };
    let mut writer = JournalWriter::open(&dir, header, None, 1, FsyncMode::Never, 1 << 30).unwrap();
    let mut matcher = Matcher::new(&book);
    let mut decoder = FlowDecoder::new(&book);
    let bytes: Vec<u8> = (0..commands * 16).map(|i| (i * 7919 % 251) as u8).collect();
    let mut src = ByteSource::new(&bytes);
    let mut events = Vec::new();
    for _ in 0..commands {
        let Some(cmd) = decoder.next(&mut src) else {
            break;
        };
        events.clear();
        matcher.apply(&cmd, &mut events);
        writer.stage(&Entry::Command(cmd));
        for e in &events {
            writer.stage(&Entry::Event(*e));
        }
        writer.commit().unwrap();
    }
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
    server.stop().unwrap();

    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
            .args([
                "replay",
                "--journal",
                dir.to_str().unwrap(),
                "--config",
                config_path.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let summary = run(&["--verify-determinism"]);
    assert!(summary.contains("orders accepted 3, trades 2"), "{summary}");
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
    assert!(
        !audit.contains("user_ref: UserRef(1)"),
        "only order 2's trail: {audit}"
    );
    let json: serde_json::Value = serde_json::from_str(run(&["--json"]).trim()).unwrap();
    assert_eq!(json["summary"]["trades"], 2);
    let early = run(&["--until", "2"]);
    assert!(early.contains("records 2 "), "{early}");
    std::fs::remove_dir_all(&dir).ok();
}
