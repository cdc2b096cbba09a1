//! ITCH 5.0 and MoldUDP64 against the verified test vectors of `shared/protocol/`
//! (`itch-5.0.md` §6 I1–I4, `moldudp64.md` §5 M1–M4; decoded with Nasdaq-derived
//! Wireshark dissectors there): every field decodes to the table's value, and every message
//! and packet encodes back to the same bytes.

use ironmatch::wire::DecodeError;
use ironmatch::wire::itch::{Body, Imbalance, Message, StockDirectory, file_messages, message_len};
use ironmatch::wire::moldudp64::{
    Packet, PacketBuilder, PacketHeader, Session, parse_request, status_packet,
};

fn hex(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

const I1: &[&str] = &[
    "54 45 53 54 53 45 53 53 30 31 00 00 00 00 00 00",
    "00 01 00 05 00 0c 53 00 00 00 00 09 d2 92 29 e0",
    "00 4f 00 27 52 00 01 00 00 09 d2 92 2b 66 a0 41",
    "41 50 4c 20 20 20 20 51 4e 00 00 00 64 4e 43 5a",
    "20 50 4e 4e 31 4e 00 00 00 00 4e 00 19 48 00 01",
    "00 00 09 d2 92 2c ed 40 41 41 50 4c 20 20 20 20",
    "54 20 20 20 20 20 00 14 59 00 01 00 00 09 d2 92",
    "2e 73 e0 41 41 50 4c 20 20 20 20 30 00 1a 4c 00",
    "01 00 00 09 d2 92 2f fa 80 41 43 4d 45 41 41 50",
    "4c 20 20 20 20 4e 4e 41",
];

const I2: &[&str] = &[
    "54 45 53 54 53 45 53 53 30 31 00 00 00 00 00 00",
    "00 06 00 01 00 24 41 00 01 00 00 1f 1a ce d9 f0",
    "7b 00 00 00 00 00 0f 42 41 42 00 00 00 64 41 41",
    "50 4c 20 20 20 20 00 16 ed 24",
];

const I3: &[&str] = &[
    "54 45 53 54 53 45 53 53 30 31 00 00 00 00 00 00",
    "00 07 00 05 00 28 46 00 01 00 00 1f 1a ce d9 f4",
    "63 00 00 00 00 00 0f 42 42 53 00 00 00 c8 41 41",
    "50 4c 20 20 20 20 00 16 ed 88 41 43 4d 45 00 1f",
    "45 00 01 00 00 1f 1a ce e1 91 20 00 00 00 00 00",
    "0f 42 41 00 00 00 28 00 00 00 00 00 4c 4b 41 00",
    "24 43 00 01 00 00 1f 1a ce e1 95 08 00 00 00 00",
    "00 0f 42 42 00 00 00 32 00 00 00 00 00 4c 4b 42",
    "59 00 16 ed 56 00 17 58 00 01 00 00 1f 1a ce e1",
    "98 f0 00 00 00 00 00 0f 42 42 00 00 00 0a 00 23",
    "55 00 01 00 00 1f 1a ce e1 9c d8 00 00 00 00 00",
    "0f 42 42 00 00 00 00 00 0f 42 43 00 00 00 8c 00",
    "16 ed ec",
];

const I4: &[&str] = &[
    "54 45 53 54 53 45 53 53 30 31 00 00 00 00 00 00",
    "00 0c 00 05 00 13 44 00 01 00 00 1f 1a ce e1 a0",
    "c0 00 00 00 00 00 0f 42 43 00 2c 50 00 01 00 00",
    "1f 1a ce e1 a4 a8 00 00 00 00 00 00 00 00 42 00",
    "00 00 19 41 41 50 4c 20 20 20 20 00 16 ed 24 00",
    "00 00 00 00 4c 4b 43 00 28 51 00 01 00 00 1f 1a",
    "ce e1 a8 90 00 00 00 00 00 00 03 e8 41 41 50 4c",
    "20 20 20 20 00 16 ed 24 00 00 00 00 00 4c 4b 44",
    "4f 00 13 42 00 01 00 00 1f 1a ce e1 ac 78 00 00",
    "00 00 00 4c 4b 43 00 32 49 00 01 00 00 1f 1a ce",
    "e1 b0 60 00 00 00 00 00 00 13 88 00 00 00 00 00",
    "00 01 2c 42 41 41 50 4c 20 20 20 20 00 16 eb 30",
    "00 16 ed 24 00 16 ec c0 4f 4c",
];

const M2: &[&str] = &[
    "54 45 53 54 53 45 53 53 30 31 00 00 00 00 00 00",
    "00 11 00 00",
];

const M3: &[&str] = &[
    "54 45 53 54 53 45 53 53 30 31 00 00 00 00 00 00",
    "00 11 ff ff",
];

const M4: &[&str] = &[
    "54 45 53 54 53 45 53 53 30 31 00 00 00 00 00 00",
    "00 07 00 05",
];

const AAPL: [u8; 8] = *b"AAPL    ";

fn session() -> Session {
    Session::from_str_padded("TESTSESS01").unwrap()
}

fn msg(locate: u16, ts: u64, body: Body) -> Message {
    Message {
        locate,
        tracking: 0,
        ts,
        body,
    }
}

/// Parses `bytes` as a packet, checks its header and messages, and rebuilds it.
fn check_packet(bytes: &[u8], seq: u64, expected: &[Message]) {
    let packet = Packet::parse(bytes).unwrap();
    assert_eq!(packet.header.session, session());
    assert_eq!(packet.header.seq, seq);
    assert_eq!(packet.message_count(), expected.len() as u64);
    let mut builder = PacketBuilder::new(session(), 1400);
    for ((n, raw), want) in packet.messages().zip(expected) {
        assert_eq!(n, seq + builder.count() as u64);
        let got = Message::decode(raw).unwrap();
        assert_eq!(&got, want);
        assert_eq!(raw.len(), message_len(raw[0]).unwrap());
        let mut buf = [0u8; 64];
        let len = want.encode(&mut buf);
        assert_eq!(
            &buf[..len],
            raw,
            "{:?} encodes to the vector's bytes",
            want.body
        );
        let mut block = (len as u16).to_be_bytes().to_vec();
        block.extend_from_slice(&buf[..len]);
        assert!(builder.try_add_block(&block));
    }
    assert_eq!(
        builder.finish(seq),
        bytes,
        "the packet rebuilds byte for byte"
    );
}

#[test]
fn i1_start_of_day() {
    let ts = 10_800_000_000_000;
    check_packet(
        &hex(I1),
        1,
        &[
            msg(0, ts, Body::SystemEvent { code: b'O' }),
            msg(
                1,
                ts + 100_000,
                Body::StockDirectory(StockDirectory {
                    stock: AAPL,
                    market_category: b'Q',
                    financial_status: b'N',
                    round_lot_size: 100,
                    round_lots_only: b'N',
                    issue_classification: b'C',
                    issue_subtype: *b"Z ",
                    authenticity: b'P',
                    short_sale_threshold: b'N',
                    ipo_flag: b'N',
                    luld_tier: b'1',
                    etp_flag: b'N',
                    etp_leverage: 0,
                    inverse: b'N',
                }),
            ),
            msg(
                1,
                ts + 200_000,
                Body::TradingAction {
                    stock: AAPL,
                    state: b'T',
                    reserved: b' ',
                    reason: *b"    ",
                },
            ),
            msg(
                1,
                ts + 300_000,
                Body::RegSho {
                    stock: AAPL,
                    action: b'0',
                },
            ),
            msg(
                1,
                ts + 400_000,
                Body::ParticipantPosition {
                    mpid: *b"ACME",
                    stock: AAPL,
                    primary: b'N',
                    mode: b'N',
                    state: b'A',
                },
            ),
        ],
    );
}

#[test]
fn i2_add_order_is_m1() {
    check_packet(
        &hex(I2),
        6,
        &[msg(
            1,
            34_200_000_000_123,
            Body::AddOrder {
                order_ref: 1_000_001,
                side: b'B',
                shares: 100,
                stock: AAPL,
                price: 1_502_500,
                attribution: None,
            },
        )],
    );
}

#[test]
fn i3_order_messages() {
    check_packet(
        &hex(I3),
        7,
        &[
            msg(
                1,
                34_200_000_001_123,
                Body::AddOrder {
                    order_ref: 1_000_002,
                    side: b'S',
                    shares: 200,
                    stock: AAPL,
                    price: 1_502_600,
                    attribution: Some(*b"ACME"),
                },
            ),
            msg(
                1,
                34_200_000_500_000,
                Body::OrderExecuted {
                    order_ref: 1_000_001,
                    shares: 40,
                    match_number: 5_000_001,
                },
            ),
            msg(
                1,
                34_200_000_501_000,
                Body::OrderExecutedWithPrice {
                    order_ref: 1_000_002,
                    shares: 50,
                    match_number: 5_000_002,
                    printable: b'Y',
                    price: 1_502_550,
                },
            ),
            msg(
                1,
                34_200_000_502_000,
                Body::OrderCancel {
                    order_ref: 1_000_002,
                    shares: 10,
                },
            ),
            msg(
                1,
                34_200_000_503_000,
                Body::OrderReplace {
                    old_ref: 1_000_002,
                    new_ref: 1_000_003,
                    shares: 140,
                    price: 1_502_700,
                },
            ),
        ],
    );
}

#[test]
fn i4_trades_and_imbalance() {
    check_packet(
        &hex(I4),
        12,
        &[
            msg(
                1,
                34_200_000_504_000,
                Body::OrderDelete {
                    order_ref: 1_000_003,
                },
            ),
            msg(
                1,
                34_200_000_505_000,
                Body::Trade {
                    order_ref: 0,
                    side: b'B',
                    shares: 25,
                    stock: AAPL,
                    price: 1_502_500,
                    match_number: 5_000_003,
                },
            ),
            msg(
                1,
                34_200_000_506_000,
                Body::CrossTrade {
                    shares: 1000,
                    stock: AAPL,
                    price: 1_502_500,
                    match_number: 5_000_004,
                    cross_type: b'O',
                },
            ),
            msg(
                1,
                34_200_000_507_000,
                Body::BrokenTrade {
                    match_number: 5_000_003,
                },
            ),
            msg(
                1,
                34_200_000_508_000,
                Body::Imbalance(Imbalance {
                    paired: 5000,
                    imbalance: 300,
                    direction: b'B',
                    stock: AAPL,
                    far: 1_502_000,
                    near: 1_502_500,
                    reference: 1_502_400,
                    cross_type: b'O',
                    variation: b'L',
                }),
            ),
        ],
    );
}

#[test]
fn m2_m3_heartbeat_and_end_of_session() {
    let hb = hex(M2);
    assert_eq!(
        status_packet(session(), 17, false).as_slice(),
        hb.as_slice()
    );
    let p = Packet::parse(&hb).unwrap();
    assert!(p.is_heartbeat() && !p.is_end_of_session());
    assert_eq!((p.header.seq, p.message_count(), p.next_seq()), (17, 0, 17));
    let eos = hex(M3);
    assert_eq!(
        status_packet(session(), 17, true).as_slice(),
        eos.as_slice()
    );
    let p = Packet::parse(&eos).unwrap();
    assert!(p.is_end_of_session());
    assert_eq!(p.messages().count(), 0);
}

/// MoldUDP64 messages may be 0 bytes long (`moldudp64.md` §4): such a block parses and
/// takes its sequence number, so a listener neither drops the packet nor asks for it again
/// and again (what ITCH makes of an empty message is the ITCH decoder's to say).
#[test]
fn a_zero_length_message_takes_its_sequence_number() {
    let mut bytes = session().0.to_vec();
    bytes.extend_from_slice(&40u64.to_be_bytes());
    bytes.extend_from_slice(&3u16.to_be_bytes());
    for block in [&b"ab"[..], &[], &b"c"[..]] {
        bytes.extend_from_slice(&(block.len() as u16).to_be_bytes());
        bytes.extend_from_slice(block);
    }
    let p = Packet::parse(&bytes).unwrap();
    let messages: Vec<(u64, &[u8])> = p.messages().collect();
    assert_eq!(
        messages,
        vec![(40, &b"ab"[..]), (41, &[][..]), (42, &b"c"[..])]
    );
    assert_eq!(p.next_seq(), 43);
    assert_eq!(Message::decode(&[]), Err(DecodeError::EmptyMessage));
}

#[test]
fn m4_request() {
    let bytes = hex(M4);
    let r = parse_request(&bytes).unwrap();
    assert_eq!(
        r,
        PacketHeader {
            session: session(),
            seq: 7,
            count: 5
        }
    );
    assert_eq!(r.to_bytes().as_slice(), bytes.as_slice());
    assert!(parse_request(&bytes[..19]).is_err());
}

#[test]
fn bad_bytes_give_reasons() {
    // A message one byte short of its type's length.
    let i2 = hex(I2);
    let add = &i2[22..];
    assert_eq!(
        Message::decode(&add[..35]),
        Err(DecodeError::WrongLength {
            kind: b'A',
            expected: 36,
            got: 35
        })
    );
    // A bad side.
    let mut bad = add.to_vec();
    bad[19] = b'Z';
    assert!(matches!(
        Message::decode(&bad),
        Err(DecodeError::BadField { .. })
    ));
    // An unknown type is skipped, not refused.
    let mut unknown = add.to_vec();
    unknown[0] = b'z';
    assert_eq!(
        Message::decode(&unknown).unwrap().body,
        Body::Unknown { kind: b'z' }
    );
    // A packet whose count promises more blocks than it holds, or with bytes left over.
    let mut short = i2.clone();
    short[19] = 2;
    assert!(Packet::parse(&short).is_err());
    let mut long = i2.clone();
    long.push(0);
    assert!(Packet::parse(&long).is_err());
    assert!(Packet::parse(&i2[..19]).is_err());
    // Numbers that would pass 2^64 inside the packet: refused, never wrapped.
    let mut wraps = i2.clone();
    wraps[10..18].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(Packet::parse(&wraps).is_err());
    wraps[10..18].copy_from_slice(&(u64::MAX - 1).to_be_bytes());
    let last: Vec<u64> = Packet::parse(&wraps)
        .unwrap()
        .messages()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(last, [u64::MAX - 1]);
    // A file cut inside a message.
    let file = &i2[20..i2.len() - 1];
    let got: Vec<_> = file_messages(file).collect();
    assert_eq!(got.len(), 1);
    assert!(got[0].is_err());
}

mod listener_on_damaged_streams {
    //! The listener's decoders on valid packets damaged at random (the fuzz target
    //! `feed_listener` does the same without a generator): never a panic, the book's
    //! invariants hold, and known messages that decode encode back to the same bytes.
    use super::*;
    use proptest::prelude::*;

    fn run(datagrams: &[Vec<u8>]) {
        ironmatch::feed::listener::exercise(datagrams.iter().map(Vec::as_slice));
    }

    proptest! {
        #[test]
        fn damaged_vectors_never_panic(
            order in proptest::collection::vec(0usize..4, 1..12),
            flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
            cut in proptest::option::of(any::<u16>()),
        ) {
            let vectors = [hex(I1), hex(I2), hex(I3), hex(I4)];
            let mut datagrams: Vec<Vec<u8>> = order.iter().map(|&i| vectors[i].clone()).collect();
            let last = datagrams.len() - 1;
            for (at, value) in flips {
                let d = &mut datagrams[usize::from(at) % (last + 1)];
                let i = usize::from(at) % d.len();
                d[i] ^= value;
            }
            if let Some(c) = cut {
                let d = &mut datagrams[last];
                d.truncate(usize::from(c) % (d.len() + 1));
            }
            run(&datagrams);
        }

        #[test]
        fn random_bytes_never_panic(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
            run(&datagrams);
        }
    }
}

/// A message of a type this build does not model (`W`, `V`, `K`, `J`, `N`, `h`, `O` have
/// lengths in the protocol) encodes its header only, and says so in `len()` (which gave
/// the protocol's length: a block sized by it would have been wrong).
#[test]
fn an_unmodelled_message_is_as_long_as_it_encodes() {
    for kind in [b'W', b'V', b'K', b'J', b'N', b'h', b'O', b'z'] {
        let m = msg(1, 7, Body::Unknown { kind });
        let mut buf = [0u8; 64];
        assert_eq!(m.encode(&mut buf), m.len(), "{}", kind as char);
    }
}
