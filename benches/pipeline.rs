//! `pipeline/in_process`: encoded OUCH bytes in, through decoding, the rings, the matcher
//! and the journal writer threads (writing a real journal in a temporary directory,
//! `fsync = "never"`), to encoded OUCH bytes out. The benchmark thread plays
//! the gateway (decode, push; pop, encode) without sockets. Each message is an Enter Order
//! or a Cancel Order of it, so every message gets exactly one reply.
//!
//! Criterion reports throughput with the ring kept full. After it, a latency run sends one
//! message at a time and prints the round-trip distribution (HdrHistogram) through the
//! same threads. Both use the shipped configuration's wait strategy (`spin_park`);
//! `IRONMATCH_WAIT=busy_spin` or `spin_yield` overrides it. Threading as `serve` would
//! pick (`auto`), or `IRONMATCH_THREADING=shared|dedicated`: in `shared` the benchmark
//! thread runs the matcher and journal writer agents itself after pushing (as the shared
//! runner does after the gateway's turn), in `dedicated` they run on a thread each. `IRONMATCH_FEED=1` also runs
//! the ITCH feed publisher as `serve` does (following the journal, sending to the loopback
//! discard port), to show what publishing costs the pipeline; `IRONMATCH_FEED_POLL_US`
//! overrides its `poll_interval_us` (0: woken by the writer after every batch).
//! `IRONMATCH_METRICS=1` (shared threading only) turns on the matcher's and journal
//! writer's metrics as `serve` does when the admin endpoint is on, as in the shipped
//! configuration. The replies go into the user's session store as the gateway's egress
//! puts them (framed as Sequenced Data, chunks of `session_store_bytes` written out by
//! the store's thread to a file in the journal's directory), and each drain then takes
//! what is unsent and marks it sent, as a flush to a socket that takes everything does;
//! `IRONMATCH_STORE=0` encodes each reply into a buffer instead (the bench before
//! 2026-12-06), to show what the store costs the egress path.

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam::sync::Parker;
use hdrhistogram::Histogram;
use ironmatch::admin::metrics::EngineMetrics;
use ironmatch::book::{Command, EventBody};
use ironmatch::config::Config;
use ironmatch::feed::{PublisherStart, spawn_publisher};
use ironmatch::gateway::{SessionStore, Spiller, encode_event, to_command};
use ironmatch::pipeline::{Agent, CompositeAgent, Record, Ring, Threading, Wake};
use ironmatch::server::{core_agents, open_journal, spawn_core};
use ironmatch::types::{OwnerId, Symbol, Timestamp};
use ironmatch::venue::VenueClock;
use ironmatch::wire::ouch::{self, Inbound, Options, decode_inbound};
use ironmatch::wire::soupbin::{self, ClientPacket, kind};
use zerocopy::big_endian::U32;

struct Pipeline {
    /// `shared`: the matcher and journal writer, run by the benchmark thread.
    core: Option<CompositeAgent>,
    to_matcher: Arc<Ring<Record>>,
    to_egress: Arc<Ring<Record>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    feed: Option<std::thread::JoinHandle<()>>,
    feed_stop: Arc<AtomicBool>,
    /// The journal's directory, removed once every thread has ended.
    dir: std::path::PathBuf,
    symbols: Vec<Symbol>,
    firm: ironmatch::types::Firm,
    next_ref: u32,
    out: Vec<u8>,
    /// The user's session store, as the gateway keeps it (`None`: `IRONMATCH_STORE=0`).
    store: Option<SessionStore>,
}

impl Pipeline {
    fn start() -> Pipeline {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/ironmatch.toml"
        ))
        .unwrap();
        // IRONMATCH_WAIT=busy_spin|spin_yield|spin_park overrides the shipped wait strategy.
        let text = match std::env::var("IRONMATCH_WAIT") {
            Ok(wait) => text.replace("wait = \"spin_park\"", &format!("wait = \"{wait}\"")),
            Err(_) => text,
        };
        let text = match std::env::var("IRONMATCH_THREADING") {
            Ok(mode) => text.replace("threading = \"auto\"", &format!("threading = \"{mode}\"")),
            Err(_) => text,
        };
        let config = Config::parse(&text, "config/ironmatch.toml").unwrap();
        let (threading, why) = config.threading().choose();
        eprintln!(
            "pipeline bench: wait strategy {}, threading {} ({why})",
            config.pipeline.wait,
            threading.name()
        );
        let book = config.book_config().unwrap();
        let parker = Parker::new();
        let to_matcher = Arc::new(Ring::new(
            config.pipeline.ring_capacity,
            if threading == Threading::Shared {
                Wake::None
            } else {
                Wake::Thread(parker.unparker().clone())
            },
        ));
        // The benchmark thread polls the egress ring itself; nobody needs to wake it.
        let to_egress = Arc::new(Ring::new(
            config.pipeline.ring_capacity,
            Wake::Thread(Parker::new().unparker().clone()),
        ));
        // A real journal writer, on a fresh directory (fsync as shipped: "never").
        let dir = std::env::temp_dir().join(format!("ironmatch-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = config;
        config.journal.dir = dir.display().to_string();
        let opened = open_journal(&config, &book, |_| {}).unwrap();
        let (matcher, mut writer) = (opened.matcher, opened.writer);
        let feed_stop = Arc::new(AtomicBool::new(false));
        let feed = std::env::var("IRONMATCH_FEED")
            .is_ok_and(|v| v == "1")
            .then(|| {
                let mut marketdata = config.marketdata.clone();
                marketdata.destination = "127.0.0.1:9".into();
                marketdata.retransmission = "127.0.0.1:0".into();
                marketdata.end_of_session_ms = 0;
                if let Ok(us) = std::env::var("IRONMATCH_FEED_POLL_US") {
                    marketdata.poll_interval_us = us.parse().unwrap();
                }
                eprintln!(
                    "pipeline bench: feed poll_interval_us {}",
                    marketdata.poll_interval_us
                );
                let signalled = marketdata.poll_interval_us == 0;
                let start = PublisherStart {
                    cluster: None,
                    dir: dir.clone(),
                    book: book.clone(),
                    marketdata,
                    core: None,
                    live_from: writer.next_seq(),
                    written: Some(writer.written()),
                    day_over: None,
                };
                let publisher = spawn_publisher(start, Arc::clone(&feed_stop)).unwrap();
                if signalled {
                    writer.set_follower_signal(publisher.signal);
                }
                publisher.thread
            });
        eprintln!(
            "pipeline bench: feed publisher {}",
            if feed.is_some() { "on" } else { "off" }
        );
        let metrics = std::env::var("IRONMATCH_METRICS").is_ok_and(|v| v == "1");
        assert!(
            !metrics || threading == Threading::Shared,
            "IRONMATCH_METRICS=1 is for shared threading"
        );
        eprintln!(
            "pipeline bench: metrics {}",
            if metrics { "on" } else { "off" }
        );
        let store = (std::env::var("IRONMATCH_STORE").as_deref() != Ok("0")).then(|| {
            let spiller = Spiller::start(None).unwrap();
            let file = spiller.file_in(&dir.join("sessions")).unwrap();
            SessionStore::new(config.gateway.session_store_bytes, Some(file))
        });
        eprintln!(
            "pipeline bench: session store {}",
            if store.is_some() { "on" } else { "off" }
        );
        let (core, threads) = if threading == Threading::Shared {
            let (mut matcher, mut journal, _) = core_agents(
                matcher,
                writer,
                config.pipeline.ring_capacity,
                threading,
                Arc::clone(&to_matcher),
                Arc::clone(&to_egress),
            );
            if metrics {
                // As `serve` does when the admin endpoint is on (the shipped config).
                let m = Arc::new(EngineMetrics::new(
                    book.instruments.len(),
                    book.owners.len(),
                    config.pipeline.ring_capacity,
                    VenueClock::new(jiff::tz::TimeZone::UTC),
                ));
                matcher.set_metrics(Arc::clone(&m));
                journal.set_metrics(m);
            }
            let agents: Vec<Box<dyn Agent>> = vec![Box::new(matcher), Box::new(journal)];
            (Some(CompositeAgent::new("core", agents)), Vec::new())
        } else {
            let core = spawn_core(
                matcher,
                writer,
                &config,
                (Arc::clone(&to_matcher), parker),
                Arc::clone(&to_egress),
            )
            .unwrap();
            (None, core.threads)
        };
        Pipeline {
            core,
            to_matcher,
            to_egress,
            threads,
            feed,
            feed_stop,
            dir,
            symbols: book.instruments.iter().map(|i| i.symbol).collect(),
            firm: book.owners[0].firm,
            next_ref: 0,
            out: Vec::with_capacity(1 << 20),
            store,
        }
    }

    /// `n` SoupBinTCP packets: Enter Order / Cancel Order pairs, passive, fresh references.
    fn packets(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(n * 60);
        let mut payload = Vec::with_capacity(64);
        for i in 0..n {
            payload.clear();
            if i % 2 == 0 {
                self.next_ref += 1;
                let price = 1_490_000 - u64::from(self.next_ref % 50) * 100;
                let m = ouch::EnterOrder::new(
                    self.next_ref,
                    b'B',
                    100,
                    *b"AAPL    ",
                    price,
                    b'0',
                    b'Y',
                );
                Inbound::Enter(&m, Options::default()).write(&mut payload);
            } else {
                let m = ouch::CancelOrder {
                    msg_type: b'X',
                    user_ref: U32::new(self.next_ref),
                    qty: U32::ZERO,
                };
                Inbound::Cancel(&m, Options::default()).write(&mut payload);
            }
            soupbin::write_packet(&mut bytes, kind::UNSEQUENCED, &payload);
        }
        bytes
    }

    /// Decodes one packet at the front of `bytes` and pushes its command; returns its length.
    fn ingest(&self, bytes: &[u8]) -> usize {
        let frame = soupbin::next_frame(bytes, 512).unwrap().unwrap();
        let ClientPacket::Unsequenced(msg) = soupbin::decode_client(&frame).unwrap() else {
            unreachable!()
        };
        let body = to_command(&decode_inbound(msg).unwrap(), self.firm);
        let cmd = Command {
            ts: Timestamp(0),
            owner: OwnerId(0),
            body,
        };
        while self.to_matcher.try_push(Record::Command(cmd)).is_err() {
            std::hint::spin_loop();
        }
        frame.len
    }

    /// In `shared` threading, runs the matcher and journal writer until they are idle.
    fn run_core(&mut self) {
        if let Some(core) = &mut self.core {
            while core.do_work() > 0 {}
        }
    }

    /// Encodes every released reply (into the session store, then sent: see the module
    /// docs); returns how many order-entry replies were encoded.
    fn drain(&mut self) -> usize {
        let mut replies = 0;
        let symbols = &self.symbols;
        while let Some(record) = self.to_egress.try_pop() {
            if let Record::Event(e) = record
                && !matches!(e.body, EventBody::MdAdd { .. } | EventBody::MdDelete { .. })
            {
                match &mut self.store {
                    Some(store) => store.append(|out| {
                        encode_event(&e, symbols, out);
                    }),
                    None => {
                        self.out.clear();
                        encode_event(&e, symbols, &mut self.out);
                        black_box(&self.out);
                    }
                }
                replies += 1;
            }
        }
        if let Some(store) = &mut self.store {
            // The flush: a socket that takes every byte (chunk by chunk).
            while !store.unsent().is_empty() {
                let n = black_box(store.unsent()).len();
                store.mark_sent(n);
            }
        }
        replies
    }

    fn stop(mut self) {
        self.to_matcher.push(Record::Shutdown);
        self.to_matcher.notify();
        self.run_core();
        while !matches!(self.to_egress.try_pop(), Some(Record::Shutdown)) {
            std::hint::spin_loop();
        }
        for t in self.threads {
            t.join().unwrap();
        }
        self.feed_stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.feed {
            t.join().unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn throughput(c: &mut Criterion) {
    let mut p = Pipeline::start();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("in_process", |b| {
        b.iter_custom(|iters| {
            let bytes = p.packets(iters as usize);
            let start = Instant::now();
            let (mut at, mut replies) = (0, 0);
            while replies < iters as usize {
                let mut pushed = 0;
                while at < bytes.len() && p.to_matcher.room() > 0 && pushed < 256 {
                    at += p.ingest(&bytes[at..]);
                    pushed += 1;
                }
                if pushed > 0 {
                    p.to_matcher.notify();
                }
                p.run_core();
                replies += p.drain();
            }
            start.elapsed()
        })
    });
    group.finish();
    latency(&mut p);
    p.stop();
}

/// One message in flight at a time: the pipeline's own round trip, without sockets.
fn latency(p: &mut Pipeline) {
    const MESSAGES: usize = 200_000;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let bytes = p.packets(MESSAGES);
    let mut at = 0;
    for _ in 0..MESSAGES {
        let start = Instant::now();
        at += p.ingest(&bytes[at..]);
        p.to_matcher.notify();
        let deadline = start + Duration::from_secs(5);
        p.run_core();
        while p.drain() == 0 {
            assert!(Instant::now() < deadline, "no reply within 5 s");
            std::hint::spin_loop();
        }
        histogram.record(start.elapsed().as_nanos() as u64).unwrap();
    }
    println!(
        "pipeline/in_process round trip, one message in flight, {MESSAGES} messages: \
         p50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns, p99.99 {} ns, max {} ns",
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.value_at_quantile(0.9999),
        histogram.max()
    );
}

criterion_group!(name = pipeline; config = Criterion::default().measurement_time(Duration::from_secs(5)); targets = throughput);
criterion_main!(pipeline);
