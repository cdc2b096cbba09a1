//! The operator's actions over loopback: halts, resumes, the venue halt, cancels and
//! disconnects through `POST` on the admin endpoint and through `ironmatch admin`, each a
//! journaled command whose result comes back; a halt survives a restart.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ironmatch::admin::client::{HttpResponse, request};
use ironmatch::client::{Client, Received};
use ironmatch::config::Config;
use ironmatch::server::Server;
use ironmatch::wire::itch::{Body, Message};
use ironmatch::wire::ouch::Outbound;

const PX: u64 = 1_500_000; // $150.00

fn config_in(dir: &std::path::Path) -> Config {
    let text = test_config_text(dir, "") + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    Config::parse(&text, "operator test config").unwrap()
}

fn post(server: &Server, path: &str) -> (u16, serde_json::Value) {
    let addr: SocketAddr = server.admin_addr().expect("admin endpoint");
    let HttpResponse { status, body, .. } =
        request(&format!("http://{addr}"), "POST", path, None).expect("the endpoint answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The instrument's state as /status shows it, once it is `wanted` (the matcher publishes
/// every 100 ms; a deadline only stops a wait that went wrong).
fn wait_state(server: &Server, symbol: &str, wanted: &str) {
    let addr = server.admin_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = request(&format!("http://{addr}"), "GET", "/status", None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&status.body).unwrap();
        let state = v["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["symbol"] == symbol)
            .map(|i| i["state"].clone());
        if state == Some(serde_json::Value::from(wanted)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{symbol} never {wanted}: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (type, user ref, detail) of the next message: reject code or cancel reason.
fn next_summary(c: &mut Client) -> (u8, u32, u16) {
    let (_, msg) = next(c);
    match decode(&msg) {
        Outbound::Accepted(a, _) => (b'A', a.user_ref.get(), 0),
        Outbound::Rejected(r) => (b'J', r.user_ref.get(), r.reason.get()),
        Outbound::Canceled(x) => (b'C', x.user_ref.get(), u16::from(x.reason)),
        Outbound::Executed(e, _) => (b'E', e.user_ref.get(), 0),
        other => panic!("unexpected {other:?}"),
    }
}

/// The feed's Stock Trading Actions: (state, reason without its padding).
fn trading_actions(dir: &std::path::Path) -> Vec<(char, String)> {
    let bytes = std::fs::read(dir.join("feed.itch")).unwrap();
    ironmatch::wire::itch::file_messages(&bytes)
        .map(|m| Message::decode(m.unwrap()).unwrap())
        .filter_map(|m| match m.body {
            Body::TradingAction { state, reason, .. } => Some((
                char::from(state),
                String::from_utf8_lossy(&reason).trim().to_string(),
            )),
            _ => None,
        })
        .collect()
}

/// (state, reason) pairs as [`trading_actions`] gives them.
fn pairs(expected: &[(char, &str)]) -> Vec<(char, String)> {
    expected.iter().map(|(s, r)| (*s, r.to_string())).collect()
}

#[test]
fn an_operator_halt_blocks_trades_and_a_resume_lets_them_through() {
    let dir = temp_dir("operator");
    let config = config_in(&dir);
    let server = Server::start(&config).unwrap();
    let mut mm1 = login(server.local_addr(), "MM1", "pw1", 1);
    let mut mm2 = login(server.local_addr(), "MM2", "pw2", 1);
    mm1.limit(1, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(next_summary(&mut mm1), (b'A', 1, 0));

    // Halt: a crossing order is refused (0x0007) and nothing trades.
    let (status, v) = post(&server, "/halt/AAPL");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["canceled"].as_u64()),
        (Some(true), Some(0))
    );
    // A number a JSON reader with doubles (JavaScript, jq 1.6) keeps exact: at most 2^53
    // (it was the clock in nanoseconds, about 1.8e18).
    assert!(
        v["request"].as_u64().is_some_and(|r| r > 0 && r <= 1 << 53),
        "journaled with a request number: {v}"
    );
    wait_state(&server, "AAPL", "halted");
    mm2.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_summary(&mut mm2), (b'J', 1, 0x0007));
    // A cancel is always accepted (MM1 reduces to 60).
    mm1.cancel(1, 60).unwrap();
    assert_eq!(next_summary(&mut mm1), (b'C', 1, u16::from(b'U')));

    // Resume: the same order trades.
    let (status, _) = post(&server, "/resume/AAPL");
    assert_eq!(status, 200);
    mm2.limit(2, b'B', 60, "AAPL", PX).unwrap();
    assert_eq!(next_summary(&mut mm2), (b'A', 2, 0));
    assert_eq!(next_summary(&mut mm2), (b'E', 2, 0));
    assert_eq!(next_summary(&mut mm1), (b'E', 1, 0));

    // Halt with cancel: resting orders are canceled with reason H.
    mm1.limit(2, b'S', 100, "AAPL", PX + 100).unwrap();
    assert_eq!(next_summary(&mut mm1), (b'A', 2, 0));
    let (status, v) = post(&server, "/halt/AAPL?cancel=true&reason=T1");
    assert_eq!((status, v["canceled"].as_u64()), (200, Some(1)));
    assert_eq!(next_summary(&mut mm1), (b'C', 2, u16::from(b'H')));
    post(&server, "/resume/AAPL");

    // The venue halt (kill switch) and its lifting; /status and the tables show it.
    assert_eq!(post(&server, "/halt-all").0, 200);
    let addr = server.admin_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = request(&format!("http://{addr}"), "GET", "/status", None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&status.body).unwrap();
        if v["venue"]["venue_halted"] == serde_json::Value::Bool(true) {
            assert_eq!(v["venue"]["phase"], "no schedule");
            assert!(ironmatch::admin::client::tables(&v).contains("VENUE HALTED"));
            break;
        }
        assert!(Instant::now() < deadline, "the venue halt never shows: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    mm2.limit(3, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_summary(&mut mm2), (b'J', 3, 0x0007));
    assert_eq!(post(&server, "/resume-all").0, 200);
    mm2.limit(4, b'B', 100, "AAPL", PX - 100).unwrap();
    assert_eq!(next_summary(&mut mm2), (b'A', 4, 0));

    // Cancel a user's orders (reason S), then an instrument's.
    let (status, v) = post(&server, "/cancel-user/MM2");
    assert_eq!((status, v["canceled"].as_u64()), (200, Some(1)));
    assert_eq!(next_summary(&mut mm2), (b'C', 4, u16::from(b'S')));
    mm1.limit(3, b'S', 100, "AAPL", PX + 200).unwrap();
    assert_eq!(next_summary(&mut mm1), (b'A', 3, 0));
    let (status, v) = post(&server, "/cancel-instrument/AAPL");
    assert_eq!((status, v["canceled"].as_u64()), (200, Some(1)));
    assert_eq!(next_summary(&mut mm1), (b'C', 3, u16::from(b'S')));

    // Unknown names and bad arguments are refused and change nothing.
    assert_eq!(post(&server, "/halt/NOPE").0, 404);
    assert_eq!(post(&server, "/cancel-user/NOBODY").0, 404);
    assert_eq!(post(&server, "/halt/AAPL?reason=TOOLONG").0, 400);

    // The command-line client, as an operator runs it.
    let admin_url = format!("http://{}", server.admin_addr().unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["admin", "halt", "AAPL", "--url", &admin_url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("AAPL: halted (reason O1)"), "{line}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["admin", "quote-only", "AAPL", "--url", &admin_url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("AAPL: quotation only"), "{line}");
    // A reason is sent as one value, encoded: `&cancel=true` in it adds no parameter (it
    // is a reason too long, refused), and nothing changes.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args([
            "admin",
            "halt",
            "AAPL",
            "--reason",
            "A&cancel=true",
            "--url",
            &admin_url,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["admin", "resume", "NOPE", "--url", &admin_url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Kick: the session is closed by the server.
    let (status, v) = post(&server, "/kick/MM2");
    assert_eq!((status, v["was_connected"].as_bool()), (200, Some(true)));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match mm2.recv(Duration::from_millis(100)) {
            Err(_) | Ok(Some(Received::EndOfSession)) => break,
            _ if Instant::now() > deadline => panic!("MM2 still connected"),
            _ => {}
        }
    }
    server.stop().unwrap();

    // The feed carried each state change with its reason.
    let actions = trading_actions(&dir);
    let expected = pairs(&[
        ('T', ""),   // start of day
        ('H', "O1"), // halt
        ('T', ""),   // resume
        ('H', "T1"), // halt with cancel, reason T1
        ('T', ""),   // resume
        ('H', "O1"), // venue halt
        ('T', ""),   // venue halt lifted
        ('H', "O1"), // ironmatch admin halt
        ('Q', "O1"), // ironmatch admin quote-only
    ]);
    assert_eq!(actions, expected);
    // Every action is in the journal: replay reproduces the session byte for byte.
    replay_verifies(&dir, &config);
    // "What happened to MM1's order 3?": the audit names the operator's command that
    // canceled it, then the cancel.
    let mut audit = Vec::new();
    ironmatch::replay::replay(
        &dir,
        &config.book_config().unwrap(),
        &ironmatch::replay::ReplayOptions {
            order: Some((ironmatch::types::OwnerId(0), ironmatch::types::UserRef(3))),
            ..Default::default()
        },
        &mut audit,
    )
    .unwrap();
    let audit = String::from_utf8(audit).unwrap();
    let cause = audit
        .find("CancelInstrument")
        .unwrap_or_else(|| panic!("{audit}"));
    let cancel = audit
        .find("Supervisory")
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(cause < cancel, "{audit}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_restart_in_the_middle_of_a_halt_keeps_the_halt() {
    let dir = temp_dir("operator-restart");
    let config = config_in(&dir);
    let server = Server::start(&config).unwrap();
    assert_eq!(post(&server, "/halt/AAPL").0, 200);
    server.stop().unwrap();

    let server = Server::start(&config).unwrap();
    wait_state(&server, "AAPL", "halted");
    let mut mm1 = login(server.local_addr(), "MM1", "pw1", 1);
    mm1.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_summary(&mut mm1), (b'J', 1, 0x0007));
    assert_eq!(post(&server, "/resume/AAPL").0, 200);
    mm1.limit(2, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_summary(&mut mm1), (b'A', 2, 0));
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_automatic_pause_triggers_on_a_runaway_sweep_and_lifts_by_itself() {
    let dir = temp_dir("breaker-feed");
    let text = test_config_text(&dir, "").replace(
        "band_bps = 1000",
        "band_bps = 1000\nbreaker_bps = 100\nbreaker_window_secs = 5\nbreaker_pause_secs = 1",
    ) + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let config = Config::parse(&text, "breaker config").unwrap();
    let server = Server::start(&config).unwrap();
    let mut mm1 = login(server.local_addr(), "MM1", "pw1", 1);
    let mut mm2 = login(server.local_addr(), "MM2", "pw2", 1);
    // A trade at $150.00; then a sweep through $152.00 (2% away: outside the 1% breaker).
    mm1.limit(1, b'S', 100, "AAPL", PX).unwrap();
    mm1.limit(2, b'S', 100, "AAPL", PX + 20_000).unwrap();
    mm2.limit(1, b'B', 100, "AAPL", PX).unwrap();
    mm2.limit(2, b'B', 100, "AAPL", PX + 20_000).unwrap();
    for expected in [
        (b'A', 1, 0),
        (b'E', 1, 0),
        (b'A', 2, 0),
        (b'C', 2, u16::from(b'H')),
    ] {
        assert_eq!(next_summary(&mut mm2), expected);
    }
    wait_state(&server, "AAPL", "paused");
    // No command comes: the engine's own timer lifts the pause after a second.
    wait_state(&server, "AAPL", "trading");
    server.stop().unwrap();
    let actions = trading_actions(&dir);
    assert_eq!(actions, pairs(&[('T', ""), ('P', "LUDP"), ('T', "")]));
    replay_verifies(&dir, &config);
    std::fs::remove_dir_all(&dir).ok();
}

/// `ironmatch demo` with the shipped configuration (a `[venue]`: the book starts closed)
/// opens the day, then its makers' quotes rest and the taker's sweep trades: it rejected
/// every order as the market closed, and ended with "0 orders rest".
#[test]
fn the_demo_with_the_shipped_configuration_trades() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["demo", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/ironmatch.toml"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("-- the trading day opens"), "{text}");
    let executed = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("executed"))
        .count();
    assert!(executed > 0, "the sweep traded: {text}");
    let resting = text
        .lines()
        .find_map(|l| l.strip_prefix("-- ")?.split_once(" orders rest"))
        .map(|(n, _)| n.parse::<usize>().unwrap())
        .unwrap_or_else(|| panic!("a count of resting orders: {text}"));
    assert!(resting > 0, "{text}");
    assert!(!text.contains("rejected"), "{text}");
}

/// Arguments the tools cannot honour are refused (exit 2, naming them) before anything is
/// bound or connected: `feed --interval 1e20` panicked, `--duration 0` and `--drop-every 0`
/// were dropped without a word, `load --sessions 0` blamed the configuration and a count
/// above its users was cut down.
#[test]
fn the_tools_refuse_arguments_they_cannot_honour() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ironmatch.toml");
    for args in [
        &["feed", "--interval", "1e20"][..],
        &["feed", "--duration", "0"],
        &["feed", "--duration=-5", "--interval", "1"],
        &["feed", "--interval", "NaN"],
        &["feed", "--drop-every", "0"],
        &["load", "--sessions", "0"],
        &["load", "--sessions", "1000"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
            .args(args)
            .args(["--config", config])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[1].split('=').next().unwrap()) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

/// A cluster secret too short is named where it came from: the environment variable that
/// overrides the file (it was reported as `cluster.secret`, which the file had empty).
#[test]
fn a_short_cluster_secret_is_named_where_it_came_from() {
    let node = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cluster/node1.toml");
    for variable in [
        "IRONMATCH_CLUSTER_SECRET",
        "IRONMATCH_CLUSTER_PREVIOUS_SECRET",
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"));
        command
            .args(["check-config", "--config", node])
            .env_remove("IRONMATCH_CLUSTER_SECRET")
            .env_remove("IRONMATCH_CLUSTER_PREVIOUS_SECRET")
            .env(variable, "too short");
        if variable == "IRONMATCH_CLUSTER_PREVIOUS_SECRET" {
            command.env("IRONMATCH_CLUSTER_SECRET", "the new secret, 16+");
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{variable}: {stderr}");
        assert!(
            stderr.contains(&format!("{variable}: at least 16 bytes"))
                && !stderr.contains("cluster.secret:")
                && !stderr.contains("cluster.previous_secret:"),
            "{variable}: {stderr}"
        );
    }
}
