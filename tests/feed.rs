//! The ITCH 5.0 / MoldUDP64 feed end to end, on loopback: orders through the gateway,
//! the feed captured by the `ironmatch feed` binary, and the book it builds compared with
//! the engine's book (rebuilt from the journal) for every instrument, order by order.
//! Also: lost packets recovered by retransmission across an engine restart, the exported
//! ITCH file equal to the live store and readable by an independent parser (`itchy`).
//! Counts and contents only, never timings.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ironmatch::book::Matcher;
use ironmatch::client::{Client, Received};
use ironmatch::config::Config;
use ironmatch::journal::{Entry, fingerprint, scan_journal};
use ironmatch::server::Server;
use ironmatch::types::BookSide;
use ironmatch::wire::itch::{Body, Message, file_messages};
use ironmatch::wire::ouch::Options;

/// A free UDP port on loopback (bound, then released for the test to use).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct FeedSetup {
    dir: TempDir,
    config_path: PathBuf,
    config: Config,
    retransmission: u16,
}

/// Two instruments, three firms, no cancel on disconnect (the books survive the end of
/// the flow), a feed to a port of our own.
fn feed_setup(tag: &str) -> FeedSetup {
    let dir = temp_dir(tag);
    let destination = free_udp_port();
    let retransmission = free_udp_port();
    let text = test_config_text(&dir, "")
        .replace(
            "destination = \"127.0.0.1:9\"",
            &format!("destination = \"127.0.0.1:{destination}\""),
        )
        .replace(
            "retransmission = \"127.0.0.1:0\"",
            &format!("retransmission = \"127.0.0.1:{retransmission}\"\npacket_bytes_max = 600"),
        )
        .replace("end_of_session_ms = 0", "end_of_session_ms = 1500")
        .replace(
            "cancel_on_disconnect = true",
            "cancel_on_disconnect = false",
        )
        .replace(
            "session_queue_bytes_max = 4096",
            "session_queue_bytes_max = 4194304",
        )
        + r#"
[[instruments]]
symbol = "MSFT"
tick_size = "0.01"
lot_size = 1
min_price = "0.01"
max_price = "2000.00"
max_qty = 100000
ref_price = "420.00"
band_bps = 1000
"#;
    let config_path = dir.join("ironmatch.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, "feed test").unwrap();
    FeedSetup {
        dir,
        config_path,
        config,
        retransmission,
    }
}

/// Starts `ironmatch feed` on the test's ports, printing JSON with every order.
fn start_listener(setup: &FeedSetup, drop_every: Option<u64>) -> Child {
    let mut args: Vec<String> = [
        "feed",
        "--config",
        setup.config_path.to_str().unwrap(),
        "--json",
        "--orders",
        "--depth",
        "1000",
        "--duration",
        "60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(n) = drop_every {
        args.extend(["--drop-every".to_string(), n.to_string()]);
    }
    let child = Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Let it bind before the engine sends; a late start only means more retransmission.
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Waits for the listener and returns its last JSON line.
fn finish_listener(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().expect("the listener printed its books");
    assert!(out.status.success(), "ironmatch feed failed: {last}");
    serde_json::from_str(last).unwrap()
}

/// A small deterministic generator (the test must not depend on a seed crate's stream).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random flow from three firms on both instruments: displayed, hidden and reserve orders
/// around the mid so that many trade (partial fills), IOCs, replaces (price and size), partial
/// and full cancels. References start at `first_ref` per user.
fn random_flow(addr: std::net::SocketAddr, seed: u64, actions: usize, first_ref: u32) {
    let users = [("MM1", "pw1"), ("MM2", "pw2"), ("MM3", "pw3")];
    let mut clients: Vec<Client> = users.iter().map(|(u, p)| login(addr, u, p, 1)).collect();
    let symbols = [("AAPL", 1_500_000u64), ("MSFT", 4_200_000u64)];
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut next_ref = [first_ref; 3];
    // Orders each user may still have open: (reference, symbol index).
    let mut open: [Vec<(u32, usize)>; 3] = Default::default();
    for i in 0..actions {
        let u = rng.below(3) as usize;
        let c = &mut clients[u];
        let action = rng.below(100);
        if action < 60 || open[u].is_empty() {
            let s = rng.below(2) as usize;
            let (symbol, mid) = symbols[s];
            let buy = rng.below(2) == 0;
            // Bids from 5 ticks below the mid to 1 above, offers the mirror image: the
            // books build up while the inside keeps trading.
            let offset = rng.below(7) * 100;
            let price = if buy {
                mid - 500 + offset
            } else {
                mid - 100 + offset
            };
            let qty = (1 + rng.below(10) as u32) * 100;
            let kind = rng.below(100);
            let (display, tif, mut options) = match kind {
                0..15 => (b'N', b'0', Options::default()),
                15..30 => (b'Y', b'0', Options::default()),
                30..38 => (b'Y', b'3', Options::default()),
                _ => (b'Y', b'0', Options::default()),
            };
            if (15..30).contains(&kind) {
                options.max_floor = Some(100);
            }
            next_ref[u] += 1;
            let r = next_ref[u];
            c.enter(
                r,
                if buy { b'B' } else { b'S' },
                qty,
                symbol,
                price,
                tif,
                display,
                options,
            )
            .unwrap();
            if tif == b'0' {
                open[u].push((r, s));
            }
        } else if action < 80 {
            let k = rng.below(open[u].len() as u64) as usize;
            let (r, _) = open[u][k];
            let qty = if rng.below(2) == 0 { 0 } else { 50 };
            c.cancel(r, qty).unwrap();
            if qty == 0 {
                open[u].swap_remove(k);
            }
        } else {
            let k = rng.below(open[u].len() as u64) as usize;
            let (r, s) = open[u][k];
            let mid = symbols[s].1;
            next_ref[u] += 1;
            let price = mid - 400 + rng.below(9) * 100;
            let qty = (1 + rng.below(10) as u32) * 100;
            c.replace(r, next_ref[u], qty, price).unwrap();
            open[u][k] = (next_ref[u], s);
        }
        // Keep the replies flowing so no session is a slow reader.
        if i % 16 == 0 {
            for c in &mut clients {
                while let Ok(Some(_)) = c.recv(Duration::ZERO) {}
            }
        }
    }
    // Every request answered before the engine stops: an Account Query echo is the last.
    for c in &mut clients {
        c.logout().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.recv(Duration::from_millis(100)) {
                Ok(Some(Received::EndOfSession)) | Err(_) => break,
                _ if Instant::now() > deadline => panic!("logout not answered"),
                _ => {}
            }
        }
    }
}

/// Displayed orders per (symbol, side), best price first then time: (ref, price, shares),
/// from the engine's state rebuilt by re-running the journal.
type Books = BTreeMap<(String, &'static str), Vec<(u64, String, u64)>>;

fn engine_books(setup: &FeedSetup) -> Books {
    let book = setup.config.book_config().unwrap();
    let mut matcher = Matcher::new(&book);
    let mut sink = Vec::new();
    let dir = Path::new(&setup.config.journal.dir);
    scan_journal(dir, Some(fingerprint(&book)), false, None, |_, entry| {
        if let Entry::Command(c) = entry {
            sink.clear();
            matcher.apply(c, &mut sink);
        }
        Ok(())
    })
    .unwrap();
    let state = matcher.state();
    let mut shown: Vec<_> = state
        .orders
        .iter()
        .filter(|o| !o.hidden && o.shown > 0)
        .collect();
    shown.sort_by_key(|o| {
        let side = o.side.book_side();
        let price_key = if side == BookSide::Bid {
            u64::MAX - o.price.0
        } else {
            o.price.0
        };
        (
            o.instrument.0,
            side == BookSide::Ask,
            price_key,
            o.queue_rank,
        )
    });
    let mut books = Books::new();
    for i in &book.instruments {
        for side in ["bid", "ask"] {
            books.insert((i.symbol.as_str().to_string(), side), Vec::new());
        }
    }
    for o in shown {
        let symbol = book.instruments[usize::from(o.instrument.0)]
            .symbol
            .as_str()
            .to_string();
        let side = if o.side.book_side() == BookSide::Bid {
            "bid"
        } else {
            "ask"
        };
        books.get_mut(&(symbol, side)).unwrap().push((
            o.md_ref.0,
            o.price.to_string(),
            u64::from(o.shown),
        ));
    }
    books
}

fn listener_books(json: &serde_json::Value) -> Books {
    let mut books = Books::new();
    for i in json["instruments"].as_array().unwrap() {
        let symbol = i["symbol"].as_str().unwrap().to_string();
        for (side, key) in [("bid", "bid_orders"), ("ask", "ask_orders")] {
            let orders = i[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["ref"].as_u64().unwrap(),
                        o["price"].as_str().unwrap().to_string(),
                        o["shares"].as_u64().unwrap(),
                    )
                })
                .collect();
            books.insert((symbol.clone(), side), orders);
        }
    }
    books
}

/// Messages of each ITCH type in the store.
fn type_counts(path: &Path) -> BTreeMap<char, u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut counts = BTreeMap::new();
    for m in file_messages(&bytes) {
        let m = Message::decode(m.unwrap()).unwrap();
        *counts.entry(m.body.kind() as char).or_insert(0) += 1;
    }
    counts
}

fn export(setup: &FeedSetup) -> Vec<u8> {
    let out = setup.dir.join("export.itch");
    let status = Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["replay", "--config", setup.config_path.to_str().unwrap()])
        .args([
            "--journal",
            &setup.config.journal.dir,
            "--itch",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

fn store(setup: &FeedSetup) -> PathBuf {
    Path::new(&setup.config.journal.dir).join("feed.itch")
}

#[test]
fn listener_book_equals_engine_book_after_random_flow() {
    let setup = feed_setup("feed-e2e");
    let listener = start_listener(&setup, None);
    let server = Server::start(&setup.config).unwrap();
    assert_eq!(
        server.feed_retransmission_addr().unwrap().port(),
        setup.retransmission
    );
    random_flow(server.local_addr(), 11, 2_500, 0);
    server.stop().unwrap();
    let json = finish_listener(listener);

    let counts = type_counts(&store(&setup));
    // The flow exercised every order message the engine publishes.
    for kind in ['S', 'R', 'H', 'A', 'E', 'X', 'D', 'U', 'P'] {
        assert!(
            counts.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind} message: {counts:?}"
        );
    }
    assert_eq!(counts[&'R'], 2, "one Stock Directory per instrument");
    let total: u64 = counts.values().sum();
    let report = &json["report"];
    assert_eq!(report["complete"], true);
    assert_eq!(
        report["messages"].as_u64().unwrap(),
        total,
        "every message delivered"
    );
    assert_eq!(report["bad_messages"], 0);
    assert_eq!(report["bad_packets"], 0);

    let engine = engine_books(&setup);
    let feed = listener_books(&json);
    let resting: usize = engine.values().map(Vec::len).sum();
    assert!(
        resting > 20,
        "the flow leaves a book to compare ({resting} orders)"
    );
    assert_eq!(
        feed, engine,
        "the feed's books equal the engine's, order by order"
    );

    // The export is the stream the live feed carried, byte for byte.
    assert_eq!(export(&setup), std::fs::read(store(&setup)).unwrap());
}

#[test]
fn lost_packets_are_recovered_by_retransmission_across_a_restart() {
    let setup = feed_setup("feed-gap");
    // Day 1, first run: every 4th live packet lost.
    let first = start_listener(&setup, Some(4));
    let server = Server::start(&setup.config).unwrap();
    random_flow(server.local_addr(), 21, 1_500, 0);
    server.stop().unwrap();
    let json = finish_listener(first);
    let report = &json["report"];
    assert!(report["dropped"].as_u64().unwrap() > 10, "{report}");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(listener_books(&json), engine_books(&setup));
    let after_first_run = type_counts(&store(&setup)).values().sum::<u64>();
    assert_eq!(report["messages"].as_u64().unwrap(), after_first_run);

    // Second run on the same journal: the stream continues its numbers. This listener
    // starts late, loses every 3rd live packet, and must fetch the first run's messages
    // by retransmission.
    let second = start_listener(&setup, Some(3));
    let server = Server::start(&setup.config).unwrap();
    random_flow(server.local_addr(), 22, 1_500, 100_000);
    server.stop().unwrap();
    let json = finish_listener(second);
    let report = &json["report"];
    let total = type_counts(&store(&setup)).values().sum::<u64>();
    assert!(total > after_first_run);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["messages"].as_u64().unwrap(), total);
    assert_eq!(listener_books(&json), engine_books(&setup));
    assert_eq!(export(&setup), std::fs::read(store(&setup)).unwrap());
}

/// `replay --itch` replaces its file only with a whole export: a journal it refuses (here
/// written under another book configuration) leaves an earlier export as it was; and it
/// never writes over one of the journal's own files (a slip naming the feed's store or a
/// segment would destroy what it reads).
#[test]
fn an_export_replaces_its_file_only_when_whole_and_never_a_journals_file() {
    let setup = feed_setup("feed-export");
    let server = Server::start(&setup.config).unwrap();
    random_flow(server.local_addr(), 41, 200, 0);
    server.stop().unwrap();
    let good = export(&setup);
    assert_eq!(good, std::fs::read(store(&setup)).unwrap());
    let run = |config: &Path, file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ironmatch"))
            .args(["replay", "--config", config.to_str().unwrap()])
            .args(["--journal", &setup.config.journal.dir, "--itch"])
            .arg(file)
            .output()
            .unwrap()
    };
    let other_book = setup.dir.join("other-book.toml");
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &other_book,
        text + "\n[[instruments]]\nsymbol = \"IBM\"\ntick_size = \"0.01\"\nlot_size = 1\nmin_price = \"0.01\"\nmax_price = \"2000.00\"\nmax_qty = 100000\nref_price = \"250.00\"\nband_bps = 1000\n",
    )
    .unwrap();
    let out = setup.dir.join("export.itch");
    let refused = run(&other_book, &out);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        good,
        "the earlier export was touched"
    );
    let inside = store(&setup);
    let refused = run(&setup.config_path, &inside);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("one of the journal's own files"),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::read(&inside).unwrap(),
        good,
        "the feed's store was touched"
    );
    // Its permissions are a file's created by name (the umask decides), not a temporary
    // file's owner-only ones.
    use std::os::unix::fs::PermissionsExt;
    let plain = setup.dir.join("plain");
    std::fs::File::create(&plain).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&plain));
    // A symbolic link is followed, and stays a link, its target not there yet (the
    // export creates it); one that names a journal's own file is refused like the name.
    let target = setup.dir.join("target.itch");
    let link = setup.dir.join("link.itch");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(run(&setup.config_path, &link).status.success());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), good);
    let to_store = setup.dir.join("to-store.itch");
    std::os::unix::fs::symlink(store(&setup), &to_store).unwrap();
    let refused = run(&setup.config_path, &to_store);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(std::fs::read(store(&setup)).unwrap(), good);
    // A segment's name is refused anywhere (another day's journal, a copy).
    let elsewhere = setup.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let refused = run(
        &setup.config_path,
        &elsewhere.join("00000000000000000001.imj"),
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    // A Raft directory's own files, its sync marker and temporary files included (an
    // export renamed over the marker would have a start in this boot take the log).
    let raft = setup.dir.join("raft");
    std::fs::create_dir_all(&raft).unwrap();
    for name in ["log", "vote", "SYNC-FAILED", "vote.tmp"] {
        std::fs::write(raft.join(name), b"kept").unwrap();
        let refused = run(&setup.config_path, &raft.join(name));
        assert_eq!(refused.status.code(), Some(2), "{name}: {refused:?}");
        assert_eq!(std::fs::read(raft.join(name)).unwrap(), b"kept", "{name}");
    }
    // `replay --itch NAME REDIRECT FILE` through the shell.
    let through_shell = |name: &str, redirect: &str, file: &Path| {
        let shell = format!(
            "{} replay --config {} --journal {} --itch {name} {redirect} {}",
            env!("CARGO_BIN_EXE_ironmatch"),
            setup.config_path.display(),
            setup.config.journal.dir,
            file.display()
        );
        assert!(
            Command::new("sh")
                .args(["-c", &shell])
                .status()
                .unwrap()
                .success()
        );
    };
    // Standard output is the process's own, as redirected: appended to with `>>`.
    let appended = setup.dir.join("appended.itch");
    std::fs::write(&appended, b"before").unwrap();
    through_shell("/dev/stdout", ">>", &appended);
    assert_eq!(
        std::fs::read(&appended).unwrap(),
        [&b"before"[..], &good].concat()
    );
    // Another descriptor the shell redirected, named by its link: `3>>` adds the stream
    // after what the file held, `3>` (the file emptied) gives the stream alone; opened anew
    // without append, the stream overwrote the start and left a longer file's tail.
    let by_fd = setup.dir.join("by-fd.itch");
    for (redirect, held, expected) in [
        (">>", &b"before"[..], [&b"before"[..], &good].concat()),
        (">", &vec![b'x'; good.len() * 2][..], good.clone()),
    ] {
        std::fs::write(&by_fd, held).unwrap();
        through_shell("/dev/fd/3", &format!("3{redirect}"), &by_fd);
        assert_eq!(std::fs::read(&by_fd).unwrap(), expected, "3{redirect}");
    }
    // A pipe is written through.
    let fifo = setup.dir.join("fifo.itch");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    assert!(run(&setup.config_path, &fifo).status.success());
    assert_eq!(reader.join().unwrap(), good);
    // A plain file under `/dev` (a tmpfs's) is a file: created if new, replaced whole if an
    // earlier, longer export is there (it was written through: the new stream, then the
    // old one's tail; and a new name was not created).
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm");
    let in_shm = shm.join(format!("ironmatch-export-{}.itch", std::process::id()));
    let _ = std::fs::remove_file(&in_shm);
    let created = run(&setup.config_path, &in_shm);
    assert!(created.status.success(), "{created:?}");
    assert_eq!(std::fs::read(&in_shm).unwrap(), good);
    std::fs::write(&in_shm, vec![b'x'; good.len() * 2]).unwrap();
    assert!(run(&setup.config_path, &in_shm).status.success());
    assert_eq!(std::fs::read(&in_shm).unwrap(), good);
    std::fs::remove_file(&in_shm).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&setup.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A journal's feed keeps the settings it started with: a restart with `attribution` on
/// rebuilds and extends an anonymous feed still anonymous (no firm disclosed by a
/// retransmission or an export of what went out without), as the export does.
#[test]
fn a_restart_with_other_feed_settings_keeps_the_journals() {
    let setup = feed_setup("feed-settings");
    let server = Server::start(&setup.config).unwrap();
    random_flow(server.local_addr(), 31, 300, 0);
    server.stop().unwrap();
    let first = type_counts(&store(&setup));
    assert!(first[&'A'] > 0 && !first.contains_key(&'F'), "{first:?}");
    let kept = ironmatch::feed::FeedSettings::read(Path::new(&setup.config.journal.dir))
        .unwrap()
        .unwrap();
    assert!(!kept.attribution);

    // The same journal, attribution on and another session in the configuration (and its
    // file).
    let mut config = setup.config.clone();
    config.marketdata.attribution = true;
    config.marketdata.session = "OTHER".into();
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        text.replacen(
            "[marketdata]\n",
            "[marketdata]\nattribution = true\nsession = \"OTHER\"\n",
            1,
        ),
    )
    .unwrap();
    let server = Server::start(&config).unwrap();
    assert_eq!(server.feed_session(), Some(kept.session.as_str()));
    random_flow(server.local_addr(), 32, 300, 100_000);
    // Retransmissions answer in the journal's session, not the configuration's.
    {
        use ironmatch::wire::moldudp64::{PacketHeader, Session};
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let ask = |session: &str| {
            let request = PacketHeader {
                session: Session::from_str_padded(session).unwrap(),
                seq: 1,
                count: 1,
            };
            socket
                .send_to(
                    &request.to_bytes(),
                    server.feed_retransmission_addr().unwrap(),
                )
                .unwrap();
            let mut buf = [0u8; 2048];
            socket.recv(&mut buf).is_ok()
        };
        assert!(ask(&kept.session), "the journal's session is answered");
        assert!(!ask("OTHER"), "the configuration's is not the feed's");
    }
    server.stop().unwrap();
    let second = type_counts(&store(&setup));
    assert!(second[&'A'] > first[&'A'], "{second:?}");
    assert!(!second.contains_key(&'F'), "firms disclosed: {second:?}");
    assert_eq!(export(&setup), std::fs::read(store(&setup)).unwrap());

    // A new journal takes the configuration's.
    let mut fresh = config.clone();
    fresh.journal.dir = setup.dir.join("next").display().to_string();
    let server = Server::start(&fresh).unwrap();
    random_flow(server.local_addr(), 33, 300, 0);
    server.stop().unwrap();
    let next = type_counts(&Path::new(&fresh.journal.dir).join("feed.itch"));
    assert!(next[&'F'] > 0 && !next.contains_key(&'A'), "{next:?}");
}

/// The exported file, read by `itchy` (an independent ITCH 5.0 parser), message for
/// message against ironmatch's own decoder.
#[test]
fn exported_itch_file_parses_with_an_independent_reader() {
    let setup = feed_setup("feed-itchy");
    let config = {
        let mut c = setup.config.clone();
        c.marketdata.attribution = true;
        c
    };
    let server = Server::start(&config).unwrap();
    random_flow(server.local_addr(), 31, 800, 0);
    server.stop().unwrap();
    let bytes = std::fs::read(store(&setup)).unwrap();
    let ours: Vec<Message> = file_messages(&bytes)
        .map(|m| Message::decode(m.unwrap()).unwrap())
        .collect();
    let theirs: Vec<itchy::Message> = itchy::MessageStream::from_reader(&bytes[..])
        .map(|m| m.expect("itchy parses every message"))
        .collect();
    assert_eq!(ours.len(), theirs.len());
    assert!(ours.len() > 500);
    let mut attributed = 0;
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.body.kind(), b.tag);
        assert_eq!(
            (a.locate, a.tracking, a.ts),
            (b.stock_locate, b.tracking_number, b.timestamp)
        );
        match (&a.body, &b.body) {
            (
                Body::AddOrder {
                    order_ref,
                    side,
                    shares,
                    stock,
                    price,
                    attribution,
                },
                itchy::Body::AddOrder(o),
            ) => {
                assert_eq!(*order_ref, o.reference);
                assert_eq!(*side == b'B', o.side == itchy::Side::Buy);
                assert_eq!(*shares, o.shares);
                assert_eq!(std::str::from_utf8(stock).unwrap(), o.stock.as_str());
                assert_eq!(*price, o.price.raw());
                assert_eq!(
                    attribution.map(|m| String::from_utf8(m.to_vec()).unwrap()),
                    o.mpid.map(|m| m.to_string())
                );
                attributed += usize::from(attribution.is_some());
            }
            (
                Body::OrderExecuted {
                    order_ref,
                    shares,
                    match_number,
                },
                itchy::Body::OrderExecuted {
                    reference,
                    executed,
                    match_number: m,
                },
            ) => assert_eq!(
                (*order_ref, *shares, *match_number),
                (*reference, *executed, *m)
            ),
            (
                Body::OrderCancel { order_ref, shares },
                itchy::Body::OrderCancelled {
                    reference,
                    cancelled,
                },
            ) => assert_eq!((*order_ref, *shares), (*reference, *cancelled)),
            (Body::OrderDelete { order_ref }, itchy::Body::DeleteOrder { reference }) => {
                assert_eq!(order_ref, reference)
            }
            (
                Body::OrderReplace {
                    old_ref,
                    new_ref,
                    shares,
                    price,
                },
                itchy::Body::ReplaceOrder(r),
            ) => assert_eq!(
                (*old_ref, *new_ref, *shares, *price),
                (r.old_reference, r.new_reference, r.shares, r.price.raw())
            ),
            (
                Body::Trade {
                    shares,
                    price,
                    match_number,
                    ..
                },
                itchy::Body::NonCrossTrade(t),
            ) => assert_eq!(
                (u64::from(*shares), *price, *match_number),
                (u64::from(t.shares), t.price.raw(), t.match_number)
            ),
            (Body::SystemEvent { .. }, itchy::Body::SystemEvent { .. })
            | (Body::StockDirectory(_), itchy::Body::StockDirectory(_))
            | (Body::TradingAction { .. }, itchy::Body::TradingAction { .. }) => {}
            (a, b) => panic!("ironmatch decodes {a:?}, itchy {b:?}"),
        }
    }
    assert!(
        attributed > 0,
        "attribution configured: adds carry the firm"
    );
}

/// Packets from a raw socket until End of Session: (first sequence number, message count
/// as sent, its messages).
fn packets_until_end(socket: &UdpSocket) -> Vec<(u64, u16, Vec<Message>)> {
    use ironmatch::wire::moldudp64::Packet;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = socket.recv(&mut buf).expect("a packet within 10 s");
        let p = Packet::parse(&buf[..n]).unwrap();
        let messages = p
            .messages()
            .map(|(_, m)| Message::decode(m).unwrap())
            .collect();
        got.push((p.header.seq, p.header.count, messages));
        if p.is_end_of_session() {
            return got;
        }
    }
}

#[test]
fn start_of_day_goes_out_live_and_a_restart_continues_the_numbers() {
    let setup = feed_setup("feed-restart");
    let socket = UdpSocket::bind(
        setup
            .config
            .marketdata
            .destination
            .parse::<std::net::SocketAddr>()
            .unwrap(),
    )
    .unwrap();
    let server = Server::start(&setup.config).unwrap();
    let mut c = login(server.local_addr(), "MM1", "pw1", 1);
    c.limit(1, b'B', 100, "AAPL", 1_490_000).unwrap();
    next(&mut c);
    server.stop().unwrap();
    let first_run = packets_until_end(&socket);
    // Start of day then the add, numbered from 1 with nothing skipped.
    let (seq, count, messages) = &first_run[0];
    assert_eq!((*seq, *count as usize), (1, messages.len()));
    let kinds: String = first_run
        .iter()
        .flat_map(|(_, _, m)| m.iter().map(|m| m.body.kind() as char))
        .collect();
    assert_eq!(kinds, "SSRRHHSA");
    let end = first_run.last().unwrap();
    assert_eq!(
        (end.0, end.1),
        (9, 0xFFFF),
        "End of Session announces message 9 next"
    );

    // The rest of the first run's End of Session packets (the thread has ended).
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 64];
    while let Ok(n) = socket.recv(&mut buf) {
        assert_eq!(&buf[18..n], &[0xFF, 0xFF]);
    }

    // A restart neither renumbers nor resends: a heartbeat says 9 comes next, then the new
    // add is message 9.
    let server = Server::start(&setup.config).unwrap();
    let mut c = login(server.local_addr(), "MM1", "pw1", 1);
    c.limit(2, b'S', 100, "AAPL", 1_510_000).unwrap();
    while next(&mut c).0 < 2 {}
    check_retransmission(&setup, server.feed_retransmission_addr().unwrap());
    server.stop().unwrap();
    // On a loaded machine the first run's End of Session packets can still arrive after the
    // 50 ms drain above; they announce 9 with count 0xFFFF and are not the second run's.
    let second_run: Vec<_> = loop {
        let run: Vec<_> = packets_until_end(&socket)
            .into_iter()
            .skip_while(|p| (p.0, p.1) == (9, 0xFFFF))
            .collect();
        if !run.is_empty() {
            break run;
        }
    };
    assert_eq!((second_run[0].0, second_run[0].1), (9, 0), "{second_run:?}");
    let data: Vec<_> = second_run.iter().filter(|p| !p.2.is_empty()).collect();
    assert_eq!(data.len(), 1, "{second_run:?}");
    assert_eq!(data[0].0, 9);
    assert!(matches!(
        data[0].2[0].body,
        Body::AddOrder {
            side: b'S',
            shares: 100,
            price: 1_510_000,
            ..
        }
    ));
}

/// The retransmission server: one packet per request with what was asked for and exists;
/// nothing for sequence 0, numbers not yet sent, or another session.
fn check_retransmission(setup: &FeedSetup, server: std::net::SocketAddr) {
    use ironmatch::wire::moldudp64::{Packet, PacketHeader, Session};
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let session = Session::from_str_padded(&setup.config.marketdata.session).unwrap();
    let ask = |session: Session, seq: u64, count: u16| {
        let request = PacketHeader {
            session,
            seq,
            count,
        };
        socket.send_to(&request.to_bytes(), server).unwrap();
        let mut buf = [0u8; 2048];
        socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    };
    // The publisher reads the journal every millisecond: the new add may take a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let all = loop {
        let answer = ask(session, 1, 100).expect("an answer");
        let p = Packet::parse(&answer).unwrap();
        if p.message_count() == 9 || Instant::now() > deadline {
            break answer;
        }
    };
    let p = Packet::parse(&all).unwrap();
    assert_eq!((p.header.seq, p.message_count()), (1, 9));
    assert!(all.len() <= setup.config.marketdata.packet_bytes_max);
    let part = ask(session, 3, 2).expect("an answer");
    let p = Packet::parse(&part).unwrap();
    assert_eq!((p.header.seq, p.message_count()), (3, 2));
    let kinds: Vec<u8> = p.messages().map(|(_, m)| m[0]).collect();
    assert_eq!(kinds, b"RR");
    assert_eq!(ask(session, 0, 5), None);
    assert_eq!(ask(session, 10, 5), None, "not sent yet");
    assert_eq!(ask(Session::from_str_padded("OTHER").unwrap(), 1, 5), None);
    assert_eq!(ask(session, 1, 0), None);
}
