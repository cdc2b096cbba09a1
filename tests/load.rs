//! `ironmatch load` against an engine on loopback: every message is answered, the flow
//! trades, and the baseline echo answers the same schedule. Counts only, never timings.

mod common;

use std::time::Duration;

use common::*;
use ironmatch::load::{self, LoadInstrument, LoadOptions};
use ironmatch::server::Server;

fn options(addr: std::net::SocketAddr, messages: u64) -> LoadOptions {
    LoadOptions {
        also: Vec::new(),
        connect: addr,
        users: vec![
            ("MM1".into(), "pw1".into()),
            ("MM2".into(), "pw2".into()),
            ("MM3".into(), "pw3".into()),
        ],
        instruments: vec![LoadInstrument {
            symbol: "AAPL".into(),
            tick: 100,
            lot: 1,
            mid: 1_500_000,
        }],
        rate: 5_000,
        duration: Duration::from_secs(10),
        messages: Some(messages),
        seed: 7,
        ioc_percent: 10,
        drain: Duration::from_secs(5),
        progress: false,
    }
}

#[test]
fn load_gets_a_reply_for_every_message_and_trades() {
    let dir = temp_dir("load");
    let server = Server::start(&test_config_in(&dir, "")).unwrap();
    let opts = options(server.local_addr(), 3_000);
    let (engine, baseline) = load::run(&opts, true).unwrap();
    assert_eq!(engine.sent, 3_000);
    assert_eq!(engine.missing, 0, "every message answered");
    assert_eq!(engine.replies, 3_000);
    assert_eq!(engine.latency.len(), 3_000);
    assert!(engine.trades > 0, "marketable IOC orders trade");
    let baseline = baseline.unwrap();
    assert_eq!(
        (baseline.sent, baseline.replies, baseline.missing),
        (3_000, 3_000, 0)
    );

    // A second run on the same engine continues the users' references (Account Query).
    let (again, _) = load::run(&options(server.local_addr(), 500), false).unwrap();
    assert_eq!((again.replies, again.missing), (500, 0));
    let duplicates = again
        .rejects
        .iter()
        .filter(|(reason, _)| reason.starts_with("0x000F"))
        .count();
    assert_eq!(duplicates, 0, "no reference reused: {:?}", again.rejects);

    // The text outputs are well-formed.
    let mut text = Vec::new();
    load::print_summary(&mut text, &opts, &engine, None).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("round trip p99.99 (us)") && text.contains("replies missing"));
    let mut hgrm = Vec::new();
    load::write_hgrm(&engine.latency, &mut hgrm).unwrap();
    let hgrm = String::from_utf8(hgrm).unwrap();
    assert!(hgrm.contains("#[Max") && hgrm.lines().count() > 10);
    assert_eq!(engine.to_json()["replies"], 3_000);
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn load_reports_missing_replies_when_the_engine_goes_away() {
    let dir = temp_dir("loadstop");
    let server = Server::start(&test_config_in(&dir, "")).unwrap();
    let mut opts = options(server.local_addr(), 1_000_000);
    opts.rate = 2_000;
    opts.duration = Duration::from_secs(2);
    opts.drain = Duration::from_millis(500);
    let flag = server.shutdown_flag();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        server.wait().unwrap();
    });
    // The sessions end mid-run: the sender's writes fail or go unanswered; either way
    // the run must not claim every message was answered.
    if let Ok((report, _)) = load::run(&opts, false) {
        assert!(report.missing > 0 || report.replies < report.sent);
    }
    stopper.join().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// Values the generator's time arithmetic cannot hold are refused with exit 2, naming the
/// limits (a `--drain-ms` near 2^64 panicked when sending ended, a `--duration` of 2e19 at
/// the start); nothing is sent.
#[test]
fn load_refuses_durations_it_cannot_count() {
    for args in [
        &["--duration", "2e19"][..],
        &["--duration", "86401"],
        &["--drain-ms", "18446744073709551615"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
            .args(["load", "--connect", "127.0.0.1:9"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("at most 86400"), "{args:?}: {stderr}");
    }
}
