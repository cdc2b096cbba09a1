//! Matching-core benchmarks: `book/add`, `book/cancel`, `book/match`, `book/mixed`, and
//! `book/baseline` (the harness alone: walking a command stream without matching).
//!
//! Each bench times a pre-built command stream applied to a book in steady state; building
//! the stream and resetting the book are not timed. Throughput is commands per second.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ironmatch::book::{
    BookConfig, Command, CommandBody, Echo, Event, EventBody, InstrumentSpec, Matcher, NewOrder,
    OwnerSpec, StpMode, TimeInForce,
};
use ironmatch::types::{Firm, OwnerId, Price, Qty, Side, Symbol, Timestamp, UserRef};

const INSTRUMENTS: usize = 4;
const MAKERS: u16 = 8;
const TAKER: u16 = MAKERS;
const TICK: u64 = 100;
const MID: u64 = 1_000_000;

fn config() -> BookConfig {
    let instruments = (0..INSTRUMENTS)
        .map(|i| InstrumentSpec {
            symbol: Symbol::from_str_padded(&format!("SYM{i}")).unwrap(),
            tick: Price(TICK),
            lot: 1,
            min_price: Price(TICK),
            max_price: Price(MID * 2),
            max_qty: 999_999,
            ref_price: Price(MID),
            band_bps: 2_000,
        })
        .collect();
    let owners = (0..=MAKERS)
        .map(|i| OwnerSpec {
            firm: Firm::from_str_padded(&format!("F{i}")).unwrap(),
            cancel_on_disconnect: false,
            stp: None,
        })
        .collect();
    BookConfig {
        instruments,
        owners,
        orders_max: 1 << 18,
        levels_max: 1 << 16,
        stp: StpMode::CancelResting,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Builds commands with increasing references and timestamps.
struct Stream {
    cfg: BookConfig,
    refs: Vec<u32>,
    ts: u64,
    cmds: Vec<Command>,
}

impl Stream {
    fn new(cfg: &BookConfig) -> Stream {
        Stream {
            cfg: cfg.clone(),
            refs: vec![0; cfg.owners.len()],
            ts: 34_200_000_000_000,
            cmds: Vec::new(),
        }
    }

    fn push(&mut self, owner: u16, body: CommandBody) {
        self.ts += 100;
        self.cmds.push(Command {
            ts: Timestamp(self.ts),
            owner: OwnerId(owner),
            body,
        });
    }

    fn fresh_ref(&mut self, owner: u16) -> UserRef {
        self.refs[usize::from(owner)] += 1;
        UserRef(self.refs[usize::from(owner)])
    }

    fn order(
        &mut self,
        owner: u16,
        instrument: usize,
        side: Side,
        price: u64,
        qty: u32,
        tif: TimeInForce,
    ) -> UserRef {
        let user_ref = self.fresh_ref(owner);
        let body = CommandBody::New(NewOrder {
            user_ref,
            side,
            qty: Qty(qty),
            symbol: self.cfg.instruments[instrument].symbol,
            price: Some(Price(price)),
            tif,
            hidden: false,
            post_only: false,
            min_qty: Qty(0),
            max_floor: Qty(0),
            firm: self.cfg.owners[usize::from(owner)].firm,
            echo: Echo::default(),
        });
        self.push(owner, body);
        user_ref
    }

    fn cancel(&mut self, owner: u16, user_ref: UserRef) {
        self.push(
            owner,
            CommandBody::Cancel {
                user_ref,
                qty: Qty(0),
            },
        );
    }
}

/// Passive price `depth` ticks away from the mid on `side`.
fn passive(side: Side, mid: u64, depth: u64) -> u64 {
    if side == Side::Buy {
        mid - depth * TICK
    } else {
        mid + depth * TICK
    }
}

/// A book with `levels` levels of `per_level` orders each side on every instrument.
fn depth_stream(cfg: &BookConfig, levels: u64, per_level: u64) -> Stream {
    let mut s = Stream::new(cfg);
    for instrument in 0..INSTRUMENTS {
        for depth in 1..=levels {
            for k in 0..per_level {
                let owner = (k % u64::from(MAKERS)) as u16;
                s.order(
                    owner,
                    instrument,
                    Side::Buy,
                    passive(Side::Buy, MID, depth),
                    100,
                    TimeInForce::Day,
                );
                s.order(
                    owner,
                    instrument,
                    Side::Sell,
                    passive(Side::Sell, MID, depth),
                    100,
                    TimeInForce::Day,
                );
            }
        }
    }
    s
}

/// Market-maker flow: quotes near the top, cancels of own quotes, a few marketable IOCs.
/// Generated against a live matcher so cancels name orders that are really resting.
fn mixed_stream(cfg: &BookConfig, len: usize, seed: u64) -> (Vec<Command>, usize) {
    let mut rng = Rng(seed);
    let mut s = depth_stream(cfg, 20, 4);
    let warmup = s.cmds.len();
    let mut matcher = Matcher::new(cfg);
    let mut events = Vec::new();
    for c in &s.cmds {
        matcher.apply(c, &mut events);
    }
    let mut live: Vec<Vec<(UserRef, usize)>> = vec![Vec::new(); usize::from(MAKERS)];
    let mut mids = [MID; INSTRUMENTS];
    while s.cmds.len() < warmup + len {
        let instrument = rng.below(INSTRUMENTS as u64) as usize;
        if rng.below(500) == 0 {
            mids[instrument] = if rng.below(2) == 0 {
                mids[instrument] + TICK
            } else {
                mids[instrument] - TICK
            };
        }
        let mid = mids[instrument];
        let roll = rng.below(100);
        let owner = rng.below(u64::from(MAKERS)) as u16;
        let book = &mut live[usize::from(owner)];
        if roll < 45 || (roll < 90 && book.is_empty()) {
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            // Mostly the first few levels, sometimes deeper.
            let depth = 1 + rng.below(4) + if rng.below(8) == 0 { rng.below(16) } else { 0 };
            let qty = 100 * (1 + rng.below(5) as u32);
            let user_ref = s.order(
                owner,
                instrument,
                side,
                passive(side, mid, depth),
                qty,
                TimeInForce::Day,
            );
            live[usize::from(owner)].push((user_ref, instrument));
        } else if roll < 95 && !book.is_empty() {
            let i = rng.below(book.len() as u64) as usize;
            let (user_ref, _) = book.swap_remove(i);
            s.cancel(owner, user_ref);
        } else {
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let through = 1 + rng.below(2);
            let price = if side == Side::Buy {
                mid + through * TICK
            } else {
                mid - through * TICK
            };
            s.order(
                TAKER,
                instrument,
                side,
                price,
                100 * (1 + rng.below(4) as u32),
                TimeInForce::Ioc,
            );
        }
        events.clear();
        matcher.apply(s.cmds.last().unwrap(), &mut events);
        for e in &events {
            let gone = match e.body {
                EventBody::Executed {
                    owner,
                    user_ref,
                    leaves,
                    ..
                } if leaves.0 == 0 => Some((owner, user_ref)),
                EventBody::AiqCanceled {
                    owner, user_ref, ..
                } => Some((owner, user_ref)),
                _ => None,
            };
            if let Some((owner, user_ref)) = gone
                && owner.0 < MAKERS
            {
                live[usize::from(owner.0)].retain(|(r, _)| *r != user_ref);
            }
        }
    }
    eprintln!(
        "mixed stream: {} commands, {} orders resting at the end",
        s.cmds.len(),
        matcher.resting_orders()
    );
    (s.cmds, warmup)
}

/// Times `timed` after applying `setup`, resetting the matcher whenever the stream is used up.
fn run_stream(cfg: &BookConfig, setup: &[Command], timed: &[Command], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    let mut events: Vec<Event> = Vec::with_capacity(1 << 16);
    while done < iters {
        let mut matcher = Matcher::new(cfg);
        for c in setup {
            events.clear();
            matcher.apply(c, &mut events);
        }
        let n = (iters - done).min(timed.len() as u64) as usize;
        let start = Instant::now();
        for c in &timed[..n] {
            events.clear();
            matcher.apply(black_box(c), &mut events);
            black_box(&events);
        }
        total += start.elapsed();
        done += n as u64;
    }
    total
}

fn benches(c: &mut Criterion) {
    let cfg = config();
    let mut group = c.benchmark_group("book");
    group.throughput(Throughput::Elements(1));

    // The harness alone: the same loop over commands, without matching.
    let (mixed, warmup) = mixed_stream(&cfg, 1_000_000, 7);
    group.bench_function("baseline", |b| {
        b.iter_custom(|iters| {
            let mut events: Vec<Event> = Vec::with_capacity(16);
            let start = Instant::now();
            for c in mixed[warmup..].iter().cycle().take(iters as usize) {
                events.clear();
                black_box(c);
                black_box(&events);
            }
            start.elapsed()
        })
    });

    // Adds of passive orders into a book 20 levels deep; each batch is then canceled untimed
    // (by resetting), so the book stays in the same state.
    let setup = depth_stream(&cfg, 20, 4);
    let mut adds = Stream::new(&cfg);
    adds.refs = setup.refs.clone();
    adds.ts = setup.ts;
    let mut rng = Rng(1);
    for _ in 0..100_000 {
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let instrument = rng.below(INSTRUMENTS as u64) as usize;
        let owner = rng.below(u64::from(MAKERS)) as u16;
        adds.order(
            owner,
            instrument,
            side,
            passive(side, MID, 1 + rng.below(20)),
            100,
            TimeInForce::Day,
        );
    }
    group.bench_function("add", |b| {
        b.iter_custom(|iters| run_stream(&cfg, &setup.cmds, &adds.cmds, iters))
    });

    // Cancels, in random order, of the orders the add stream entered.
    let mut with_adds = setup.cmds.clone();
    with_adds.extend_from_slice(&adds.cmds);
    let mut cancels = Stream::new(&cfg);
    cancels.refs = adds.refs.clone();
    cancels.ts = adds.ts;
    let mut targets: Vec<(u16, UserRef)> = adds
        .cmds
        .iter()
        .map(|c| match c.body {
            CommandBody::New(o) => (c.owner.0, o.user_ref),
            _ => unreachable!(),
        })
        .collect();
    for i in (1..targets.len()).rev() {
        targets.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (owner, user_ref) in targets {
        cancels.cancel(owner, user_ref);
    }
    group.bench_function("cancel", |b| {
        b.iter_custom(|iters| run_stream(&cfg, &with_adds, &cancels.cmds, iters))
    });

    // Aggressive IOC orders, each sweeping 5 levels of 4 orders (20 fills) of a book
    // 20 levels deep. Only the sweep is timed; after it, untimed adds restore the levels.
    let mut sweeps = Stream::new(&cfg);
    sweeps.refs = setup.refs.clone();
    sweeps.ts = setup.ts;
    let mut sweep_at = Vec::new();
    for k in 0..20_000 {
        let (instrument, side) = (
            (k / 2) % INSTRUMENTS,
            if k % 2 == 0 { Side::Buy } else { Side::Sell },
        );
        let price = if side == Side::Buy {
            MID + 5 * TICK
        } else {
            MID - 5 * TICK
        };
        sweep_at.push(sweeps.cmds.len());
        sweeps.order(TAKER, instrument, side, price, 2_000, TimeInForce::Ioc);
        let maker_side = if side == Side::Buy {
            Side::Sell
        } else {
            Side::Buy
        };
        for depth in 1..=5 {
            for m in 0..4 {
                sweeps.order(
                    m,
                    instrument,
                    maker_side,
                    passive(maker_side, MID, depth),
                    100,
                    TimeInForce::Day,
                );
            }
        }
    }
    group.bench_function("match", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            let mut events: Vec<Event> = Vec::with_capacity(1 << 10);
            while done < iters {
                let mut matcher = Matcher::new(&cfg);
                for c in &setup.cmds {
                    matcher.apply(c, &mut events);
                }
                let mut timed = sweep_at.iter().peekable();
                for (i, c) in sweeps.cmds.iter().enumerate() {
                    if done == iters {
                        break;
                    }
                    events.clear();
                    if timed.peek() == Some(&&i) {
                        timed.next();
                        let start = Instant::now();
                        matcher.apply(black_box(c), &mut events);
                        black_box(&events);
                        total += start.elapsed();
                        done += 1;
                    } else {
                        matcher.apply(c, &mut events);
                    }
                }
            }
            total
        })
    });

    group.bench_function("mixed", |b| {
        b.iter_custom(|iters| run_stream(&cfg, &mixed[..warmup], &mixed[warmup..], iters))
    });
    group.finish();
}

criterion_group!(name = book; config = Criterion::default().measurement_time(Duration::from_secs(4)); targets = benches);
criterion_main!(book);
