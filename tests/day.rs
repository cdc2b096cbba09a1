//! The trading day end to end over loopback, compressed to seconds: the schedule's
//! transitions, time in force by phase, expiries, the close, the end of the day and the
//! next day, and a restart in the middle of the day.
//!
//! The venue's time zone is chosen so that its local time is around noon whatever the hour
//! the test runs at, so that a day of a few seconds never crosses midnight.

mod common;

use std::time::{Duration, Instant};

use ironmatch::client::{Client, Received};
use ironmatch::config::Config;
use ironmatch::server::Server;
use ironmatch::wire::itch::{Body, Message};
use ironmatch::wire::ouch::{Options, Outbound};

use common::{decode, replay_verifies, temp_dir, test_config_text};

const PX: u64 = 1_500_000; // 150.00

/// A fixed-offset zone where it is about noon now.
fn noon_zone() -> String {
    let hour = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .hour();
    let k = 12 - i32::from(hour);
    // POSIX sign: Etc/GMT-3 is three hours ahead of UTC.
    match k {
        0 => "Etc/GMT".to_string(),
        k if k > 0 => format!("Etc/GMT-{k}"),
        k => format!("Etc/GMT+{}", -k),
    }
}

/// The local time `secs` from now in `zone`, as the configuration writes it.
fn local_in(zone: &str, secs: f64) -> String {
    let tz = jiff::tz::TimeZone::get(zone).unwrap();
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs_f64(secs))
        .unwrap()
        .to_zoned_datetime(tz);
    let t = at.time();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A test configuration with a `[venue]` whose transitions are `offsets` seconds from now.
fn day_config(dir: &std::path::Path, offsets: [f64; 4]) -> (Config, String) {
    let zone = noon_zone();
    let [s, q, m, e] = offsets.map(|o| local_in(&zone, o));
    let text = format!(
        "{}\n[venue]\ntimezone = \"{zone}\"\nsystem_start = \"{s}\"\nmarket_open = \"{q}\"\nmarket_close = \"{m}\"\nsystem_end = \"{e}\"\n",
        // Clients here stay silent for seconds between the day's events.
        test_config_text(dir, "").replace("client_timeout_ms = 1500", "client_timeout_ms = 30000")
    );
    (Config::parse(&text, "day config").unwrap(), zone)
}

/// A configuration text equivalent to `config` for the binary: the test configuration of
/// `dir` with the same `[venue]`.
fn day_config_text(dir: &std::path::Path, config: &Config) -> String {
    let v = config.venue.as_ref().unwrap();
    format!(
        "{}\n[venue]\ntimezone = \"{}\"\nsystem_start = \"{}\"\nmarket_open = \"{}\"\nmarket_close = \"{}\"\nsystem_end = \"{}\"\n",
        test_config_text(dir, ""),
        v.timezone,
        v.system_start,
        v.market_open,
        v.market_close,
        v.system_end
    )
}

fn login(server: &Server, user: &str, password: &str) -> Client {
    let mut c = Client::connect(server.local_addr()).unwrap();
    match c.login(user, password, 1).unwrap() {
        Received::LoginAccepted { .. } => c,
        other => panic!("{user}: {other:?}"),
    }
}

/// The next OUCH message that is not an execution.
fn next_msg(c: &mut Client, within: Duration) -> Vec<u8> {
    c.recv_message(within)
        .expect("connection open")
        .unwrap_or_else(|| panic!("a message within {within:?}"))
        .1
}

fn gtt(secs: u32) -> Options {
    Options {
        expire_time: Some(secs),
        ..Options::default()
    }
}

/// (type, user ref, detail): reject code, cancel reason, tif, or system event code.
fn summary(msg: &[u8]) -> (u8, u32, u16) {
    match decode(msg) {
        Outbound::Accepted(a, _) => (b'A', a.user_ref.get(), u16::from(a.tif)),
        Outbound::Rejected(r) => (b'J', r.user_ref.get(), r.reason.get()),
        Outbound::Canceled(c) => (b'C', c.user_ref.get(), u16::from(c.reason)),
        Outbound::Executed(e, _) => (b'E', e.user_ref.get(), 0),
        Outbound::SystemEvent(s) => (b'S', 0, u16::from(s.event_code)),
        other => panic!("unexpected {other:?}"),
    }
}

fn expect(c: &mut Client, wanted: (u8, u32, u16)) {
    let msg = next_msg(c, Duration::from_secs(5));
    let got = summary(&msg);
    assert_eq!(
        (char::from(got.0), got.1, got.2),
        (char::from(wanted.0), wanted.1, wanted.2),
        "message {msg:?}"
    );
}

/// The ITCH System Event codes of a day's stored feed, in order.
fn feed_system_events(day_dir: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(day_dir.join("feed.itch")).unwrap();
    ironmatch::wire::itch::file_messages(&bytes)
        .map(|m| Message::decode(m.unwrap()).unwrap())
        .filter_map(|m| match m.body {
            Body::SystemEvent { code } => Some(code),
            _ => None,
        })
        .collect()
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[test]
fn a_compressed_day_runs_its_schedule_and_the_next_day_follows() {
    let dir = temp_dir("day");
    let t0 = Instant::now();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let (config, zone) = day_config(&dir, [1.0, 2.5, 5.0, 7.0]);
    let server = Server::start(&config).unwrap();
    let day = server.day().expect("a trading day");
    let mut mm1 = login(&server, "MM1", "pw1");
    let mut mm2 = login(&server, "MM2", "pw2");

    // Before system hours: nothing is accepted (0x0002 destination closed).
    mm1.limit(1, b'B', 100, "AAPL", PX).unwrap();
    expect(&mut mm1, (b'J', 1, 0x0002));
    mm1.enter(2, b'B', 100, "AAPL", PX, b'5', b'Y', Options::default())
        .unwrap();
    expect(&mut mm1, (b'J', 2, 0x0002));

    // Start of system hours: OUCH System Event S, then extended-hours orders only.
    expect(&mut mm1, (b'S', 0, u16::from(b'S')));
    expect(&mut mm2, (b'S', 0, u16::from(b'S')));
    mm1.enter(3, b'B', 100, "AAPL", PX, b'5', b'Y', Options::default())
        .unwrap();
    expect(&mut mm1, (b'A', 3, u16::from(b'5')));
    mm1.enter(4, b'B', 100, "AAPL", PX + 100, b'6', b'Y', gtt(1))
        .unwrap();
    let accepted = next_msg(&mut mm1, Duration::from_secs(5));
    let Outbound::Accepted(a, options) = decode(&accepted) else {
        panic!("{accepted:?}")
    };
    assert_eq!((a.user_ref.get(), a.tif), (4, b'6'));
    let gtt_ref = a.order_ref.get();
    assert_eq!(
        options.expire_time,
        Some(1),
        "the GTT's expire time is echoed"
    );
    // Its timestamp counts from midnight in the venue's zone.
    let local = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::get(&zone).unwrap());
    let since_midnight = local
        .timestamp()
        .duration_since(local.start_of_day().unwrap().timestamp())
        .as_nanos() as u64;
    let stamp = a.timestamp.get();
    assert!(
        stamp <= since_midnight && since_midnight - stamp < 2_000_000_000,
        "stamp {stamp} vs local {since_midnight}"
    );
    mm1.limit(5, b'B', 100, "AAPL", PX).unwrap();
    expect(&mut mm1, (b'J', 5, 0x0002)); // Day: market hours only
    mm1.enter(6, b'B', 100, "AAPL", PX, b'E', b'Y', Options::default())
        .unwrap();
    expect(&mut mm1, (b'J', 6, 0x0002)); // after hours: not before the open
    // Pre-market trading: an IOC takes 10 from the GTT bid.
    mm2.enter(
        1,
        b'S',
        10,
        "AAPL",
        PX + 100,
        b'3',
        b'Y',
        Options::default(),
    )
    .unwrap();
    expect(&mut mm2, (b'A', 1, u16::from(b'3')));
    expect(&mut mm2, (b'E', 1, 0));
    expect(&mut mm1, (b'E', 4, 0));
    // The GTT expires a second after entry: canceled with reason T (timeout).
    expect(&mut mm1, (b'C', 4, u16::from(b'T')));

    // Market hours: Day and after-hours orders are accepted.
    sleep_until(at(2.7));
    mm1.limit(7, b'B', 100, "AAPL", PX - 100).unwrap();
    expect(&mut mm1, (b'A', 7, u16::from(b'0')));
    mm1.enter(
        8,
        b'B',
        100,
        "AAPL",
        PX - 200,
        b'E',
        b'Y',
        Options::default(),
    )
    .unwrap();
    expect(&mut mm1, (b'A', 8, u16::from(b'E')));

    // The close: the Day order is canceled with reason E (closed); nothing else. A Day
    // order sent just after the close's time (3 ms, less than the gateway's timer period)
    // comes after the close in the journal and is refused: the transition goes first.
    let close = config.schedule().unwrap().transitions(day)[3];
    assert_eq!(close.1, ironmatch::book::DayEvent::EndOfMarketHours);
    while ironmatch::venue::epoch_ns() < close.0 + 3_000_000 {
        std::thread::sleep(Duration::from_micros(200));
    }
    mm1.limit(9, b'B', 100, "AAPL", PX - 100).unwrap();
    expect(&mut mm1, (b'C', 7, u16::from(b'E')));
    expect(&mut mm1, (b'J', 9, 0x0002));
    mm1.enter(
        10,
        b'B',
        100,
        "AAPL",
        PX - 300,
        b'E',
        b'Y',
        Options::default(),
    )
    .unwrap();
    expect(&mut mm1, (b'A', 10, u16::from(b'E')));

    // End of system hours: OUCH System Event E, every resting order canceled (closed),
    // oldest first; then End of Session as the day ends and the engine stops.
    expect(&mut mm1, (b'S', 0, u16::from(b'E')));
    for r in [3, 8, 10] {
        expect(&mut mm1, (b'C', r, u16::from(b'E')));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match mm1.recv(Duration::from_millis(100)).unwrap() {
            Some(Received::EndOfSession) => break,
            Some(Received::Sequenced { msg, .. }) => panic!("after the day: {msg:?}"),
            _ if Instant::now() > deadline => panic!("no End of Session"),
            _ => {}
        }
    }
    assert!(server.day_over());
    server.wait().unwrap();

    // The day's journal replays, and its feed carries the whole day.
    let day_dir = dir.join(day.to_string());
    replay_verifies(&day_dir, &config);
    assert_eq!(feed_system_events(&day_dir), b"OSQMEC");
    // The expired GTT order left the feed with an Order Delete, after its execution.
    let bytes = std::fs::read(day_dir.join("feed.itch")).unwrap();
    let gtt_on_feed: Vec<char> = ironmatch::wire::itch::file_messages(&bytes)
        .map(|m| Message::decode(m.unwrap()).unwrap())
        .filter_map(|m| match m.body {
            Body::AddOrder { order_ref, .. } if order_ref == gtt_ref => Some('A'),
            Body::OrderExecuted { order_ref, .. } if order_ref == gtt_ref => Some('E'),
            Body::OrderDelete { order_ref } if order_ref == gtt_ref => Some('D'),
            _ => None,
        })
        .collect();
    assert_eq!(gtt_on_feed, ['A', 'E', 'D']);

    // A restart after the end of system hours starts the next day: a new journal and
    // session; logins wait for its start (midnight); the previous day stays as it was.
    let server = Server::start(&config).unwrap();
    assert_eq!(server.day(), Some(day.tomorrow().unwrap()));
    let mut c = Client::connect(server.local_addr()).unwrap();
    assert_eq!(
        c.login("MM1", "pw1", 1).unwrap(),
        Received::LoginRejected(b'S')
    );
    server.stop().unwrap();
    assert!(dir.join(day.tomorrow().unwrap().to_string()).is_dir());
    // So does a restart whose configuration moved the end of system hours past now: the
    // day's journal ended it, so the day is over (it started that day again, idle).
    let (later_end, _) = day_config(&dir, [-30.0, -20.0, -10.0, 600.0]);
    let server = Server::start(&later_end).unwrap();
    assert_eq!(server.day(), Some(day.tomorrow().unwrap()));
    server.stop().unwrap();
    replay_verifies(&day_dir, &config);
    // `replay` pointed at the journal directory itself names the days it holds.
    let config_path = dir.join("day.toml");
    std::fs::write(&config_path, day_config_text(&dir, &config)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["replay", "--journal", dir.to_str().unwrap(), "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("trading days {day}, {}", day.tomorrow().unwrap())),
        "{said}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A compressed day of `offsets` (see [`day_config`]) in `dir`: once its market opened,
/// MM1 has a Day order (1, bid at 150.00) and a GTX order (2, bid at 149.99) resting.
/// Returns the configuration, the engine, its day and MM1's session.
fn day_with_two_orders(
    dir: &std::path::Path,
    offsets: [f64; 4],
) -> (Config, Server, jiff::civil::Date, Client) {
    let t0 = Instant::now();
    let (config, _) = day_config(dir, offsets);
    let server = Server::start(&config).unwrap();
    let day = server.day().unwrap();
    sleep_until(t0 + Duration::from_secs_f64(0.9));
    let mut mm1 = login(&server, "MM1", "pw1");
    expect(&mut mm1, (b'S', 0, u16::from(b'S')));
    mm1.limit(1, b'B', 100, "AAPL", PX).unwrap();
    expect(&mut mm1, (b'A', 1, u16::from(b'0')));
    mm1.enter(
        2,
        b'B',
        100,
        "AAPL",
        PX - 100,
        b'5',
        b'Y',
        Options::default(),
    )
    .unwrap();
    expect(&mut mm1, (b'A', 2, u16::from(b'5')));
    (config, server, day, mm1)
}

#[test]
fn a_restart_in_the_middle_of_the_day_resumes_the_schedule() {
    let dir = temp_dir("day-restart");
    let (config, server, day, mm1) = day_with_two_orders(&dir, [0.3, 0.6, 4.0, 5.5]);
    // The member stays connected through the stop: a client gone first would have its
    // Day orders canceled on disconnect (MM1 cancels on disconnect), if the gateway saw
    // the close before the stop (a race that failed this test once in CI).
    server.stop().unwrap();
    drop(mm1);

    // Same day, same session: the stream resumes; the market is still open.
    let server = Server::start(&config).unwrap();
    assert_eq!(server.day(), Some(day));
    let mut mm1 = login(&server, "MM1", "pw1");
    for expected in [(b'S', 0, u16::from(b'S')), (b'A', 1, 48), (b'A', 2, 53)] {
        expect(&mut mm1, expected);
    }
    mm1.limit(3, b'B', 100, "AAPL", PX - 200).unwrap();
    expect(&mut mm1, (b'A', 3, u16::from(b'0')));
    // The close still comes, once: both Day orders canceled.
    expect(&mut mm1, (b'C', 1, u16::from(b'E')));
    expect(&mut mm1, (b'C', 3, u16::from(b'E')));
    expect(&mut mm1, (b'S', 0, u16::from(b'E')));
    expect(&mut mm1, (b'C', 2, u16::from(b'E')));
    server.wait().unwrap();
    let day_dir = dir.join(day.to_string());
    replay_verifies(&day_dir, &config);
    assert_eq!(
        feed_system_events(&day_dir),
        b"OSQMEC",
        "each transition once"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A stop in the middle of the day is not the end of the session: clients' connections
/// close without End of Session, and the feed sends none, since the next start continues
/// the same session (a connector that honours End of Session would otherwise stop
/// reconnecting for the rest of the day). After the restart the member logs in again and
/// the stream goes on from where it was.
#[test]
fn a_stop_in_the_middle_of_the_day_does_not_end_the_session() {
    use ironmatch::wire::moldudp64::Packet;
    let dir = temp_dir("day-stop");
    let t0 = Instant::now();
    let feed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (config, _) = day_config(&dir, [0.2, 0.4, 120.0, 121.0]);
    let text = day_config_text(&dir, &config).replace(
        "destination = \"127.0.0.1:9\"",
        &format!("destination = \"{}\"", feed.local_addr().unwrap()),
    );
    let config = Config::parse(&text, "day config with a feed").unwrap();
    let server = Server::start(&config).unwrap();
    sleep_until(t0 + Duration::from_secs_f64(0.6));
    let mut mm1 = login(&server, "MM1", "pw1");
    expect(&mut mm1, (b'S', 0, u16::from(b'S')));
    mm1.limit(1, b'B', 100, "AAPL", PX).unwrap();
    expect(&mut mm1, (b'A', 1, u16::from(b'0')));
    server.stop().unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match mm1.recv(Duration::from_millis(100)) {
            Err(_) => break,
            Ok(Some(Received::EndOfSession)) => panic!("End of Session in the middle of the day"),
            Ok(_) if Instant::now() > deadline => panic!("the connection stays open"),
            Ok(_) => {}
        }
    }
    feed.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut packets = 0;
    while let Ok(n) = feed.recv(&mut buf) {
        let p = Packet::parse(&buf[..n]).unwrap();
        assert!(!p.is_end_of_session(), "the feed's End of Session mid-day");
        packets += 1;
    }
    assert!(packets > 0, "the feed sent the day's start and the order");

    let server = Server::start(&config).unwrap();
    let mut mm1 = Client::connect(server.local_addr()).unwrap();
    match mm1.login("MM1", "pw1", 3).unwrap() {
        Received::LoginAccepted { next_seq, .. } => assert_eq!(next_seq, 3),
        other => panic!("{other:?}"),
    }
    mm1.limit(2, b'B', 100, "AAPL", PX - 100).unwrap();
    expect(&mut mm1, (b'A', 2, u16::from(b'0')));
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// A good-till-time order resting across a restart expires at its time although nothing
/// else happens: the recovered matcher's deadline is timed from the start (it used to be
/// published only after the first command, so on a quiet venue the order stayed on the
/// book, and its owner got no Canceled, until some other command came). The day's close is
/// far away, so no transition comes to wake the matcher either.
#[test]
fn a_good_till_time_order_expires_after_a_restart_with_no_other_command() {
    let dir = temp_dir("day-gtt-restart");
    let t0 = Instant::now();
    // MM3 has no cancel on disconnect: its order outlives its connection.
    let (config, _) = day_config(&dir, [0.2, 0.4, 120.0, 121.0]);
    let server = Server::start(&config).unwrap();
    sleep_until(t0 + Duration::from_secs_f64(0.6));
    let mut mm3 = login(&server, "MM3", "pw3");
    expect(&mut mm3, (b'S', 0, u16::from(b'S')));
    mm3.enter(1, b'B', 100, "AAPL", PX, b'6', b'Y', gtt(2))
        .unwrap();
    expect(&mut mm3, (b'A', 1, u16::from(b'6')));
    let entered = Instant::now();
    drop(mm3);
    server.stop().unwrap();

    let server = Server::start(&config).unwrap();
    let mut mm3 = login(&server, "MM3", "pw3");
    for expected in [(b'S', 0, u16::from(b'S')), (b'A', 1, u16::from(b'6'))] {
        expect(&mut mm3, expected);
    }
    // Due 2 s after entry; `expect` waits up to 5 s more.
    sleep_until(entered + Duration::from_secs(2));
    expect(&mut mm3, (b'C', 1, u16::from(b'T')));
    drop(mm3);
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// `serve` itself: at the end of a compressed day it drains, says so, and starts the next
/// day (new journal directory, new session name, the admin endpoint bound again), and
/// SIGTERM then stops it with exit code 0.
#[test]
fn serve_starts_the_next_day_by_itself() {
    use std::io::{BufRead, BufReader, Write};
    let dir = temp_dir("day-serve");
    let zone = noon_zone();
    let [s, q, m, e] = [0.5, 0.8, 1.1, 1.4].map(|o| local_in(&zone, o));
    let text = format!(
        "{}\n[venue]\ntimezone = \"{zone}\"\nsystem_start = \"{s}\"\nmarket_open = \"{q}\"\nmarket_close = \"{m}\"\nsystem_end = \"{e}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        test_config_text(&dir, "")
    );
    let path = dir.join("ironmatch.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < 4 && Instant::now() < deadline {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        lines.push(line.trim().to_string());
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "serve exits 0 on SIGTERM: {exit:?} after {lines:?}"
    );
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::get(&zone).unwrap())
        .date();
    let tomorrow = today.tomorrow().unwrap();
    let session = |d: jiff::civil::Date| ironmatch::venue::session_name("IRONMATCH", d);
    assert!(lines.len() == 4, "{lines:?}");
    assert!(
        lines[0].contains(&format!("trading day {today}")),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(&format!("sessions named {}", session(today))));
    assert!(lines[0].contains("admin http://127.0.0.1:"), "{}", lines[0]);
    assert_eq!(lines[1], "ironmatch stopped");
    assert_eq!(
        lines[2],
        "ironmatch: the trading day ended; starting the next"
    );
    assert!(
        lines[3].contains(&format!("trading day {tomorrow}")),
        "{}",
        lines[3]
    );
    assert!(lines[3].contains(&format!("sessions named {}", session(tomorrow))));
    assert!(lines[3].contains("admin http://127.0.0.1:"), "{}", lines[3]);
    assert!(dir.join(today.to_string()).is_dir());
    assert!(dir.join(tomorrow.to_string()).is_dir());
    std::fs::remove_dir_all(&dir).ok();
}

/// The engine is down at the end of a day: the next start (the next day) first ends that
/// day's journal with the transitions it missed, at their scheduled times, with what they
/// do: the close cancels the Day order that rested at the stop, the end of system hours
/// the GTX one. The day's journal then ends as a day that ran to its end, and replays.
#[test]
fn a_day_the_engine_was_down_at_the_end_of_is_ended_at_the_next_start() {
    use ironmatch::book::{DayEvent, EventBody};
    use ironmatch::journal::{Entry, scan_journal};
    let dir = temp_dir("day-down");
    let t0 = Instant::now();
    let (config, server, day, mut mm1) = day_with_two_orders(&dir, [0.3, 0.6, 3.0, 3.5]);
    // Good for a second: it expires while the engine is down, before the close.
    mm1.enter(3, b'B', 100, "AAPL", PX - 200, b'6', b'Y', gtt(1))
        .unwrap();
    expect(&mut mm1, (b'A', 3, u16::from(b'6')));
    // Down from before the expiry and the close until after the day's end.
    server.stop().unwrap();
    drop(mm1);
    let day_dir = dir.join(day.to_string());
    let events = || {
        let mut events = Vec::new();
        scan_journal(&day_dir, None, false, None, |_, entry| {
            if let Entry::Event(e) = entry {
                events.push((e.ts.0, e.body));
            }
            Ok(())
        })
        .unwrap();
        events
    };
    let before = events().len();
    sleep_until(t0 + Duration::from_secs_f64(4.0));
    let server = Server::start(&config).unwrap();
    assert_eq!(server.day(), Some(day.tomorrow().unwrap()), "the next day");
    server.stop().unwrap();

    let after = events();
    let (ended, times): (Vec<String>, Vec<u64>) = after[before..]
        .iter()
        .filter_map(|(ts, e)| match *e {
            EventBody::SystemEvent { event } => Some((format!("{event:?}"), *ts)),
            EventBody::Canceled { user_ref, .. } => {
                Some((format!("Canceled {}", { user_ref.0 }), *ts))
            }
            _ => None,
        })
        .unzip();
    assert_eq!(
        ended,
        [
            "Canceled 3".to_string(),
            format!("{:?}", DayEvent::EndOfMarketHours),
            "Canceled 1".to_string(),
            format!("{:?}", DayEvent::EndOfSystemHours),
            "Canceled 2".to_string(),
            format!("{:?}", DayEvent::EndOfMessages),
        ],
        "the day's end, as the journal now has it"
    );
    assert!(
        times[0] < times[1] && times.windows(2).all(|w| w[0] <= w[1]),
        "the expiry at its own time, before the close; times in order: {times:?}"
    );
    replay_verifies(&day_dir, &config);
    std::fs::remove_dir_all(&dir).ok();
}

/// The day before ended under halts: the venue halt (the kill switch), an instrument an
/// operator halted, paused or put in quotation only. The new day's journal starts under them,
/// before its start of messages, so nothing trades until an operator lifts them; the feed's
/// directory after the day's `O` announces each instrument's state with the reason it was
/// given (`O1` for the venue halt), with no Trading Action ahead of the `O`; the day
/// replays, and a restart takes them from the journal (not again from the day before). The
/// day before's journal is read for its operator's commands, so one written with another
/// book configuration carries them too. A day before that ended with none, or whose journal
/// is damaged, leaves the next one trading.
#[test]
fn the_halts_the_day_before_ended_under_hold_the_next_day() {
    use ironmatch::book::{
        Command, CommandBody, DayEvent, Matcher, OperatorAction, TradingState, VenueCommand,
    };
    use ironmatch::journal::{self, Entry, FsyncMode, Header, JournalWriter};
    use ironmatch::types::{OwnerId, Symbol, Timestamp};
    let aapl = Symbol::from_str_padded("AAPL").unwrap();
    // (venue halt, AAPL's own state and reason, yesterday's journal: `S`ame configuration,
    // `O`ther configuration, `D`amaged) at yesterday's end; then the directory's Trading
    // Action for AAPL today, and whether a buy that crosses nothing is accepted.
    let halted = Some((TradingState::Halted, *b"T1  "));
    for (venue, own, journal_kind, directory, accepted) in [
        (true, None, b'S', (b'H', *b"O1  "), false),
        (true, halted, b'S', (b'H', *b"T1  "), false),
        (false, halted, b'S', (b'H', *b"T1  "), false),
        (
            false,
            Some((TradingState::QuotationOnly, *b"T3  ")),
            b'S',
            (b'Q', *b"T3  "),
            true,
        ),
        (
            false,
            Some((TradingState::Paused, *b"MWC1")),
            b'S',
            (b'P', *b"MWC1"),
            false,
        ),
        (false, None, b'S', (b'T', *b"    "), true),
        // Halted, then lifted: the last state the operator set counts.
        (
            false,
            Some((TradingState::Trading, *b"    ")),
            b'S',
            (b'T', *b"    "),
            true,
        ),
        (true, halted, b'O', (b'H', *b"T1  "), false),
        (true, halted, b'D', (b'T', *b"    "), true),
    ] {
        let case = format!(
            "venue halt {venue}, AAPL {own:?}, journal {}",
            char::from(journal_kind)
        );
        let dir = temp_dir("day-carry");
        let t0 = Instant::now();
        let (config, zone) = day_config(&dir, [0.3, 0.6, 30.0, 31.0]);
        let today = jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::get(&zone).unwrap())
            .date();
        // Yesterday's journal, as an engine whose operator acted and that stopped left it.
        let yesterday = config.for_day(today.yesterday().unwrap());
        let book = yesterday.book_config().unwrap();
        let ydir = std::path::Path::new(&yesterday.journal.dir);
        std::fs::create_dir_all(ydir).unwrap();
        let header = Header {
            instance: 9,
            first_seq: 1,
            fingerprint: journal::fingerprint(&book) ^ u64::from(journal_kind == b'O'),
            created_ns: 0,
        };
        let mut writer =
            JournalWriter::open(ydir, header, None, 1, FsyncMode::Never, 1 << 20).unwrap();
        let mut matcher = Matcher::new(&book);
        let mut commands = vec![
            VenueCommand::SystemEvent(DayEvent::StartOfMessages),
            VenueCommand::SystemEvent(DayEvent::StartOfSystemHours),
        ];
        let set_state = |request, state, reason| VenueCommand::Operator {
            request,
            action: OperatorAction::SetState {
                symbol: aapl,
                state,
                reason,
                cancel_resting: false,
            },
        };
        if let Some((state, reason)) = own {
            if state == TradingState::Trading {
                commands.push(set_state(5, TradingState::Halted, *b"T1  "));
            }
            commands.push(set_state(6, state, reason));
        }
        commands.push(VenueCommand::Operator {
            request: 7,
            action: OperatorAction::VenueHalt(venue),
        });
        for (i, venue) in commands.into_iter().enumerate() {
            let cmd = Command {
                ts: Timestamp(1_000 + i as u64),
                owner: OwnerId(0),
                body: CommandBody::Venue(venue),
            };
            let mut events = Vec::new();
            matcher.apply(&cmd, &mut events);
            writer.stage(&Entry::Command(cmd));
            for e in &events {
                writer.stage(&Entry::Event(*e));
            }
            writer.commit().unwrap();
        }
        drop(writer);
        if journal_kind == b'D' {
            // A bit flipped in the first record, valid ones after it: damage, not a tear.
            let path = &journal::segment_paths(ydir).unwrap()[0];
            let mut bytes = std::fs::read(path).unwrap();
            bytes[journal::HEADER_LEN + 20] ^= 0x40;
            std::fs::write(path, &bytes).unwrap();
        }

        let server = Server::start(&config).unwrap();
        assert_eq!(server.day(), Some(today));
        sleep_until(t0 + Duration::from_secs_f64(0.9));
        let mut mm1 = login(&server, "MM1", "pw1");
        expect(&mut mm1, (b'S', 0, u16::from(b'S')));
        mm1.limit(1, b'B', 100, "AAPL", PX).unwrap();
        if accepted {
            expect(&mut mm1, (b'A', 1, u16::from(b'0')));
        } else {
            expect(&mut mm1, (b'J', 1, 0x0007));
        }
        server.stop().unwrap();
        drop(mm1);
        // A restart recovers them; it does not carry them again.
        Server::start(&config).unwrap().stop().unwrap();

        let day_dir = dir.join(today.to_string());
        let mut carried = 0;
        journal::scan_journal(&day_dir, None, false, None, |_, entry| {
            if let Entry::Command(Command {
                body: CommandBody::Venue(VenueCommand::Operator { request: 0, .. }),
                ..
            }) = entry
            {
                carried += 1;
            }
            Ok(())
        })
        .unwrap();
        let own_carried = own.is_some_and(|(state, _)| state != TradingState::Trading);
        let wanted =
            usize::from(journal_kind != b'D') * (usize::from(venue) + usize::from(own_carried));
        assert_eq!(carried, wanted, "{case}: commands carried");
        let bytes = std::fs::read(day_dir.join("feed.itch")).unwrap();
        let messages: Vec<Message> = ironmatch::wire::itch::file_messages(&bytes)
            .map(|m| Message::decode(m.unwrap()).unwrap())
            .collect();
        assert!(
            matches!(messages[0].body, Body::SystemEvent { code: b'O' }),
            "{case}: the day's stream opens with its O: {:?}",
            messages[0]
        );
        let actions: Vec<(u8, [u8; 4])> = messages
            .iter()
            .filter_map(|m| match m.body {
                Body::TradingAction { state, reason, .. } => Some((state, reason)),
                _ => None,
            })
            .collect();
        assert_eq!(actions, [directory], "{case}");
        replay_verifies(&day_dir, &config);
        std::fs::remove_dir_all(&dir).ok();
    }
}
