//! Shared helpers for tests that run the engine on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ironmatch::client::{Client, Received};
use ironmatch::config::Config;
use ironmatch::server::Server;
use ironmatch::wire::ouch::{Outbound, decode_outbound};

/// A fresh directory for one test's journal, under the system's temporary directory.
/// Removed when the test passes; kept, with its logs and journals, when it fails (the
/// guard is dropped while panicking), and printed so it can be found.
pub fn temp_dir(tag: &str) -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "ironmatch-{tag}-{}-{n}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A test's directory: see [`temp_dir`].
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// The path, the directory living as long as the test's thread: removed when the test
    /// has passed, kept when it failed. For directories nothing writes once the test's
    /// locals are dropped (a cluster's nodes: processes killed and waited for when their
    /// `Node`s drop; a configuration's journal: an in-process `Server` stops and joins its
    /// threads when dropped). On a thread the test harness did not start, the directory
    /// is kept.
    #[allow(dead_code)]
    pub fn hold(self) -> std::path::PathBuf {
        let path = self.0.clone();
        let on_test_thread = std::thread::current()
            .name()
            .is_some_and(|name| name != "main");
        if on_test_thread {
            watch_for_failure();
            HELD.with(|held| held.borrow_mut().push(self));
        } else {
            std::mem::forget(self);
        }
        path
    }
}

thread_local! {
    /// Directories [`TempDir::hold`] handed out on this test's thread, dropped with it.
    static HELD: std::cell::RefCell<Vec<TempDir>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Whether this thread panicked: the harness catches a failed test's panic before the
    /// thread ends, so [`HELD`]'s directories cannot ask `std::thread::panicking`.
    static FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once, a panic hook that marks the panicking thread failed before reporting
/// the panic as usual.
fn watch_for_failure() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = FAILED.try_with(|failed| failed.set(true));
            report(info);
        }));
    });
}

impl std::ops::Deref for TempDir {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let failed = std::thread::panicking() || FAILED.try_with(|f| f.get()).unwrap_or(true);
        if failed {
            eprintln!("test failed: its directory is kept at {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The threading mode tests run the engine in: `IRONMATCH_THREADING` (`shared`,
/// `dedicated` or `auto`; CI runs the engine tests once per mode), `auto` when unset.
pub fn threading() -> String {
    let mode = std::env::var("IRONMATCH_THREADING").unwrap_or_else(|_| "auto".to_string());
    assert!(
        ironmatch::pipeline::Threading::parse(&mode).is_some(),
        "IRONMATCH_THREADING={mode:?}: not auto, dedicated or shared"
    );
    mode
}

/// A configuration for tests: ephemeral port, short timers, small limits, and a fresh
/// journal directory.
pub fn test_config(extra_gateway: &str) -> Config {
    test_config_in(&temp_dir("test").hold(), extra_gateway)
}

/// Like [`test_config`], with the journal in `dir`.
pub fn test_config_in(dir: &std::path::Path, extra_gateway: &str) -> Config {
    Config::parse(&test_config_text(dir, extra_gateway), "test config")
        .expect("test config is valid")
}

/// The text of [`test_config_in`], to write to a file for the binary.
pub fn test_config_text(dir: &std::path::Path, extra_gateway: &str) -> String {
    let journal = dir.display();
    let threading = threading();
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
login_timeout_ms = 400
heartbeat_interval_ms = 100
client_timeout_ms = 1500
session_queue_bytes_max = 4096
session_store_bytes = 65536
{extra_gateway}

[pipeline]
ring_capacity = 1024
threading = "{threading}"

[journal]
dir = "{journal}"

[marketdata]
destination = "127.0.0.1:9"
retransmission = "127.0.0.1:0"
end_of_session_ms = 0

[[instruments]]
symbol = "AAPL"
tick_size = "0.01"
lot_size = 1
min_price = "0.01"
max_price = "1000.00"
max_qty = 100000
ref_price = "150.00"
band_bps = 1000

[[users]]
username = "MM1"
password = "pw1"
firm = "MMA"
cancel_on_disconnect = true
orders_per_sec = 100000
burst = 100000

[[users]]
username = "MM2"
password = "pw2"
firm = "MMB"
cancel_on_disconnect = true
orders_per_sec = 100000
burst = 100000

[[users]]
username = "MM3"
password = "pw3"
firm = "MMC"
cancel_on_disconnect = false
orders_per_sec = 100000
burst = 100000

[[users]]
username = "SLOW"
password = "pw4"
firm = "SLW"
cancel_on_disconnect = false
orders_per_sec = 2
burst = 3
"#
    )
}

/// The shipped configuration as text, with every port ephemeral (the feed goes to the
/// loopback discard port, the admin endpoint to a port of its own) so that tests can run
/// side by side, and without its `[venue]` table, so that the tests run the same at any
/// hour (tests/day.rs runs the day).
pub fn shipped_config_for_tests() -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/ironmatch.toml"
    ))
    .unwrap();
    let venue = shipped
        .find("\n[venue]")
        .expect("the shipped config has a [venue]");
    let after = venue + 1 + shipped[venue + 1..].find("\n[").expect("a table follows");
    let shipped = format!("{}{}", &shipped[..venue], &shipped[after..]);
    shipped
        .replace("127.0.0.1:15000", "127.0.0.1:0")
        .replace("127.0.0.1:15001", "127.0.0.1:9")
        .replace("127.0.0.1:15002", "127.0.0.1:0")
        .replace("127.0.0.1:15080", "127.0.0.1:0")
        .replace("end_of_session_ms = 1000", "end_of_session_ms = 0")
        .replace(
            "threading = \"auto\"",
            &format!("threading = \"{}\"", threading()),
        )
}

/// Starts an engine for one test.
pub fn start() -> Server {
    Server::start(&test_config("")).expect("engine starts")
}

/// Connects and logs in; panics unless accepted.
pub fn login(addr: SocketAddr, user: &str, password: &str, seq: u64) -> Client {
    let mut c = Client::connect(addr).expect("connect");
    match c.login(user, password, seq).expect("login answer") {
        Received::LoginAccepted { .. } => c,
        other => panic!("login of {user} not accepted: {other:?}"),
    }
}

/// [`login`] once the gateway has seen `user`'s last connection close: until then the
/// session is in use (Login Rejected `S`), so this is also how a test knows the close,
/// and what it does (cancel on disconnect), came first. Tries for 5 s.
pub fn login_after_close(addr: SocketAddr, user: &str, password: &str, seq: u64) -> Client {
    login_after_close_answered(addr, user, password, seq).0
}

/// [`login_after_close`], with the Login Accepted it got.
pub fn login_after_close_answered(
    addr: SocketAddr,
    user: &str,
    password: &str,
    seq: u64,
) -> (Client, Received) {
    login_after_close_within(addr, user, password, seq, Duration::from_secs(5))
}

/// [`login_after_close_answered`], each login answered within `answer_max` (or the test
/// fails).
pub fn login_after_close_within(
    addr: SocketAddr,
    user: &str,
    password: &str,
    seq: u64,
    answer_max: Duration,
) -> (Client, Received) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(addr).expect("connect");
        match c
            .login_within(user, password, seq, answer_max)
            .expect("login answer")
        {
            accepted @ Received::LoginAccepted { .. } => return (c, accepted),
            Received::LoginRejected(b'S') if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!("login of {user} not accepted: {other:?}"),
        }
    }
}

/// The next sequenced message, within 5 s.
pub fn next(c: &mut Client) -> (u64, Vec<u8>) {
    c.recv_message(Duration::from_secs(5))
        .expect("connection open")
        .expect("a message within 5 s")
}

/// The OUCH type of the next message, and the message.
pub fn next_type(c: &mut Client) -> (u8, Vec<u8>) {
    let (_, msg) = next(c);
    (msg[0], msg)
}

/// Decodes a message known to be valid.
pub fn decode(msg: &[u8]) -> Outbound<'_> {
    decode_outbound(msg).expect("the engine sends valid OUCH")
}

/// Asserts that nothing but heartbeats arrives for `wait`.
pub fn quiet(c: &mut Client, wait: Duration) {
    if let Some(m) = c.recv_message(wait).expect("connection open") {
        panic!("expected nothing, got message {m:?}");
    }
}

/// Replays the journal in `dir`, checking that every journaled event equals the re-run's.
pub fn replay_verifies(dir: &std::path::Path, config: &Config) {
    let summary = ironmatch::replay::replay(
        dir,
        &config.book_config().unwrap(),
        &ironmatch::replay::ReplayOptions {
            verify_determinism: true,
            ..Default::default()
        },
        &mut Vec::new(),
    )
    .expect("the journal replays with identical events");
    assert!(summary.records > 0);
}

/// Starts `ironmatch serve --config CONFIG` as a child process, its stderr appended to
/// `serve.log` beside the configuration; returns it and the gateway address its start line
/// names (read from its stdout).
pub fn spawn_serve(config: &std::path::Path) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("serve.log"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr.parse().unwrap())
}

/// A small seeded generator (xorshift), so a failing seed reproduces.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A connection from `source` (any 127.0.0.0/8 address is local on Linux).
pub fn connect_from(source: [u8; 4], addr: SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let from = SocketAddr::from((source, 0));
    socket.bind(&from.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}
