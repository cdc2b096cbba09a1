//! Wire codec benchmarks: `wire/decode_enter` (SoupBinTCP frame, OUCH Enter Order, mapping
//! to a matcher command), `wire/encode_executed` (an execution event to OUCH bytes),
//! `wire/encode_accepted` (a Day limit order's acknowledgement, with its Firm option, to
//! OUCH bytes), and `wire/baseline` (copying the same bytes: the harness and memory alone).

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ironmatch::book::{Echo, Event, EventBody, Liquidity, OrderAck, TimeInForce};
use ironmatch::gateway::{encode_event, to_command};
use ironmatch::types::{
    Firm, InstrumentId, MatchId, OrderId, OwnerId, Price, Qty, Side, Symbol, Timestamp, UserRef,
};
use ironmatch::wire::ouch::decode_inbound;
use ironmatch::wire::soupbin::{ClientPacket, decode_client, next_frame};

/// Test vector O1: Unsequenced Data carrying an Enter Order with a Firm option.
const O1: [u8; 56] = [
    0x00, 0x36, 0x55, 0x4f, 0x00, 0x00, 0x00, 0x01, 0x42, 0x00, 0x00, 0x00, 0x64, 0x41, 0x41, 0x50,
    0x4c, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0xed, 0x24, 0x30, 0x59, 0x41,
    0x4e, 0x4e, 0x43, 0x4c, 0x4f, 0x52, 0x44, 0x2d, 0x30, 0x30, 0x30, 0x31, 0x20, 0x20, 0x20, 0x20,
    0x00, 0x06, 0x05, 0x02, 0x41, 0x43, 0x4d, 0x45,
];

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    let firm = Firm::from_str_padded("ACME").unwrap();

    group.bench_function("baseline", |b| {
        let mut out = [0u8; 64];
        b.iter(|| {
            out[..56].copy_from_slice(black_box(&O1));
            black_box(&out);
        })
    });

    group.bench_function("decode_enter", |b| {
        b.iter(|| {
            let frame = next_frame(black_box(&O1), 512).unwrap().unwrap();
            let ClientPacket::Unsequenced(msg) = decode_client(&frame).unwrap() else {
                unreachable!()
            };
            let decoded = decode_inbound(msg).unwrap();
            black_box(to_command(&decoded, firm))
        })
    });

    let event = Event {
        ts: Timestamp(34_200_000_500_000),
        body: EventBody::Executed {
            owner: OwnerId(0),
            user_ref: UserRef(1),
            order_id: OrderId(7),
            qty: Qty(40),
            price: Price(1_502_500),
            liquidity: Liquidity::Added,
            match_id: MatchId(5_000_001),
            leaves: Qty(60),
        },
    };
    group.bench_function("encode_executed", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            black_box(encode_event(black_box(&event), &[], &mut out));
            black_box(&out);
        })
    });
    let accepted = Event {
        ts: Timestamp(34_200_000_000_123),
        body: EventBody::Accepted {
            owner: OwnerId(0),
            order: OrderAck {
                user_ref: UserRef(1),
                order_id: OrderId(1_000_001),
                instrument: InstrumentId(0),
                side: Side::Buy,
                qty: Qty(100),
                price: Price(1_502_500),
                tif: TimeInForce::Day,
                hidden: false,
                post_only: false,
                min_qty: Qty(0),
                max_floor: Qty(0),
                firm,
                echo: Echo::default(),
            },
        },
    };
    let symbols = [Symbol::from_str_padded("AAPL").unwrap()];
    group.bench_function("encode_accepted", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            black_box(encode_event(black_box(&accepted), &symbols, &mut out));
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(wire, benches);
criterion_main!(wire);
