//! A start that fails leaves nothing of the engine running beside a caller that starts
//! again in the same process (an embedding program, a supervisor, a test). This binary
//! holds only this test: it counts the process's engine threads by name, which no other
//! test may start beside it.

mod common;

use ironmatch::config::Config;
use ironmatch::server::Server;

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

/// A cluster node whose Raft port is in use: refused before any thread starts (until
/// 2026-12-07 the port was bound last, after the pipeline's threads had started, and they
/// ran on, the gateway's port bound, after the start had returned its error). Then the
/// same node starts once the port is free.
#[test]
fn a_node_whose_raft_port_is_taken_starts_no_thread() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let others: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut peers = vec![taken.local_addr().unwrap()];
    peers.extend(others.iter().map(|l| l.local_addr().unwrap()));
    drop(others);
    let dir = common::temp_dir("failed-start");
    let mut text = common::test_config_text(&dir.join("journal"), "");
    text.push_str("\n[cluster]\nnode_id = 1\n");
    for (i, addr) in peers.iter().enumerate() {
        text.push_str(&format!(
            "\n[[cluster.peers]]\nid = {}\nraft = \"{addr}\"\n",
            i + 1
        ));
    }
    text = text.replace(
        "[cluster]\n",
        &format!("[cluster]\ndir = \"{}\"\n", dir.join("raft").display()),
    );
    let config = Config::parse(&text, "test config").expect("a cluster node's config");
    assert_eq!(engine_threads(), Vec::<String>::new(), "before the start");
    let refused = Server::start(&config)
        .err()
        .expect("refused: the raft port is taken");
    assert!(refused.to_string().contains("raft address"), "{refused}");
    assert_eq!(
        engine_threads(),
        Vec::<String>::new(),
        "threads of the refused start running after it returned"
    );
    drop(taken);
    let server = Server::start(&config).expect("starts with the port free");
    assert!(!engine_threads().is_empty());
    server.stop().unwrap();
    assert_eq!(engine_threads(), Vec::<String>::new(), "after the stop");
}
