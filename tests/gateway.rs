//! Order entry over real loopback TCP: each test starts its own engine on an ephemeral
//! port and stops it.

mod common;

use std::time::Duration;

use common::*;
use ironmatch::client::{Client, Received};
use ironmatch::server::Server;
use ironmatch::wire::ouch::{Options, Outbound, outbound};
use ironmatch::wire::soupbin::{self, kind};

const PX: u64 = 1_500_000; // $150.00

#[test]
fn the_engine_runs_in_the_threading_mode_the_tests_ask_for() {
    use ironmatch::pipeline::Threading;
    let server = common::start();
    let (mode, why) = server.threading();
    match Threading::parse(&common::threading()).unwrap() {
        Threading::Auto => assert_ne!(mode, Threading::Auto, "auto is resolved: {why}"),
        asked => assert_eq!(mode, asked, "{why}"),
    }
    server.stop().unwrap();
}

#[test]
fn login_accepted_rejected_and_one_session_per_user() {
    let server = start();
    let addr = server.local_addr();
    let mut first = login(addr, "MM1", "pw1", 1);
    let mut bad = Client::connect(addr).unwrap();
    assert_eq!(
        bad.login("MM1", "wrong", 1).unwrap(),
        Received::LoginRejected(b'A')
    );
    assert!(
        bad.recv(Duration::from_secs(2)).is_err(),
        "closed after a reject"
    );
    let mut unknown = Client::connect(addr).unwrap();
    assert_eq!(
        unknown.login("NOBODY", "pw1", 1).unwrap(),
        Received::LoginRejected(b'A')
    );
    let mut second = Client::connect(addr).unwrap();
    assert_eq!(
        second.login("mm1", "pw1", 1).unwrap(),
        Received::LoginRejected(b'S')
    );
    // The first session is untouched.
    first.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut first).0, outbound::ACCEPTED);
    server.stop().unwrap();
}

#[test]
fn a_debug_packet_before_login_is_ignored() {
    let server = start();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_packet(kind::DEBUG, b"connector 1.2 starting")
        .unwrap();
    assert!(
        matches!(
            c.login("MM1", "pw1", 1).unwrap(),
            Received::LoginAccepted { .. }
        ),
        "SoupBinTCP: a Debug packet is accepted and ignored"
    );
    server.stop().unwrap();
}

/// SoupBinTCP receivers ignore Debug packets whatever their length: one longer than
/// `packet_len_max` (the longest a length field allows), before login with its length sent
/// apart from the rest and after login followed by an order, is read through, and the
/// packets after it count. (Such a packet closed the session as too long.)
#[test]
fn a_debug_packet_of_any_length_is_ignored() {
    let server = start();
    let mut debug = vec![0xFF, 0xFF, kind::DEBUG];
    debug.extend(std::iter::repeat_n(b'.', 65_534));
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_raw(&debug[..2]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(&debug[2..]).unwrap();
    assert!(
        matches!(
            c.login("MM1", "pw1", 1).unwrap(),
            Received::LoginAccepted { .. }
        ),
        "accepted after a long Debug packet"
    );
    c.send_raw(&debug).unwrap();
    c.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut c).0, outbound::ACCEPTED);
    server.stop().unwrap();
}

#[test]
fn nothing_but_a_login_before_login() {
    let server = start();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_packet(kind::UNSEQUENCED, b"Q").unwrap();
    match c.recv(Duration::from_secs(2)).unwrap() {
        Some(Received::Debug(why)) => assert!(why.contains("Login"), "{why}"),
        other => panic!("expected a reason, got {other:?}"),
    }
    assert!(c.recv(Duration::from_secs(2)).is_err());
    server.stop().unwrap();
}

#[test]
fn silent_connections_are_dropped_and_idle_sessions_get_heartbeats() {
    let server = start();
    let addr = server.local_addr();
    let mut silent = Client::connect(addr).unwrap();
    let mut c = login(addr, "MM1", "pw1", 1);
    assert_eq!(
        c.recv(Duration::from_secs(2)).unwrap(),
        Some(Received::Heartbeat)
    );
    // No login within 400 ms: closed.
    assert!(silent.recv(Duration::from_secs(3)).is_err());
    // A logged-in client silent for 1.5 s: closed too.
    let closed = (0..40).any(|_| c.recv(Duration::from_millis(100)).is_err());
    assert!(closed, "a silent client is disconnected");
    server.stop().unwrap();
}

#[test]
fn enter_is_accepted_with_every_field_echoed() {
    let server = start();
    let mut c = login(server.local_addr(), "MM1", "pw1", 1);
    let options = Options {
        min_qty: Some(10),
        ..Options::default()
    };
    c.enter(7, b'S', 300, "AAPL", PX, b'0', b'Y', options)
        .unwrap();
    let (seq, msg) = next(&mut c);
    assert_eq!(seq, 1);
    let Outbound::Accepted(a, o) = decode(&msg) else {
        panic!("{msg:?}")
    };
    assert_eq!(
        (a.user_ref.get(), a.side, a.qty.get(), a.price.get()),
        (7, b'S', 300, PX)
    );
    assert_eq!(
        (&a.symbol, a.order_state, &a.clordid[..2]),
        (b"AAPL    ", b'L', &b"C7"[..])
    );
    assert_eq!((o.firm, o.min_qty), (Some(*b"MMA "), Some(10)));
    server.stop().unwrap();
}

#[test]
fn two_sessions_cross_and_both_sides_hear_of_it() {
    let server = start();
    let addr = server.local_addr();
    let mut seller = login(addr, "MM1", "pw1", 1);
    let mut buyer = login(addr, "MM2", "pw2", 1);
    seller.limit(1, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut seller).0, outbound::ACCEPTED);
    buyer.limit(1, b'B', 60, "AAPL", PX + 100).unwrap();
    assert_eq!(next_type(&mut buyer).0, outbound::ACCEPTED);
    let (_, maker) = next(&mut seller);
    let (_, taker) = next(&mut buyer);
    let (Outbound::Executed(m, _), Outbound::Executed(t, _)) = (decode(&maker), decode(&taker))
    else {
        panic!("executions expected");
    };
    assert_eq!((m.qty.get(), m.price.get(), m.liquidity), (60, PX, b'A'));
    assert_eq!((t.qty.get(), t.price.get(), t.liquidity), (60, PX, b'R'));
    assert_eq!(m.match_number, t.match_number);
    server.stop().unwrap();
}

/// Order State on Order Accepted: `L` for an order that rests, `D` for an IOC or a market
/// order, which never does (OUCH: accepted but already out).
#[test]
fn ioc_and_market_orders_are_accepted_dead() {
    let server = start();
    let addr = server.local_addr();
    let mut seller = login(addr, "MM1", "pw1", 1);
    let mut buyer = login(addr, "MM2", "pw2", 1);
    let state_of_accepted = |c: &mut Client| {
        let (_, msg) = next(c);
        let Outbound::Accepted(a, _) = decode(&msg) else {
            panic!("not an Order Accepted: {msg:?}")
        };
        a.order_state
    };
    // A buy of AAPL, displayed, with time in force `tif`.
    let buy = |c: &mut Client, user_ref, qty, price, tif| {
        c.enter(
            user_ref,
            b'B',
            qty,
            "AAPL",
            price,
            tif,
            b'Y',
            Options::default(),
        )
        .unwrap()
    };
    seller.limit(1, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(state_of_accepted(&mut seller), b'L');
    // An IOC that trades in part (its rest canceled), then one that finds nothing: both
    // dead on arrival.
    buy(&mut buyer, 1, 140, PX, b'3');
    assert_eq!(state_of_accepted(&mut buyer), b'D');
    assert_eq!(next_type(&mut buyer).0, outbound::EXECUTED);
    assert_eq!(next_type(&mut buyer).0, outbound::CANCELED);
    assert_eq!(next_type(&mut seller).0, outbound::EXECUTED);
    seller.limit(2, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(state_of_accepted(&mut seller), b'L');
    buy(&mut buyer, 2, 10, PX - 100, b'3');
    assert_eq!(state_of_accepted(&mut buyer), b'D');
    assert_eq!(next_type(&mut buyer).0, outbound::CANCELED);
    // A market order (a price at or above $200,000), time in force Day: dead too.
    buy(&mut buyer, 3, 10, 2_000_000_000, b'0');
    assert_eq!(state_of_accepted(&mut buyer), b'D');
    assert_eq!(next_type(&mut buyer).0, outbound::EXECUTED);
    // A Day limit order that rests: live.
    buyer.limit(4, b'B', 10, "AAPL", PX - 100).unwrap();
    assert_eq!(state_of_accepted(&mut buyer), b'L');
    server.stop().unwrap();
}

#[test]
fn cancel_reduce_keeps_priority_over_the_wire() {
    let server = start();
    let addr = server.local_addr();
    let mut a = login(addr, "MM1", "pw1", 1);
    let mut b = login(addr, "MM3", "pw3", 1);
    let mut taker = login(addr, "MM2", "pw2", 1);
    a.limit(1, b'S', 100, "AAPL", PX).unwrap();
    next(&mut a);
    b.limit(1, b'S', 100, "AAPL", PX).unwrap();
    next(&mut b);
    a.cancel(1, 40).unwrap();
    let msg = next(&mut a).1;
    let Outbound::Canceled(c) = decode(&msg) else {
        panic!()
    };
    assert_eq!((c.qty.get(), c.reason), (60, b'U'));
    taker.limit(1, b'B', 40, "AAPL", PX).unwrap();
    next(&mut taker);
    assert_eq!(
        next_type(&mut a).0,
        outbound::EXECUTED,
        "the reduced order still trades first"
    );
    quiet(&mut b, Duration::from_millis(200));
    server.stop().unwrap();
}

#[test]
fn replace_and_mass_cancel() {
    let server = start();
    let mut c = login(server.local_addr(), "MM1", "pw1", 1);
    c.limit(1, b'B', 100, "AAPL", PX).unwrap();
    next(&mut c);
    c.replace(1, 2, 150, PX - 100).unwrap();
    let msg = next(&mut c).1;
    let Outbound::Replaced(r, _) = decode(&msg) else {
        panic!()
    };
    assert_eq!(
        (
            r.orig_user_ref.get(),
            r.user_ref.get(),
            r.qty.get(),
            r.price.get()
        ),
        (1, 2, 150, PX - 100)
    );
    // A Replace the gateway refuses (a quantity above OUCH's 999,999) is invalid, and as
    // OUCH has it the live original is canceled after the rejection (it was left live).
    c.limit(20, b'B', 100, "AAPL", PX - 200).unwrap();
    next(&mut c);
    c.replace(20, 21, 2_000_000, PX - 200).unwrap();
    let msg = next(&mut c).1;
    let Outbound::Rejected(j) = decode(&msg) else {
        panic!("{msg:?}")
    };
    assert_eq!((j.user_ref.get(), j.reason.get()), (21, 0x001E));
    let msg = next(&mut c).1;
    let Outbound::Canceled(x) = decode(&msg) else {
        panic!("{msg:?}")
    };
    assert_eq!((x.user_ref.get(), x.qty.get(), x.reason), (20, 100, b'Z'));
    c.limit(23, b'S', 100, "AAPL", PX + 500).unwrap();
    next(&mut c);
    // A mass cancel limited to a side: sell short names the ask side, and the response
    // echoes the side as it was sent; one without a side takes the rest.
    let mass_cancel = |c: &mut Client, user_ref: u32, side: Option<u8>| {
        match side {
            Some(side) => c.mass_cancel_side(user_ref, "MMA", side).unwrap(),
            None => c.mass_cancel(user_ref, "MMA").unwrap(),
        }
        let mut canceled = Vec::new();
        loop {
            match decode(&next(c).1) {
                Outbound::Canceled(x) => canceled.push(x.user_ref.get()),
                Outbound::MassCancelResponse(m, options) => {
                    assert_eq!(
                        (m.user_ref.get(), &m.firm, options.side),
                        (user_ref, b"MMA ", side)
                    );
                    return canceled;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    assert_eq!(mass_cancel(&mut c, 24, Some(b'T')), [23]);
    assert_eq!(mass_cancel(&mut c, 25, None), [2]);
    server.stop().unwrap();
}

#[test]
fn a_repeated_reference_and_a_foreign_cancel_are_rejected_without_effect() {
    let server = start();
    let addr = server.local_addr();
    let mut a = login(addr, "MM1", "pw1", 1);
    let mut b = login(addr, "MM2", "pw2", 1);
    a.limit(5, b'B', 100, "AAPL", PX).unwrap();
    next(&mut a);
    a.limit(5, b'B', 100, "AAPL", PX).unwrap();
    let msg = next(&mut a).1;
    let Outbound::Rejected(r) = decode(&msg) else {
        panic!()
    };
    assert_eq!(r.user_ref.get(), 5);
    // MM2 names MM1's reference: for MM2 there is no such order.
    b.cancel(5, 0).unwrap();
    let msg = next(&mut b).1;
    let Outbound::Rejected(r) = decode(&msg) else {
        panic!()
    };
    assert_eq!(r.reason.get(), 0x0010);
    // MM1's order is still there: MM2 can trade with it.
    b.limit(6, b'S', 100, "AAPL", PX).unwrap();
    next(&mut b);
    assert_eq!(next_type(&mut a).0, outbound::EXECUTED);
    server.stop().unwrap();
}

#[test]
fn new_orders_beyond_the_throttle_are_rejected_but_cancels_pass() {
    let server = start();
    let mut c = login(server.local_addr(), "SLOW", "pw4", 1);
    for r in 1..=6 {
        c.limit(r, b'B', 100, "AAPL", PX - u64::from(r) * 100)
            .unwrap();
    }
    let mut accepted = 0;
    let mut throttled = 0;
    for _ in 0..6 {
        match decode(&next(&mut c).1) {
            Outbound::Accepted(..) => accepted += 1,
            Outbound::Rejected(r) if r.reason.get() == 0x000F => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        accepted >= 3 && throttled >= 1,
        "burst 3 at 2/s: {accepted} accepted, {throttled} throttled"
    );
    c.cancel(1, 0).unwrap();
    assert_eq!(
        next_type(&mut c).0,
        outbound::CANCELED,
        "cancels are exempt"
    );
    server.stop().unwrap();
}

#[test]
fn login_with_a_sequence_number_replays_exactly_the_missed_messages() {
    let server = start();
    let addr = server.local_addr();
    let mut c = login(addr, "MM1", "pw1", 1);
    for r in 1..=5 {
        c.limit(r, b'B', 100, "AAPL", PX - u64::from(r) * 100)
            .unwrap();
    }
    let all: Vec<(u64, Vec<u8>)> = (0..5).map(|_| next(&mut c)).collect();
    assert_eq!(all.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    c.logout().unwrap();
    drop(c);
    // MM1 has cancel-on-disconnect: messages 6..10 are the cancels, sent while away.
    let (mut again, accepted) = common::login_after_close_answered(addr, "MM1", "pw1", 3);
    assert_eq!(
        accepted,
        Received::LoginAccepted {
            session: "IRONMATCH".into(),
            next_seq: 3
        }
    );
    let replayed: Vec<(u64, Vec<u8>)> = (0..8).map(|_| next(&mut again)).collect();
    assert_eq!(&replayed[..3], &all[2..], "messages 3 to 5, byte for byte");
    assert!(
        replayed[3..]
            .iter()
            .all(|(_, m)| m[0] == outbound::CANCELED)
    );
    assert_eq!(replayed.last().unwrap().0, 10);
    // Then the live stream continues the numbering.
    again.limit(6, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next(&mut again).0, 11);
    server.stop().unwrap();
}

/// A requested sequence number of 20 digits, above any 64-bit number, is past the end as
/// any other: the login is accepted with the next number (it was refused `S`, a bad
/// number, which SoupBinTCP keeps for an unknown session).
#[test]
fn a_twenty_digit_sequence_number_is_past_the_end() {
    let server = start();
    let mut c = login(server.local_addr(), "MM3", "pw3", 1);
    c.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next(&mut c).0, 1);
    c.logout().unwrap();
    drop(c);
    let mut request = vec![0, 47, b'L'];
    request.extend_from_slice(b"MM3   pw3       ");
    request.extend_from_slice(b"          ");
    request.extend_from_slice(b"99999999999999999999");
    assert_eq!(request.len(), 49);
    let mut c = ironmatch::client::Client::connect(server.local_addr()).unwrap();
    c.send_raw(&request).unwrap();
    assert_eq!(
        c.recv(std::time::Duration::from_secs(5)).unwrap(),
        Some(Received::LoginAccepted {
            session: "IRONMATCH".into(),
            next_seq: 2
        })
    );
    server.stop().unwrap();
}

/// A day's stream many times the store's chunk (65,536 bytes in the tests' configuration),
/// so most of it is written out to the store's file: a login from message 1, one from the
/// middle, and one after a restart (the store rebuilt from the journal) each get the
/// messages sent live, byte for byte.
#[test]
fn a_replay_of_more_than_the_store_keeps_in_memory_is_exact() {
    let dir = temp_dir("store").hold();
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let addr = server.local_addr();
    // MM3 has no cancel-on-disconnect: its stream is only its own orders' messages.
    let mut c = login(addr, "MM3", "pw3", 1);
    let mut live = Vec::new();
    for batch in 0..30u32 {
        for r in batch * 100 + 1..=batch * 100 + 100 {
            c.limit(r, b'B', 100, "AAPL", PX - u64::from(r % 50) * 100)
                .unwrap();
            c.cancel(r, 0).unwrap();
        }
        for _ in 0..200 {
            live.push(next(&mut c));
        }
    }
    let bytes: usize = live.iter().map(|(_, m)| m.len() + 3).sum();
    assert!(bytes > 4 * 65_536, "{bytes} bytes: the stream spans chunks");
    assert!(live.iter().enumerate().all(|(i, m)| m.0 == i as u64 + 1));
    c.logout().unwrap();
    drop(c);
    let replayed = |addr, from: u64| {
        let mut again = Client::connect(addr).unwrap();
        assert_eq!(
            again.login("MM3", "pw3", from).unwrap(),
            Received::LoginAccepted {
                session: "IRONMATCH".into(),
                next_seq: from
            }
        );
        let got: Vec<(u64, Vec<u8>)> = (from..=live.len() as u64)
            .map(|_| next(&mut again))
            .collect();
        quiet(&mut again, Duration::from_millis(200));
        got
    };
    for from in [1, 2_345] {
        assert!(
            replayed(addr, from) == live[from as usize - 1..],
            "the replay from {from} differs from the live stream"
        );
    }
    server.stop().unwrap();
    let server = Server::start(&config).unwrap();
    assert!(
        replayed(server.local_addr(), 1) == live,
        "after a restart, the replay from 1 differs from the live stream"
    );
    server.stop().unwrap();
}

#[test]
fn malformed_and_oversize_frames_close_only_that_session() {
    let server = start();
    let addr = server.local_addr();
    let mut good = login(addr, "MM2", "pw2", 1);
    for garbage in [
        vec![0xFF, 0xFF, b'U'],          // longer than packet_len_max
        vec![0x00, 0x00],                // length 0
        vec![0x00, 0x01, b'?'],          // unknown packet type
        vec![0x00, 0x03, b'U', b'O', 1], // truncated Enter Order
        vec![0x00, 0x02, b'U', b'#'],    // unknown OUCH message
    ] {
        let mut bad = login(addr, "MM1", "pw1", 0);
        bad.send_raw(&garbage).unwrap();
        match bad.recv(Duration::from_secs(2)) {
            Ok(Some(Received::Debug(why))) => assert!(!why.is_empty()),
            other => panic!("expected a reason for {garbage:?}, got {other:?}"),
        }
        assert!(
            bad.recv(Duration::from_secs(2)).is_err(),
            "closed after {garbage:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    good.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut good).0, outbound::ACCEPTED);
    server.stop().unwrap();
}

#[test]
fn a_slow_reader_is_disconnected_while_others_keep_trading() {
    let config = test_config("");
    let server = ironmatch::server::Server::start(&config).unwrap();
    let addr = server.local_addr();
    // A reader with a tiny receive window, so the kernel cannot absorb its backlog.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut slow = std::net::TcpStream::from(socket);
    let mut login = Vec::new();
    soupbin::write_login_request(&mut login, "MM3", "pw3", "", 1);
    std::io::Write::write_all(&mut slow, &login).unwrap();
    let mut fast = common::login(addr, "MM2", "pw2", 1);
    // MM3 floods orders and never reads its acknowledgements.
    let mut out = Vec::new();
    for r in 1..=20_000u32 {
        let mut payload = Vec::new();
        let m = ironmatch::wire::ouch::EnterOrder::new(
            r,
            b'B',
            1,
            *b"AAPL    ",
            PX - 10_000,
            b'3',
            b'Y',
        );
        ironmatch::wire::ouch::Inbound::Enter(&m, Options::default()).write(&mut payload);
        soupbin::write_packet(&mut out, kind::UNSEQUENCED, &payload);
    }
    let flood = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut slow, &out);
        slow
    });
    // Meanwhile MM2 trades normally.
    for r in 1..=20 {
        fast.limit(r, b'B', 1, "AAPL", PX - 100).unwrap();
        assert_eq!(next_type(&mut fast).0, outbound::ACCEPTED);
    }
    let mut slow = flood.join().unwrap();
    // The slow reader's connection was closed by the engine: reading ends in EOF or reset.
    // Drain what the kernel holds until EOF or reset; give up (and fail) after 10 s.
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while !closed && std::time::Instant::now() < deadline {
        match std::io::Read::read(&mut slow, &mut sink) {
            Ok(0) => closed = true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => closed = true,
        }
    }
    assert!(closed, "the slow reader is disconnected");
    // It can log in again and resume from any sequence number.
    let mut back = common::login(addr, "MM3", "pw3", 1);
    assert_eq!(next(&mut back).0, 1);
    server.stop().unwrap();
}

/// Enters an IOC buy of `qty` at `price` (reference 1) and returns its first execution's
/// shares and price, after its acceptance.
fn first_fill_of_ioc_buy(taker: &mut Client, qty: u32, price: u64) -> (u32, u64) {
    taker
        .enter(1, b'B', qty, "AAPL", price, b'3', b'Y', Options::default())
        .unwrap();
    next(taker);
    let msg = next(taker).1;
    let Outbound::Executed(e, _) = decode(&msg) else {
        panic!("{msg:?}")
    };
    (e.qty.get(), e.price.get())
}

#[test]
fn cancel_on_disconnect_follows_the_users_setting() {
    let server = start();
    let addr = server.local_addr();
    let mut cod = login(addr, "MM1", "pw1", 1);
    let mut keeps = login(addr, "MM3", "pw3", 1);
    let mut taker = login(addr, "MM2", "pw2", 1);
    cod.limit(1, b'S', 100, "AAPL", PX).unwrap();
    next(&mut cod);
    keeps.limit(1, b'S', 100, "AAPL", PX + 100).unwrap();
    next(&mut keeps);
    drop(cod);
    drop(keeps);
    // MM1 logs in again once the gateway has seen its close, so its order was canceled
    // before the taker's comes; the cancel waited in MM1's stream for that login.
    let mut back = common::login_after_close(addr, "MM1", "pw1", 2);
    let msg = next(&mut back).1;
    let Outbound::Canceled(c) = decode(&msg) else {
        panic!()
    };
    assert_eq!((c.user_ref.get(), c.reason), (1, b'Z'));
    common::login_after_close(addr, "MM3", "pw3", 2);
    assert_eq!(
        first_fill_of_ioc_buy(&mut taker, 200, PX + 100),
        (100, PX + 100),
        "only MM3's order was left"
    );
    server.stop().unwrap();
}

/// A planned stop drops every session: cancel-on-disconnect applies as to any other drop
/// (the Disconnects were queued behind the shutdown marker and never applied, so MM1's
/// order outlived the stop and traded after the restart while its connector was down).
/// The cancel reaches MM1's stream before its session ends, and is in it after the restart.
#[test]
fn cancel_on_disconnect_applies_to_a_planned_stop() {
    let dir = temp_dir("stop-cod").hold();
    let config = test_config_in(&dir, "");
    let server = Server::start(&config).unwrap();
    let addr = server.local_addr();
    let mut cod = login(addr, "MM1", "pw1", 1);
    let mut keeps = login(addr, "MM3", "pw3", 1);
    cod.limit(1, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(next(&mut cod).0, 1);
    keeps.limit(1, b'S', 100, "AAPL", PX + 100).unwrap();
    assert_eq!(next(&mut keeps).0, 1);
    server.stop().unwrap();
    let (seq, msg) = next(&mut cod);
    let Outbound::Canceled(c) = decode(&msg) else {
        panic!("{msg:?}")
    };
    assert_eq!((seq, c.user_ref.get(), c.reason), (2, 1, b'Z'));
    drop(cod);
    drop(keeps);
    let server = Server::start(&config).unwrap();
    let addr = server.local_addr();
    let mut taker = login(addr, "MM2", "pw2", 1);
    assert_eq!(
        first_fill_of_ioc_buy(&mut taker, 200, PX + 100),
        (100, PX + 100),
        "only MM3's order was left"
    );
    let mut back = login(addr, "MM1", "pw1", 2);
    let msg = next(&mut back).1;
    assert!(
        matches!(decode(&msg), Outbound::Canceled(c) if c.reason == b'Z'),
        "{msg:?}"
    );
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shutdown_drains_and_ends_every_session() {
    let server = start();
    let addr = server.local_addr();
    let mut a = login(addr, "MM1", "pw1", 1);
    for r in 1..=50 {
        a.limit(r, b'B', 1, "AAPL", PX - 1_000).unwrap();
    }
    // A connection that has not logged in: it is closed, with no End of Session (it has
    // no session to end).
    let mut pending = Client::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    server.stop().unwrap();
    let mut kinds = Vec::new();
    loop {
        match a.recv(Duration::from_secs(5)) {
            Ok(Some(Received::Sequenced { msg, .. })) => kinds.push(msg[0]),
            Ok(Some(Received::Heartbeat)) => {}
            Ok(Some(Received::EndOfSession)) => break,
            other => panic!("expected End of Session after the acknowledgements, got {other:?}"),
        }
    }
    // Every order sent before shutdown was answered, then (MM1 has cancel-on-disconnect,
    // and the stop ends its session) canceled, all before End of Session.
    let (acks, cancels) = kinds.split_at(50);
    assert!(acks.iter().all(|k| *k == outbound::ACCEPTED), "{kinds:?}");
    assert_eq!(cancels, [outbound::CANCELED; 50], "{kinds:?}");
    match pending.recv(Duration::from_secs(5)) {
        Err(_) => {}
        other => panic!("the pending connection got {other:?}, not a close"),
    }
}

#[test]
fn sigterm_stops_serve_with_exit_code_zero() {
    use std::io::{BufRead, BufReader, Write};
    let dir = std::env::temp_dir().join(format!("ironmatch-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ironmatch.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    let journal = dir.join("data");
    let text = common::shipped_config_for_tests().replace(
        "dir = \"./data\"",
        &format!("dir = \"{}\"", journal.display()),
    );
    f.write_all(text.as_bytes()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .split(" on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut c = login(addr, "MM1", "mm1pass", 1);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let ended = (0..50).any(|_| {
        matches!(
            c.recv(Duration::from_millis(100)),
            Ok(Some(Received::EndOfSession))
        )
    });
    assert!(ended, "End of Session before exit");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "serve exits 0 on SIGTERM: {exit:?}");
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ironmatch stopped");
    std::fs::remove_dir_all(&dir).ok();
}

/// The next message, which must be a Rejected: (UserRefNum, code, ClOrdID).
fn rejected(c: &mut Client) -> (u32, u16, [u8; 14]) {
    let (_, msg) = next(c);
    match decode(&msg) {
        Outbound::Rejected(r) => (r.user_ref.get(), r.reason.get(), r.clordid),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// The type of the next message that is not an execution or a cancel.
fn answer_type(c: &mut Client) -> u8 {
    next_type(c).0
}

fn order(user_ref: u32) -> ironmatch::wire::ouch::EnterOrder {
    let mut m =
        ironmatch::wire::ouch::EnterOrder::new(user_ref, b'B', 100, *b"AAPL    ", PX, b'0', b'Y');
    m.clordid = *b"VALID-ID      ";
    m
}

#[test]
fn fields_outside_their_ouch_type_are_rejected_and_never_echoed() {
    use ironmatch::wire::ouch::{Inbound, is_alpha};
    let server = start();
    let mut c = login(server.local_addr(), "MM1", "pw1", 1);
    let blank = [b' '; 14];
    let echo = *b"VALID-ID      ";
    let mut cases: Vec<(ironmatch::wire::ouch::EnterOrder, Options, u16, [u8; 14])> = Vec::new();
    let mut m = order(1);
    m.clordid[3] = 0x01;
    cases.push((m, Options::default(), 0x000F, blank));
    let mut m = order(1);
    m.clordid[..2].copy_from_slice(&[0xC3, 0xA9]);
    cases.push((m, Options::default(), 0x000F, blank));
    let mut m = order(1);
    m.symbol[4] = 0x00;
    cases.push((m, Options::default(), 0x0017, echo));
    let mut m = order(1);
    m.side = b'X';
    cases.push((m, Options::default(), 0x0009, echo));
    let mut m = order(1);
    m.capacity = 0xFF;
    cases.push((m, Options::default(), 0x000F, echo));
    let mut m = order(1);
    m.qty = 1_000_000.into();
    cases.push((m, Options::default(), 0x001E, echo));
    let firm = Options {
        firm: Some(*b"m\x80a "),
        ..Options::default()
    };
    cases.push((order(1), firm, 0x000C, echo));
    let customer = Options {
        customer_type: Some(0x80),
        ..Options::default()
    };
    cases.push((order(1), customer, 0x000F, echo));
    // Values of their type that are not offered: OUCH's code for each, where it has one.
    let mut m = order(1);
    m.display = b'M';
    cases.push((m, Options::default(), 0x0003, echo));
    let mut m = order(1);
    m.cross_type = b'O';
    cases.push((m, Options::default(), 0x0014, echo));
    let peg = Options {
        price_type: Some(b'P'),
        ..Options::default()
    };
    cases.push((order(1), peg, 0x0011, echo));
    let retail = Options {
        handle_inst: Some(b'T'),
        ..Options::default()
    };
    cases.push((order(1), retail, 0x001A, echo));
    let imbalance = Options {
        handle_inst: Some(b'I'),
        ..Options::default()
    };
    cases.push((order(1), imbalance, 0x0014, echo));
    for (m, o, code, clordid) in &cases {
        c.send(&Inbound::Enter(m, *o)).unwrap();
        let (user_ref, got, id) = rejected(&mut c);
        assert_eq!((user_ref, got, id), (1, *code, *clordid), "{m:?} {o:?}");
        assert!(is_alpha(&id));
    }
    // None of them reached the book or used the reference.
    c.send(&Inbound::Enter(&order(1), Options::default()))
        .unwrap();
    assert_eq!(answer_type(&mut c), outbound::ACCEPTED);
    server.stop().unwrap();
}

/// A member cannot enter orders under another member's firm: with its Firm option naming
/// MMB, MM1's crossing IOC would be MMB's own order to self-trade prevention and cancel
/// MMB's resting quote without a trade. Refused (`0x0C`), nothing touched, nothing used.
#[test]
fn an_order_for_another_members_firm_is_refused() {
    let server = start();
    let mut maker = login(server.local_addr(), "MM2", "pw2", 1);
    maker.limit(1, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(answer_type(&mut maker), outbound::ACCEPTED);
    let mut c = login(server.local_addr(), "MM1", "pw1", 1);
    let other = Options {
        firm: Some(*b"MMB "),
        ..Options::default()
    };
    c.enter(1, b'B', 100, "AAPL", PX, b'3', b'Y', other)
        .unwrap();
    assert_eq!(rejected(&mut c).1, 0x000C);
    quiet(&mut maker, Duration::from_millis(200));
    // Its own firm, named or blank, is taken; the number was not used by the refusal.
    let own = Options {
        firm: Some(*b"MMA "),
        ..Options::default()
    };
    c.enter(1, b'B', 40, "AAPL", PX, b'3', b'Y', own).unwrap();
    assert_eq!(answer_type(&mut c), outbound::ACCEPTED);
    assert_eq!(answer_type(&mut c), outbound::EXECUTED);
    let blank = Options {
        firm: Some(*b"    "),
        ..Options::default()
    };
    c.enter(2, b'B', 60, "AAPL", PX, b'3', b'Y', blank).unwrap();
    assert_eq!(answer_type(&mut c), outbound::ACCEPTED);
    assert_eq!(answer_type(&mut c), outbound::EXECUTED);
    server.stop().unwrap();
}

/// The README's rule, one reject kind at a time: a request the gateway refuses (not
/// offered, bad field, throttle) consumes nothing; Enter Order and Mass Cancel Request
/// answered by the matcher consume their number, accepted or rejected; a failed Replace
/// does not; a repeated number consumes nothing.
#[test]
fn the_user_ref_num_rule_holds_for_every_reject_kind() {
    use ironmatch::wire::ouch::Inbound;
    let server = start();
    let mut c = login(server.local_addr(), "MM1", "pw1", 1);
    // Not offered (time in force 7): refused, not consumed.
    c.enter(10, b'B', 100, "AAPL", PX, b'7', b'Y', Options::default())
        .unwrap();
    assert_eq!(rejected(&mut c).1, 0x000F);
    c.limit(10, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(answer_type(&mut c), outbound::ACCEPTED);
    // A bad field: refused, not consumed.
    let mut bad = order(11);
    bad.clordid[0] = 0x1B;
    c.send(&Inbound::Enter(&bad, Options::default())).unwrap();
    assert_eq!(rejected(&mut c).1, 0x000F);
    c.limit(11, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(answer_type(&mut c), outbound::ACCEPTED);
    // The matcher rejects an Enter (unknown symbol): consumed.
    c.limit(12, b'B', 100, "ZZZZ", PX).unwrap();
    assert_eq!(rejected(&mut c).1, 0x0017);
    c.limit(12, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(rejected(&mut c).1, 0x000F, "12 was used");
    // A failed Replace (unknown order): its new number is not consumed (OUCH).
    c.replace(999, 13, 100, PX).unwrap();
    assert_eq!(rejected(&mut c).1, 0x0010);
    c.limit(13, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(answer_type(&mut c), outbound::ACCEPTED);
    // The matcher rejects a Mass Cancel (another firm): consumed.
    c.mass_cancel(14, "XXX").unwrap();
    assert_eq!(rejected(&mut c).1, 0x000C);
    c.limit(14, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(rejected(&mut c).1, 0x000F, "14 was used");
    // A repeated number changes nothing: the next expected is still 15.
    c.limit(3, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(rejected(&mut c).1, 0x000F);
    c.send(&Inbound::AccountQuery(Options::default())).unwrap();
    let (_, msg) = next(&mut c);
    let Outbound::AccountQueryResponse(q) = decode(&msg) else {
        panic!("{msg:?}")
    };
    assert_eq!(q.next_user_ref.get(), 15);

    // The throttle: refused, not consumed, so the same message can be sent again later.
    let mut slow = login(server.local_addr(), "SLOW", "pw4", 1);
    for r in 1..=6 {
        slow.limit(r, b'B', 100, "AAPL", PX - u64::from(r) * 100)
            .unwrap();
    }
    let answers: Vec<u8> = (0..6).map(|_| answer_type(&mut slow)).collect();
    assert_eq!(
        answers.last(),
        Some(&outbound::REJECTED),
        "burst 3: the sixth is throttled ({answers:?})"
    );
    let accepted = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        slow.limit(6, b'B', 100, "AAPL", PX - 600).unwrap();
        answer_type(&mut slow) == outbound::ACCEPTED
    });
    assert!(
        accepted,
        "a throttled number is not used: it is accepted once tokens return"
    );
    server.stop().unwrap();
}

/// Connections that never log in, far beyond the pending budget, from the member's own
/// address: each new one evicts the oldest pending one, so the member's newest connection
/// always lives long enough to log in (counts only).
#[test]
fn a_connection_flood_never_keeps_a_member_out() {
    let server = Server::start(&test_config(
        "pending_max = 8\npending_per_address_max = 4\nconnections_max = 4",
    ))
    .unwrap();
    let addr = server.local_addr();
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(std::net::TcpStream::connect(addr).unwrap());
    }
    let mut a = login(addr, "MM1", "pw1", 1);
    for _ in 0..40 {
        flood.push(std::net::TcpStream::connect(addr).unwrap());
    }
    let mut b = login(addr, "MM2", "pw2", 1);
    a.limit(1, b'S', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut a).0, outbound::ACCEPTED);
    b.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut b).0, outbound::ACCEPTED);
    let stats = server.admission();
    assert_eq!(stats.logins, 2);
    assert!(stats.accepted >= 82, "{stats:?}");
    assert!(
        stats.evicted_same_address >= 70,
        "all from one address: at most 4 of them pending at once ({stats:?})"
    );
    assert_eq!(stats.refused, 0, "{stats:?}");
    drop(flood);
    server.stop().unwrap();
}

/// `connections_max` bounds logged-in sessions only; a login beyond it is refused and the
/// sessions already in are untouched.
#[test]
fn logged_in_sessions_have_their_own_budget() {
    let server = Server::start(&test_config("connections_max = 2")).unwrap();
    let addr = server.local_addr();
    let mut a = login(addr, "MM1", "pw1", 1);
    let _b = login(addr, "MM2", "pw2", 1);
    let mut c = Client::connect(addr).unwrap();
    assert_eq!(
        c.login("MM3", "pw3", 1).unwrap(),
        Received::LoginRejected(b'S')
    );
    a.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut a).0, outbound::ACCEPTED);
    assert_eq!(server.admission().logins_rejected, 1);
    server.stop().unwrap();
}

/// A member on its own address is never evicted by a flood from other addresses, however
/// large and however long the member waits before sending its login: each flooding address
/// evicts its own connections (deterministic, unlike a flood from the member's address).
#[test]
fn a_flood_from_other_addresses_never_evicts_a_members_connection() {
    use std::io::{Read, Write};
    let dir = temp_dir("flood");
    let text = test_config_text(&dir, "pending_max = 8\npending_per_address_max = 4")
        .replace("login_timeout_ms = 400", "login_timeout_ms = 60000");
    let config = ironmatch::config::Config::parse(&text, "test").unwrap();
    let server = Server::start(&config).unwrap();
    let addr = server.local_addr();
    let mut flood = Vec::new();
    for i in 0..8u8 {
        flood.push(connect_from([127, 0, 0, 2 + i % 2], addr));
    }
    let mut member = connect_from([127, 0, 0, 1], addr);
    for i in 0..200u8 {
        flood.push(connect_from([127, 0, 0, 2 + i % 4], addr));
    }
    // Every flood connection is accepted (and most evicted) before the member speaks.
    let accepted = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        server.admission().accepted >= 209
    });
    assert!(accepted, "{:?}", server.admission());
    let mut login = Vec::new();
    soupbin::write_login_request(&mut login, "MM1", "pw1", "", 1);
    member.write_all(&login).unwrap();
    member
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 3];
    member.read_exact(&mut head).unwrap();
    assert_eq!(head[2], kind::LOGIN_ACCEPTED);
    let stats = server.admission();
    assert_eq!((stats.logins, stats.refused), (1, 0), "{stats:?}");
    assert!(
        stats.evicted + stats.evicted_same_address >= 200,
        "{stats:?}"
    );
    drop(flood);
    server.stop().unwrap();
}

/// The price band and the circuit breaker over the wire: a runaway sweep pauses the
/// instrument (the taker's remainder canceled `H`, new orders rejected `0x0007`), the
/// first order after the pause's second trades, and a remainder the band stops rests at
/// the band edge with Order Restated `P`.
#[test]
fn a_runaway_sweep_pauses_and_the_band_reprices_over_the_wire() {
    let dir = temp_dir("breaker");
    let text = test_config_text(&dir, "").replace(
        "band_bps = 1000",
        "band_bps = 1000\nband_remainder = \"rest\"\nbreaker_bps = 100\n\
         breaker_window_secs = 5\nbreaker_pause_secs = 1",
    );
    let config = ironmatch::config::Config::parse(&text, "test config").unwrap();
    let server = Server::start(&config).expect("engine starts");
    let addr = server.local_addr();
    let mut seller = login(addr, "MM1", "pw1", 1);
    let mut buyer = login(addr, "MM2", "pw2", 1);
    let fill = |c: &mut Client| match decode(&next(c).1) {
        Outbound::Executed(e, _) => e.price.get(),
        other => panic!("expected an execution, got {other:?}"),
    };
    // One trade at $150.00, then offers at $151.00 and $152.00: the breaker allows 1%
    // around $150.00, so $152.00 may not print.
    // Each side waits for its own acknowledgements before the other side sends: the two
    // sessions are separate connections, so their relative order is set only that way.
    seller.limit(1, b'S', 100, "AAPL", PX).unwrap();
    seller.limit(2, b'S', 100, "AAPL", PX + 10_000).unwrap();
    seller.limit(3, b'S', 100, "AAPL", PX + 20_000).unwrap();
    for _ in 0..3 {
        assert_eq!(next_type(&mut seller).0, outbound::ACCEPTED);
    }
    buyer.limit(1, b'B', 100, "AAPL", PX).unwrap();
    assert_eq!(fill(&mut seller), PX);
    assert_eq!(next_type(&mut buyer).0, outbound::ACCEPTED);
    assert_eq!(fill(&mut buyer), PX);
    buyer.limit(2, b'B', 200, "AAPL", PX + 20_000).unwrap();
    assert_eq!(next_type(&mut buyer).0, outbound::ACCEPTED);
    assert_eq!(fill(&mut buyer), PX + 10_000);
    match decode(&next(&mut buyer).1) {
        Outbound::Canceled(c) => assert_eq!((c.user_ref.get(), c.reason), (2, b'H')),
        other => panic!("expected the remainder canceled, got {other:?}"),
    }
    buyer.limit(3, b'B', 100, "AAPL", PX + 20_000).unwrap();
    assert_eq!(rejected(&mut buyer).1, 0x0007, "paused: halted");
    // After the pause the order trades: the reference is now the mean of $150.00 and
    // $151.00, and $152.00 is within 1% of it.
    std::thread::sleep(Duration::from_millis(1_200));
    buyer.limit(4, b'B', 100, "AAPL", PX + 20_000).unwrap();
    assert_eq!(next_type(&mut buyer).0, outbound::ACCEPTED);
    assert_eq!(fill(&mut buyer), PX + 20_000);
    // The band is 10% of $152.00: up to $167.20. A bid at $170.00 facing an offer at
    // $168.00 cannot trade; it rests at $167.20 and its owner is told.
    assert_eq!(fill(&mut seller), PX + 10_000);
    assert_eq!(fill(&mut seller), PX + 20_000);
    seller.limit(4, b'S', 100, "AAPL", 1_680_000).unwrap();
    assert_eq!(next_type(&mut seller).0, outbound::ACCEPTED);
    buyer.limit(5, b'B', 100, "AAPL", 1_700_000).unwrap();
    assert_eq!(next_type(&mut buyer).0, outbound::ACCEPTED);
    match decode(&next(&mut buyer).1) {
        Outbound::Restated(r, o) => {
            assert_eq!((r.user_ref.get(), r.reason), (5, b'P'));
            assert_eq!(o.display_price, Some(1_672_000));
        }
        other => panic!("expected Order Restated, got {other:?}"),
    }
    server.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// A client whose last bytes and close come in one segment (data and FIN together, one
/// readiness event) is seen gone at once: its session is free for the next login. The
/// gateway skipped the read that says the peer closed after a short read, and no event
/// followed, so the session stayed logged in until the client timeout (Login Rejected `S`
/// meanwhile).
#[test]
fn a_close_that_comes_with_the_last_bytes_ends_the_session_at_once() {
    use std::io::{Read, Write};
    let server = start();
    let addr = server.local_addr();
    let mut first = connect_from([127, 0, 0, 1], addr);
    let mut login = Vec::new();
    soupbin::write_login_request(&mut login, "MM1", "pw1", "", 1);
    first.write_all(&login).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 3];
    first.read_exact(&mut head).unwrap();
    assert_eq!(head[2], kind::LOGIN_ACCEPTED);
    // A heartbeat held back (TCP_CORK) until the shutdown, which sends it with the FIN.
    let socket = socket2::SockRef::from(&first);
    socket.set_tcp_cork(true).unwrap();
    let mut heartbeat = Vec::new();
    soupbin::write_empty(&mut heartbeat, kind::CLIENT_HEARTBEAT);
    first.write_all(&heartbeat).unwrap();
    first.shutdown(std::net::Shutdown::Write).unwrap();
    // Well within the client timeout (1.5 s), not retried: accepted.
    std::thread::sleep(Duration::from_millis(300));
    let again = login_after_close_within(addr, "MM1", "pw1", 1, Duration::from_secs(5));
    drop(again);
    let stats = server.admission();
    assert_eq!(stats.logins_rejected, 0, "{stats:?}");
    drop(first);
    server.stop().unwrap();
}
