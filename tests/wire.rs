//! OUCH 5.0 codec: the protocol notes' test vectors byte for byte, decode(encode(m)) == m
//! for every message type, and arbitrary bytes never panic.

use ironmatch::wire::DecodeError;
use ironmatch::wire::ouch::*;
use ironmatch::wire::soupbin::{self, ClientPacket, ServerPacket};
use proptest::prelude::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .filter(|t| t.len() == 2)
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect()
}

/// The OUCH message inside one SoupBinTCP packet.
fn payload(packet: &[u8]) -> &[u8] {
    let frame = soupbin::next_frame(packet, 1024).unwrap().unwrap();
    assert_eq!(frame.len, packet.len());
    match (
        soupbin::decode_client(&frame),
        soupbin::decode_server(&frame),
    ) {
        (Ok(ClientPacket::Unsequenced(m)), _) | (_, Ok(ServerPacket::Sequenced(m))) => m,
        other => panic!("not a data packet: {other:?}"),
    }
}

#[test]
fn o1_enter_order_with_firm() {
    let packet = hex(
        "00 36 55 4f 00 00 00 01 42 00 00 00 64 41 41 50 4c 20 20 20 20 00 00 00 00 00 16 ed 24 30 59 41 \
         4e 4e 43 4c 4f 52 44 2d 30 30 30 31 20 20 20 20 00 06 05 02 41 43 4d 45",
    );
    let Ok(Inbound::Enter(m, o)) = decode_inbound(payload(&packet)) else {
        panic!()
    };
    assert_eq!((m.user_ref.get(), m.side, m.qty.get()), (1, b'B', 100));
    assert_eq!(&m.symbol, b"AAPL    ");
    assert_eq!(m.price.get(), 1_502_500);
    assert_eq!(
        (m.tif, m.display, m.capacity, m.iso, m.cross_type),
        (b'0', b'Y', b'A', b'N', b'N')
    );
    assert_eq!(&m.clordid, b"CLORD-0001    ");
    assert_eq!(
        o,
        Options {
            firm: Some(*b"ACME"),
            ..Options::default()
        }
    );
    let mut out = Vec::new();
    Inbound::Enter(m, o).write(&mut out);
    assert_eq!(out, payload(&packet));
}

#[test]
fn o2_order_accepted_with_firm() {
    let packet = hex(
        "00 47 53 41 00 00 1f 1a ce d9 f0 7b 00 00 00 01 42 00 00 00 64 41 41 50 4c 20 20 20 20 00 00 00 \
         00 00 16 ed 24 30 59 00 00 00 00 00 0f 42 41 41 4e 4e 4c 43 4c 4f 52 44 2d 30 30 30 31 20 20 20 \
         20 00 06 05 02 41 43 4d 45",
    );
    let Ok(Outbound::Accepted(m, o)) = decode_outbound(payload(&packet)) else {
        panic!()
    };
    assert_eq!(m.timestamp.get(), 34_200_000_000_123);
    assert_eq!(
        (m.user_ref.get(), m.order_ref.get(), m.order_state),
        (1, 1_000_001, b'L')
    );
    assert_eq!(o.firm, Some(*b"ACME"));
    let mut out = Vec::new();
    write_with_options(&mut out, m, &o);
    assert_eq!(out, payload(&packet));
}

#[test]
fn o3_order_executed() {
    let packet = hex(
        "00 25 53 45 00 00 1f 1a ce e1 91 20 00 00 00 01 00 00 00 28 00 00 00 00 00 16 ed 24 41 00 00 00 00 00 4c 4b 41 00 00",
    );
    let Ok(Outbound::Executed(m, o)) = decode_outbound(payload(&packet)) else {
        panic!()
    };
    assert_eq!(
        (m.user_ref.get(), m.qty.get(), m.price.get()),
        (1, 40, 1_502_500)
    );
    assert_eq!((m.liquidity, m.match_number.get()), (b'A', 5_000_001));
    assert_eq!(o, Options::default());
}

#[test]
fn o4_replace_order_with_max_floor() {
    let packet = hex(
        "00 2f 55 55 00 00 00 01 00 00 00 02 00 00 00 64 00 00 00 00 00 16 ed 88 30 59 4e 43 4c 4f 52 44 \
         2d 30 30 30 32 20 20 20 20 00 06 05 05 00 00 00 14",
    );
    let Ok(Inbound::Replace(m, o)) = decode_inbound(payload(&packet)) else {
        panic!()
    };
    assert_eq!(
        (m.orig_user_ref.get(), m.user_ref.get(), m.qty.get()),
        (1, 2, 100)
    );
    assert_eq!(m.price.get(), 1_502_600);
    assert_eq!(o.max_floor, Some(20));
}

#[test]
fn o5_cancel_order() {
    let packet = hex("00 0a 55 58 00 00 00 02 00 00 00 00");
    let Ok(Inbound::Cancel(m, o)) = decode_inbound(payload(&packet)) else {
        panic!()
    };
    assert_eq!((m.user_ref.get(), m.qty.get()), (2, 0));
    assert_eq!(o, Options::default());
}

#[test]
fn malformed_messages_give_reasons() {
    assert_eq!(decode_inbound(&[]), Err(DecodeError::EmptyMessage));
    assert_eq!(
        decode_inbound(b"Z"),
        Err(DecodeError::UnknownMessageType(b'Z'))
    );
    assert!(matches!(
        decode_inbound(b"X\0\0\0\x01"),
        Err(DecodeError::WrongLength { .. })
    ));
    // Enter Order announcing 6 appendage bytes but carrying 5.
    let packet = hex(
        "00 35 55 4f 00 00 00 01 42 00 00 00 64 41 41 50 4c 20 20 20 20 00 00 00 00 00 16 ed 24 30 59 41 \
         4e 4e 43 4c 4f 52 44 2d 30 30 30 31 20 20 20 20 00 06 05 02 41 43 4d",
    );
    assert!(matches!(
        decode_inbound(payload(&packet)),
        Err(DecodeError::AppendageLength { .. })
    ));
    assert_eq!(Options::parse(&[0]), Err(DecodeError::OptionLengthZero));
    assert_eq!(
        Options::parse(&[5, 2, b'A']),
        Err(DecodeError::OptionOverrun)
    );
    assert_eq!(
        Options::parse(&[3, 2, b'A', b'B']),
        Err(DecodeError::OptionLength { tag: 2, len: 2 })
    );
    // An unknown tag is skipped by its length, and what follows still decodes.
    assert_eq!(
        Options::parse(&[3, 99, 1, 2, 2, 4, b'R'])
            .unwrap()
            .customer_type,
        Some(b'R')
    );
}

fn options() -> impl Strategy<Value = Options> {
    (
        (
            any::<Option<u64>>(),
            any::<Option<[u8; 4]>>(),
            any::<Option<u32>>(),
            any::<Option<u8>>(),
            any::<Option<u32>>(),
            any::<Option<u8>>(),
        ),
        (
            any::<Option<i32>>(),
            any::<Option<u8>>(),
            any::<Option<u32>>(),
            any::<Option<u8>>(),
            any::<Option<u8>>(),
            any::<Option<u8>>(),
        ),
        (
            any::<Option<u64>>(),
            any::<Option<u8>>(),
            any::<Option<u32>>(),
            any::<Option<u64>>(),
            any::<Option<u16>>(),
            any::<Option<u8>>(),
            any::<Option<u8>>(),
        ),
        (
            any::<Option<u64>>(),
            any::<Option<u8>>(),
            any::<Option<i32>>(),
            any::<Option<u32>>(),
        ),
    )
        .prop_map(|(a, b, c, d)| Options {
            secondary_ord_ref: a.0,
            firm: a.1,
            min_qty: a.2,
            customer_type: a.3,
            max_floor: a.4,
            price_type: a.5,
            peg_offset: b.0,
            post_only: b.1,
            expire_time: b.2,
            trade_now: b.3,
            handle_inst: b.4,
            bbo_weight: b.5,
            reference_price: c.0,
            reference_price_type: c.1,
            display_qty: c.2,
            display_price: c.3,
            group_id: c.4,
            side: c.5,
            user_ref_idx: c.6,
            discretion_price: d.0,
            discretion_price_type: d.1,
            discretion_peg_offset: d.2,
            random_reserves: d.3,
        })
}

/// A message of type `T` from random bytes, with its type byte set.
fn random<T: FromBytes + IntoBytes + KnownLayout + Immutable + Copy>(
    bytes: &[u8],
    msg_type: u8,
) -> T {
    let mut m = T::read_from_prefix(bytes).unwrap().0;
    m.as_mut_bytes()[0] = msg_type;
    m
}

proptest! {
    #[test]
    fn inbound_round_trips(bytes in proptest::collection::vec(any::<u8>(), 64), opts in options(), which in 0u8..6) {
        let (e, r, c, m, mc): (EnterOrder, ReplaceOrder, CancelOrder, ModifyOrder, MassCancelRequest) = (
            random(&bytes, inbound::ENTER), random(&bytes, inbound::REPLACE), random(&bytes, inbound::CANCEL),
            random(&bytes, inbound::MODIFY), random(&bytes, inbound::MASS_CANCEL),
        );
        let msg = match which {
            0 => Inbound::Enter(&e, opts),
            1 => Inbound::Replace(&r, opts),
            2 => Inbound::Cancel(&c, opts),
            3 => Inbound::Modify(&m, opts),
            4 => Inbound::MassCancel(&mc, opts),
            _ => Inbound::AccountQuery(opts),
        };
        let mut out = Vec::new();
        msg.write(&mut out);
        let decoded = decode_inbound(&out).unwrap();
        // The appendage length field is recomputed on encoding; compare everything else.
        let normalize = |m: Inbound<'_>| { let mut b = Vec::new(); m.write(&mut b); b };
        prop_assert_eq!(normalize(decoded), out.clone());
        let options_of = |m: Inbound<'_>| match m {
            Inbound::Enter(_, o) | Inbound::Replace(_, o) | Inbound::Cancel(_, o) | Inbound::Modify(_, o)
            | Inbound::MassCancel(_, o) | Inbound::AccountQuery(o) => o,
        };
        prop_assert_eq!(options_of(decoded), opts);
    }

    #[test]
    fn outbound_round_trips(bytes in proptest::collection::vec(any::<u8>(), 80), opts in options(), which in 0u8..12) {
        let mut out = Vec::new();
        match which {
            0 => write_fixed(&mut out, &random::<SystemEvent>(&bytes, outbound::SYSTEM_EVENT)),
            1 => write_with_options(&mut out, &random::<OrderAccepted>(&bytes, outbound::ACCEPTED), &opts),
            2 => write_with_options(&mut out, &random::<OrderReplaced>(&bytes, outbound::REPLACED), &opts),
            3 => write_fixed(&mut out, &random::<OrderCanceled>(&bytes, outbound::CANCELED)),
            4 => write_fixed(&mut out, &random::<AiqCanceled>(&bytes, outbound::AIQ_CANCELED)),
            5 => write_with_options(&mut out, &random::<OrderExecuted>(&bytes, outbound::EXECUTED), &opts),
            6 => write_fixed(&mut out, &random::<Rejected>(&bytes, outbound::REJECTED)),
            7 => write_fixed(&mut out, &random::<CancelReject>(&bytes, outbound::CANCEL_REJECT)),
            8 => write_fixed(&mut out, &random::<OrderModified>(&bytes, outbound::MODIFIED)),
            9 => write_with_options(&mut out, &random::<OrderRestated>(&bytes, outbound::RESTATED), &opts),
            10 => write_fixed(&mut out, &random::<AccountQueryResponse>(&bytes, outbound::ACCOUNT_QUERY_RESPONSE)),
            _ => write_with_options(&mut out, &random::<MassCancelResponse>(&bytes, outbound::MASS_CANCEL_RESPONSE), &opts),
        }
        let decoded = decode_outbound(&out).unwrap();
        let mut again = Vec::new();
        match decoded {
            Outbound::SystemEvent(m) => write_fixed(&mut again, m),
            Outbound::Accepted(m, o) => write_with_options(&mut again, m, &o),
            Outbound::Replaced(m, o) => write_with_options(&mut again, m, &o),
            Outbound::Canceled(m) => write_fixed(&mut again, m),
            Outbound::AiqCanceled(m) => write_fixed(&mut again, m),
            Outbound::Executed(m, o) => write_with_options(&mut again, m, &o),
            Outbound::Rejected(m) => write_fixed(&mut again, m),
            Outbound::CancelReject(m) => write_fixed(&mut again, m),
            Outbound::Modified(m) => write_fixed(&mut again, m),
            Outbound::Restated(m, o) => write_with_options(&mut again, m, &o),
            Outbound::AccountQueryResponse(m) => write_fixed(&mut again, m),
            Outbound::MassCancelResponse(m, o) => write_with_options(&mut again, m, &o),
        }
        prop_assert_eq!(again, out);
    }

    /// The gateway's mapping of any decoded message: never a panic, and whatever it passes
    /// on (to the book, or back in a Rejected) holds only printable ASCII in alpha fields.
    #[test]
    fn any_inbound_maps_to_a_command_with_only_alpha_text(bytes in proptest::collection::vec(any::<u8>(), 64), opts in options(), which in 0u8..6, masks in any::<(u16, u16, u16)>()) {
        use ironmatch::book::CommandBody;
        use ironmatch::wire::ouch::is_alpha;
        // Each Enter field made valid seven times in eight, so some orders get through.
        let valid = masks.0 | masks.1 | masks.2;
        let mut e: EnterOrder = random(&bytes, inbound::ENTER);
        let fields: [&mut dyn FnMut(&mut EnterOrder); 10] = [
            &mut |e| e.side = b'B', &mut |e| e.qty = 100.into(), &mut |e| e.symbol = *b"AAPL    ",
            &mut |e| e.price = 1_500_000.into(), &mut |e| e.tif = b'0', &mut |e| e.display = b'Y',
            &mut |e| e.capacity = b'A', &mut |e| e.iso = b'N', &mut |e| e.cross_type = b'N',
            &mut |e| e.clordid = *b"ID-1          ",
        ];
        for (bit, set) in fields.into_iter().enumerate() {
            if valid & (1 << bit) != 0 {
                set(&mut e);
            }
        }
        let (_, r, c, m, mc): (EnterOrder, ReplaceOrder, CancelOrder, ModifyOrder, MassCancelRequest) = (
            random(&bytes, inbound::ENTER), random(&bytes, inbound::REPLACE), random(&bytes, inbound::CANCEL),
            random(&bytes, inbound::MODIFY), random(&bytes, inbound::MASS_CANCEL),
        );
        let msg = match which {
            0 => Inbound::Enter(&e, opts),
            1 => Inbound::Replace(&r, opts),
            2 => Inbound::Cancel(&c, opts),
            3 => Inbound::Modify(&m, opts),
            4 => Inbound::MassCancel(&mc, opts),
            _ => Inbound::AccountQuery(opts),
        };
        let firm = ironmatch::types::Firm::from_str_padded("MMA").unwrap();
        match ironmatch::gateway::to_command(&msg, firm) {
            CommandBody::New(o) => {
                let codes = [o.echo.capacity, o.echo.iso, o.echo.cross_type, o.echo.customer_type];
                prop_assert!(is_alpha(&o.echo.clordid) && is_alpha(&codes));
                prop_assert!(is_alpha(&o.symbol.0) && is_alpha(&o.firm.0));
            }
            CommandBody::Replace(o) => prop_assert!(is_alpha(&o.echo.clordid) && is_alpha(&[o.echo.iso])),
            CommandBody::MassCancel { firm, symbol, .. } => prop_assert!(is_alpha(&firm.0) && is_alpha(&symbol.0)),
            CommandBody::GatewayReject { clordid, .. }
            | CommandBody::InvalidReplace { clordid, .. } => prop_assert!(is_alpha(&clordid)),
            _ => {}
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_inbound(&bytes);
        let _ = decode_outbound(&bytes);
        let _ = Options::parse(&bytes);
        if let Ok(Some(frame)) = soupbin::next_frame(&bytes, 512) {
            let _ = soupbin::decode_client(&frame);
            let _ = soupbin::decode_server(&frame);
        }
    }
}
