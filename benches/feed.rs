//! Market-data feed benchmarks, per message:
//! - `feed/encode`: journaled market-data events (from a seeded flow through the real
//!   matcher) to ITCH 5.0 messages in file form, and those packed into MoldUDP64 packets of
//!   1,400 bytes: the publisher's whole CPU work per message apart from I/O.
//! - `feed/decode`: a listener's work: packets through the sequencer, ITCH decoding and the
//!   order-by-order book.
//! - `feed/baseline`: copying the same bytes (harness and memory alone).

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ironmatch::book::flow::{ByteSource, FlowDecoder, test_config};
use ironmatch::book::{Event, Matcher, StpMode};
use ironmatch::feed::stream::blocks;
use ironmatch::feed::{FeedBook, Sequencer, Translator};
use ironmatch::wire::itch::Message;
use ironmatch::wire::moldudp64::{PacketBuilder, Session};

/// Market-data events of a seeded flow through the matcher (order-entry events dropped).
fn md_events(commands: usize) -> (ironmatch::book::BookConfig, Vec<Event>) {
    let book = test_config(StpMode::CancelResting);
    let mut matcher = Matcher::new(&book);
    let mut decoder = FlowDecoder::new(&book);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let bytes: Vec<u8> = (0..commands * 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut src = ByteSource::new(&bytes);
    let mut events = Vec::new();
    let mut md = Vec::new();
    let mut n = 0;
    while let Some(cmd) = decoder.next(&mut src) {
        n += 1;
        events.clear();
        matcher.apply(&cmd, &mut events);
        md.extend(events.iter().filter(|e| e.body.owner().is_none()).copied());
    }
    eprintln!("feed bench: {n} commands");
    (book, md)
}

/// Packs framed messages into packets, giving each to `sent`.
fn packetize(builder: &mut PacketBuilder, framed: &[u8], mut sent: impl FnMut(&[u8])) {
    let mut seq = 1u64;
    for block in blocks(framed) {
        if !builder.try_add_block(block) {
            let n = u64::from(builder.count());
            sent(builder.finish(seq));
            builder.clear();
            seq += n;
            builder.try_add_block(block);
        }
    }
    sent(builder.finish(seq));
    builder.clear();
}

fn benches(c: &mut Criterion) {
    let (book, events) = md_events(50_000);
    let session = Session::from_str_padded("BENCH").unwrap();
    // The stream once, to size the groups and to feed the decode bench.
    let mut translator = Translator::new(&book, false);
    let mut framed = Vec::new();
    translator.preamble(0, &mut framed);
    for e in &events {
        translator.event(e, &mut framed).unwrap();
    }
    let messages = translator.messages();
    eprintln!(
        "feed bench: {} events, {messages} ITCH messages, {} bytes",
        events.len(),
        framed.len()
    );
    let mut builder = PacketBuilder::new(session, 1400);
    let mut packets = Vec::new();
    packetize(&mut builder, &framed, |p| packets.push(p.to_vec()));

    let mut group = c.benchmark_group("feed");
    group.throughput(Throughput::Elements(messages));
    group.sample_size(20);

    group.bench_function("baseline", |b| {
        let mut out = Vec::with_capacity(framed.len());
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&framed));
            black_box(&out);
        })
    });

    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(framed.len());
        b.iter(|| {
            let mut t = Translator::new(&book, false);
            out.clear();
            t.preamble(0, &mut out);
            for e in black_box(&events) {
                t.event(e, &mut out).unwrap();
            }
            packetize(&mut builder, &out, |p| {
                black_box(p);
            })
        })
    });

    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut sequencer = Sequencer::new(None);
            let mut feed_book = FeedBook::default();
            for p in black_box(&packets) {
                sequencer
                    .on_packet(p, &mut |_, bytes| {
                        let m = Message::decode(bytes).unwrap();
                        feed_book.apply(&m).unwrap();
                    })
                    .unwrap();
            }
            black_box(feed_book.order_count())
        })
    });
    group.finish();
}

criterion_group!(feed, benches);
criterion_main!(feed);
