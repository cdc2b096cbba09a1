//! A start that fails leaves nothing of the engine running beside a caller that starts
//! again in the same process (an embedding program, a supervisor, a test). This binary
//! holds only these tests, one at a time (a lock): they count the process's engine threads
//! by name, which no other test may start beside them.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ironmatch::config::Config;
use ironmatch::server::Server;

/// One test at a time: each counts every engine thread of the process.
static ALONE: Mutex<()> = Mutex::new(());

/// The names of this process's live threads that the engine starts (`im-...`).
fn engine_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("Linux's /proc") {
        let comm = task.unwrap().path().join("comm");
        // A thread may end between the listing and the read.
        if let Ok(name) = std::fs::read_to_string(comm) {
            let name = name.trim().to_string();
            if name.starts_with("im-") {
                names.push(name);
            }
        }
    }
    names
}

/// The engine threads still listed within a second: a joined thread's entry leaves
/// `/proc` a moment after the join returns; a thread left running stays.
fn engine_threads_left() -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = engine_threads();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `config`'s start is refused naming `what`, and no engine thread runs after it returned.
fn refused_leaving_no_thread(config: &Config, what: &str) {
    assert_eq!(
        engine_threads_left(),
        Vec::<String>::new(),
        "before the start"
    );
    let refused = Server::start(config).err().expect("refused");
    assert!(refused.to_string().contains(what), "{refused}");
    assert_eq!(
        engine_threads_left(),
        Vec::<String>::new(),
        "threads of the refused start running after it returned"
    );
}

/// A cluster node whose Raft port is in use: refused before any thread starts (until
/// 2026-12-07 the port was bound last, after the pipeline's threads had started, and they
/// ran on, the gateway's port bound, after the start had returned its error). Then the
/// same node starts once the port is free, and its stop leaves no thread.
#[test]
fn a_node_whose_raft_port_is_taken_starts_no_thread() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let others: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut peers = vec![taken.local_addr().unwrap()];
    peers.extend(others.iter().map(|l| l.local_addr().unwrap()));
    drop(others);
    let dir = common::temp_dir("failed-start");
    let mut text = common::test_config_text(&dir.join("journal"), "");
    text.push_str(&format!(
        "\n[cluster]\ndir = \"{}\"\nnode_id = 1\n",
        dir.join("raft").display()
    ));
    for (i, addr) in peers.iter().enumerate() {
        text.push_str(&format!(
            "\n[[cluster.peers]]\nid = {}\nraft = \"{addr}\"\n",
            i + 1
        ));
    }
    let config = Config::parse(&text, "test config").expect("a cluster node's config");
    refused_leaving_no_thread(&config, "raft address");
    drop(taken);
    let server = Server::start(&config).expect("starts with the port free");
    assert!(!engine_threads().is_empty());
    server.stop().unwrap();
    assert_eq!(
        engine_threads_left(),
        Vec::<String>::new(),
        "after the stop"
    );
}

/// A start failing after some threads started (the feed's retransmission port is in use;
/// the snapshot thread, on at the shipped interval, started before the feed) returns with
/// none of them running. (The snapshot thread also ends by itself once the journal writer
/// is gone, so this holds without the joins the start now does: it checks the path, not
/// that change.)
#[test]
fn a_start_failing_after_threads_started_leaves_none() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = common::temp_dir("failed-feed");
    let mut config = common::test_config_in(&dir, "");
    assert!(config.journal.snapshot_interval_records > 0);
    config.marketdata.retransmission = taken.local_addr().unwrap().to_string();
    refused_leaving_no_thread(&config, "retransmission");
}
