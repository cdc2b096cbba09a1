//! Matching-core benchmarks, each on a documented flow (four instruments, eight makers of
//! their own firms and one taker):
//! - `book/baseline`: the harness alone, walking a command stream without matching.
//! - `book/floor`: the harness reading `mixed`'s commands in full (from memory: the stream is
//!   about 96 MB) and writing one record a command, without matching: what the harness
//!   costs on its own (the core's work overlaps part of it, so it is not a sum's term).
//! - `book/add`: passive adds into a book 20 levels deep (4 orders a level).
//! - `book/cancel`: cancels, in random order, of the orders `add` entered.
//! - `book/match`: IOCs that each sweep 5 levels of 4 orders (20 fills).
//! - `book/mixed`: market-maker flow: quotes 1-4 ticks from the mid (sometimes deeper), 45%
//!   adds, 45-50% cancels of own quotes, 5-10% marketable IOCs, the mid drifting.
//!   `IRONMATCH_BOOK_PATTERN` (letters of `ksio`) makes a diagnostic variant of it: each
//!   lettered draw follows a fixed cycle instead of the random generator, so a branch
//!   predictor can learn it (`k`: the command's kind, in every 20 commands the random
//!   flow's shares of its roll; `s`: the side, mostly alternating from add to add; `i`,
//!   `o`: the instrument and the maker, in turn), with each maker still quoting every
//!   instrument on both sides, IOCs meeting every instrument on both sides, and a cancel
//!   still choosing at random among its maker's live quotes (prices, quantities and depths
//!   stay random). The generator prints the stream's shape (adds, cancels, IOCs, fills, live
//!   quotes a cancel chooses among and how old the one it takes is; a run without the
//!   variable prints the random flow's), so what a cycle changes besides the branches can
//!   be read: cycling the maker with the kind makes each maker alternate adds and cancels,
//!   so its cancels choose among fewer, younger quotes (README, "What the flow's randomness
//!   costs"). Unset, the stream is the one the bench always used.
//! - `book/deep`: ~2,000 resting orders over ~70 levels per instrument; 50% adds within 35
//!   ticks of the mid (each side), 40% cancels of random live orders, 5% partial reduces, 5% marketable
//!   IOCs of add size.
//! - `book/wide`: a sparse book on a fine tick (0.0001): a third of the adds log-uniform up
//!   to 5,000 ticks from the mid, the rest within 50, so thousands of ticks lie between the
//!   best and the worst resting level; otherwise the shape of `deep`.
//! - `book/keyed`: the `deep` flow driven the way an embedder with order ids of its own
//!   drives the core: every reference replaced by a scattered 64-bit key (an odd multiple
//!   of the reference, owner bits on top: practically all above 2^32, so in the index's
//!   hash rather than its windows),
//!   under `RefRule::Keys`: the worst case, no two live keys near each other. Compare
//!   with `deep` for what caller keys cost.
//! - `book/keyed_seq`: the same with the ids a benchmark harness or gateway usually has:
//!   one counter shared by every owner (in order of entry), above 2^32.
//! - `book/state`: the matcher's whole state for a snapshot, of the ~100,000 resting orders
//!   `cancel` starts from (throughput: resting orders).
//! - `book/burst`: a flash crash: an IOC sweeps 30 of 50 levels (120 fills), then makers
//!   rebuild them order by order; sides and instruments alternate.
//!
//! Each bench times a pre-built command stream applied to a book in steady state; building
//! the stream and resetting the book are not timed. Throughput is commands per second.
//! Commands are applied as the pipeline's matcher stage applies them, each after
//! `Matcher::prefetch` for the next two (which does nothing below 4,096 resting orders;
//! `IRONMATCH_BOOK_PREFETCH=0` leaves it out).

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use ironmatch::book::{
    BandRemainder, BookConfig, Command, CommandBody, Echo, Event, EventBody, EventSink, Fill,
    InstrumentSpec, Matcher, NewOrder, OwnerSpec, RefRule, Removal, Rested, StpMode, TimeInForce,
};
use ironmatch::pipeline::Record;
use ironmatch::types::{
    Firm, InstrumentId, OrderId, OwnerId, Price, Qty, Side, Symbol, Timestamp, UserRef,
};

/// Where the timed benches put the matcher's output: records as the pipeline's ring to the
/// journal writer takes them (`engine::RingSink`), one per event, one per match
/// (`Record::Fill`), one for an order's acknowledgement with the feed's add of it (the
/// order's ids, `Record::Rested`: the writer builds both from the command) and one for a
/// displayed order's full cancel with the feed's delete (`Record::Removed`), which the
/// journal writer expands on its own thread.
struct Output(Vec<Record>);

impl Output {
    fn with_capacity(n: usize) -> Output {
        Output(Vec::with_capacity(n))
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

impl EventSink for Output {
    #[inline]
    fn push(&mut self, event: Event) {
        self.0.push(Record::Event(event));
    }

    #[inline]
    fn fill(&mut self, fill: Fill) {
        self.0.push(Record::Fill(fill));
    }

    #[inline]
    fn removed(&mut self, removal: Removal) {
        self.0.push(Record::Removed(removal));
    }

    #[inline]
    fn rested(&mut self, _ts: Timestamp, _owner: OwnerId, _order: &NewOrder, rested: Rested) {
        self.0.push(Record::Rested(rested));
    }
}

const INSTRUMENTS: usize = 4;
const MAKERS: u16 = 8;
const TAKER: u16 = MAKERS;
const TICK: u64 = 100;
const MID: u64 = 1_000_000;

fn config() -> BookConfig {
    config_with_tick(TICK, 2_000)
}

/// Four instruments around `MID` with prices from one tick to twice `MID`.
fn config_with_tick(tick: u64, band_bps: u32) -> BookConfig {
    let instruments = (0..INSTRUMENTS)
        .map(|i| InstrumentSpec {
            symbol: Symbol::from_str_padded(&format!("SYM{i}")).unwrap(),
            tick: Price(tick),
            lot: 1,
            min_price: Price(tick),
            max_price: Price(MID * 2),
            max_qty: 999_999,
            ref_price: Price(MID),
            band_bps,
            band_remainder: BandRemainder::Cancel,
            fat_finger_bps: 0,
            breaker_bps: 0,
            breaker_window_secs: 0,
            breaker_pause_secs: 0,
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
        scheduled: false,
        refs: RefRule::Ouch,
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
    refs: Vec<u64>,
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

/// Which of `mixed`'s random draws follow a fixed cycle instead (`IRONMATCH_BOOK_PATTERN`,
/// see the module docs). All false, the stream is the random one.
#[derive(Clone, Copy, Debug, Default)]
struct Pattern {
    kind: bool,
    side: bool,
    instrument: bool,
    owner: bool,
}

impl Pattern {
    fn from_env() -> Pattern {
        let Ok(letters) = std::env::var("IRONMATCH_BOOK_PATTERN") else {
            return Pattern::default();
        };
        assert!(
            letters.chars().all(|c| "ksio".contains(c)),
            "IRONMATCH_BOOK_PATTERN takes letters of ksio (kind, side, instrument, owner), not {letters:?}"
        );
        let pattern = Pattern {
            kind: letters.contains('k'),
            side: letters.contains('s'),
            instrument: letters.contains('i'),
            owner: letters.contains('o'),
        };
        eprintln!("mixed stream: {pattern:?} follow a cycle");
        pattern
    }
}

/// What `mixed`'s generator drew, to compare the random flow with a [`Pattern`] of it.
#[derive(Debug, Default)]
struct MixedStats {
    adds: u64,
    cancels: u64,
    iocs: u64,
    /// Makers' orders that traded.
    fills: u64,
    /// Summed over cancels: the maker's live quotes it chose from.
    live_at_cancel: u64,
    /// Summed over cancels: commands since the canceled quote was entered.
    cancel_age: u64,
}

impl std::fmt::Display for MixedStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_cancel = |sum: u64| sum as f64 / self.cancels.max(1) as f64;
        write!(
            f,
            "{} adds, {} cancels, {} IOCs, {} fills; a cancel chose among {:.1} live quotes \
             of its maker, one entered {:.1} commands before",
            self.adds,
            self.cancels,
            self.iocs,
            self.fills,
            per_cancel(self.live_at_cancel),
            per_cancel(self.cancel_age)
        )
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
    // Each maker's live quotes: reference, instrument and the command that entered it.
    let mut live: Vec<Vec<(UserRef, usize, u64)>> = vec![Vec::new(); usize::from(MAKERS)];
    let mut mids = [MID; INSTRUMENTS];
    let pattern = Pattern::from_env();
    let mut stats = MixedStats::default();
    // The command's number from 1; with a pattern, `pair` and `period` place it in the
    // cycles (a pair is two commands, a period twenty: the kind's cycle).
    let mut n = 0u64;
    while s.cmds.len() < warmup + len {
        n += 1;
        let (pair, period) = (n / 2, n / 20);
        let instrument = if pattern.instrument {
            // Each instrument in turn, shifted by one each period so that the period's
            // IOC (always the same place in it) meets every instrument too.
            ((pair + period) % INSTRUMENTS as u64) as usize
        } else {
            rng.below(INSTRUMENTS as u64) as usize
        };
        if rng.below(500) == 0 {
            mids[instrument] = if rng.below(2) == 0 {
                mids[instrument] + TICK
            } else {
                mids[instrument] - TICK
            };
        }
        let mid = mids[instrument];
        let roll = if pattern.kind {
            // Within each period (n % 20) the random flow's shares of the roll: even places
            // adds (9), odd places cancels (9: an add when the maker has no quote), 18 a
            // cancel that is an IOC when the maker has no quote, 19 an IOC.
            match n % 20 {
                19 => 97,
                18 => 92,
                odd if odd % 2 == 1 => 50,
                _ => 0,
            }
        } else {
            rng.below(100)
        };
        let owner = if pattern.owner {
            // Every maker in turn, a cancel's maker four places from the add's before it
            // (so a cancel does not take the quote just entered), shifted every 16 pairs
            // so that each maker quotes every instrument on both sides.
            ((pair + pair / 16 + 4 * (n % 2)) % u64::from(MAKERS)) as u16
        } else {
            rng.below(u64::from(MAKERS)) as u16
        };
        let book = &mut live[usize::from(owner)];
        if roll < 45 || (roll < 90 && book.is_empty()) {
            let buy = if pattern.side {
                // Mostly alternating from add to add, balanced on every instrument.
                (pair + pair / 8).is_multiple_of(2)
            } else {
                rng.below(2) == 0
            };
            let side = if buy { Side::Buy } else { Side::Sell };
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
            live[usize::from(owner)].push((user_ref, instrument, n));
            stats.adds += 1;
        } else if roll < 95 && !book.is_empty() {
            let i = rng.below(book.len() as u64) as usize;
            stats.cancels += 1;
            stats.live_at_cancel += book.len() as u64;
            let (user_ref, _, entered) = book.swap_remove(i);
            stats.cancel_age += n - entered;
            s.cancel(owner, user_ref);
        } else {
            let buy = if pattern.side {
                (period + period / 4).is_multiple_of(2)
            } else {
                rng.below(2) == 0
            };
            let side = if buy { Side::Buy } else { Side::Sell };
            stats.iocs += 1;
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
            if let EventBody::Executed { owner, .. } = e.body
                && owner.0 < MAKERS
            {
                stats.fills += 1;
            }
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
                live[usize::from(owner.0)].retain(|(r, _, _)| *r != user_ref);
            }
        }
    }
    eprintln!(
        "mixed stream: {} commands, {} orders resting at the end; {stats}",
        s.cmds.len(),
        matcher.resting_orders()
    );
    (s.cmds, warmup)
}

/// The shape of a random flow around a fixed mid (see the module docs).
struct Shape {
    tick: u64,
    /// Resting orders per instrument to start from and to hover around.
    resting: usize,
    /// Adds land within this many ticks of the mid...
    near_ticks: u64,
    /// ...except one in `far_one_in`, log-uniform up to `far_ticks` away (0 = never).
    far_one_in: u64,
    far_ticks: u64,
}

impl Shape {
    fn distance(&self, rng: &mut Rng) -> u64 {
        if self.far_one_in > 0 && rng.below(self.far_one_in) == 0 {
            // Log-uniform: as many orders 10-100 ticks away as 100-1,000.
            let exp =
                (rng.below(1 << 20) as f64 / f64::from(1 << 20)) * (self.far_ticks as f64).ln();
            (exp.exp() as u64).clamp(1, self.far_ticks)
        } else {
            1 + rng.below(self.near_ticks)
        }
    }
}

/// Live orders of a random flow, for cancels and reduces of orders really resting.
#[derive(Default)]
struct Live {
    orders: Vec<(u16, UserRef, usize)>,
    at: std::collections::HashMap<(u16, u64), usize>,
    per_instrument: [usize; INSTRUMENTS],
}

impl Live {
    fn add(&mut self, owner: u16, user_ref: UserRef, instrument: usize) {
        self.at.insert((owner, user_ref.0), self.orders.len());
        self.orders.push((owner, user_ref, instrument));
        self.per_instrument[instrument] += 1;
    }

    fn remove(&mut self, owner: u16, user_ref: UserRef) {
        if let Some(i) = self.at.remove(&(owner, user_ref.0)) {
            let (_, _, instrument) = self.orders.swap_remove(i);
            self.per_instrument[instrument] -= 1;
            if let Some(&(o, r, _)) = self.orders.get(i) {
                self.at.insert((o, r.0), i);
            }
        }
    }

    /// Follows the events of one command: orders fully executed or canceled are gone.
    fn follow(&mut self, events: &[Event]) {
        for e in events {
            match e.body {
                EventBody::Executed {
                    owner,
                    user_ref,
                    leaves,
                    ..
                }
                | EventBody::Canceled {
                    owner,
                    user_ref,
                    leaves,
                    ..
                } if leaves.0 == 0 => self.remove(owner.0, user_ref),
                EventBody::AiqCanceled {
                    owner, user_ref, ..
                } => self.remove(owner.0, user_ref),
                _ => {}
            }
        }
    }
}

/// A random flow of the given shape: a book built to `shape.resting` orders per
/// instrument, then `len` timed commands (50% adds, 40% cancels of random live orders, 5%
/// partial reduces, 5% marketable IOCs of add size). Generated against a live matcher.
fn shaped_stream(cfg: &BookConfig, shape: &Shape, len: usize, seed: u64) -> (Vec<Command>, usize) {
    let mut rng = Rng(seed);
    let mut s = Stream::new(cfg);
    let mut matcher = Matcher::new(cfg);
    let mut events = Vec::new();
    let mut live = Live::default();
    let side_of = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    };
    let price_at = |side: Side, distance: u64| {
        if side == Side::Buy {
            MID - distance * shape.tick
        } else {
            MID + distance * shape.tick
        }
    };
    let mut warmup = None;
    while s.cmds.len() < warmup.unwrap_or(usize::MAX - len) + len {
        let instrument = rng.below(INSTRUMENTS as u64) as usize;
        let building = warmup.is_none();
        let roll = if building { 0 } else { rng.below(100) };
        let few = live.per_instrument[instrument] < shape.resting / 2;
        let many = live.per_instrument[instrument] > shape.resting;
        let owner = rng.below(u64::from(MAKERS)) as u16;
        let qty = 100 * (2 + rng.below(4) as u32);
        if (roll < 50 || few || live.orders.is_empty()) && !many {
            let side = side_of(&mut rng);
            let price = price_at(side, shape.distance(&mut rng));
            let user_ref = s.order(owner, instrument, side, price, qty, TimeInForce::Day);
            live.add(owner, user_ref, instrument);
        } else if roll < 90 || many {
            let (owner, user_ref, _) = live.orders[rng.below(live.orders.len() as u64) as usize];
            s.cancel(owner, user_ref);
        } else if roll < 95 {
            let (owner, user_ref, _) = live.orders[rng.below(live.orders.len() as u64) as usize];
            s.push(
                owner,
                CommandBody::Cancel {
                    user_ref,
                    qty: Qty(100),
                },
            );
        } else {
            let side = side_of(&mut rng);
            let price = if side == Side::Buy {
                MID + 2 * shape.tick
            } else {
                MID - 2 * shape.tick
            };
            s.order(TAKER, instrument, side, price, qty, TimeInForce::Ioc);
        }
        events.clear();
        matcher.apply(s.cmds.last().unwrap(), &mut events);
        live.follow(&events);
        if building && live.orders.len() >= shape.resting * INSTRUMENTS {
            warmup = Some(s.cmds.len());
        }
    }
    eprintln!(
        "shaped stream: {} commands, {} orders resting at the end",
        s.cmds.len(),
        matcher.resting_orders()
    );
    (s.cmds, warmup.unwrap_or(0))
}

/// A flash crash, over and over: a book 50 levels deep (4 orders a level); an IOC sweeps
/// 30 levels (120 fills), then makers rebuild them order by order. Returns the stream and
/// where the timed part starts.
fn burst_stream(cfg: &BookConfig, rounds: usize) -> (Vec<Command>, usize) {
    let mut s = depth_stream(cfg, 50, 4);
    let warmup = s.cmds.len();
    for k in 0..rounds {
        let instrument = (k / 2) % INSTRUMENTS;
        let side = if k % 2 == 0 { Side::Buy } else { Side::Sell };
        let maker_side = if side == Side::Buy {
            Side::Sell
        } else {
            Side::Buy
        };
        s.order(
            TAKER,
            instrument,
            side,
            passive(maker_side, MID, 30),
            12_000,
            TimeInForce::Ioc,
        );
        for depth in (1..=30).rev() {
            for m in 0..4 {
                s.order(
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
    (s.cmds, warmup)
}

/// The same commands with each owner's references turned into scattered 64-bit keys: a
/// bijection per owner (multiplying by an odd constant), so distinct references stay
/// distinct keys and the flow's events are the same but for the keys they carry.
fn with_keys(cmds: &[Command]) -> Vec<Command> {
    let key = |owner: OwnerId, r: UserRef| {
        UserRef(r.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(owner.0) << 56))
    };
    cmds.iter()
        .map(|c| {
            let mut c = *c;
            let o = c.owner;
            match &mut c.body {
                CommandBody::New(n) => n.user_ref = key(o, n.user_ref),
                CommandBody::Cancel { user_ref, .. }
                | CommandBody::Modify { user_ref, .. }
                | CommandBody::MassCancel { user_ref, .. } => *user_ref = key(o, *user_ref),
                CommandBody::Replace(r) => {
                    r.user_ref = key(o, r.user_ref);
                    r.orig_user_ref = key(o, r.orig_user_ref);
                }
                _ => {}
            }
            c
        })
        .collect()
}

/// The same commands with each new order (or replace) numbered by one counter shared by
/// every owner, from 2^32 + 1: the order ids of a harness or gateway with its own ids.
/// References never entered map to ids never used.
fn with_sequential_ids(cmds: &[Command]) -> Vec<Command> {
    let mut ids: std::collections::HashMap<(u16, u64), u64> = Default::default();
    let mut next = 1u64 << 32;
    let mut fresh = |ids: &mut std::collections::HashMap<(u16, u64), u64>, o: u16, r: UserRef| {
        next += 1;
        ids.insert((o, r.0), next);
        UserRef(next)
    };
    let known = |ids: &std::collections::HashMap<(u16, u64), u64>, o: u16, r: UserRef| {
        UserRef(ids.get(&(o, r.0)).copied().unwrap_or(u64::MAX - r.0))
    };
    cmds.iter()
        .map(|c| {
            let mut c = *c;
            let o = c.owner.0;
            match &mut c.body {
                CommandBody::New(n) => n.user_ref = fresh(&mut ids, o, n.user_ref),
                CommandBody::Cancel { user_ref, .. }
                | CommandBody::Modify { user_ref, .. }
                | CommandBody::MassCancel { user_ref, .. } => *user_ref = known(&ids, o, *user_ref),
                CommandBody::Replace(r) => {
                    r.orig_user_ref = known(&ids, o, r.orig_user_ref);
                    r.user_ref = fresh(&mut ids, o, r.user_ref);
                }
                _ => {}
            }
            c
        })
        .collect()
}

/// Times `timed` after applying `setup`, resetting the matcher whenever the stream is used up.
fn run_stream(cfg: &BookConfig, setup: &[Command], timed: &[Command], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    let mut events = Output::with_capacity(1 << 16);
    while done < iters {
        let mut matcher = Matcher::new(cfg);
        for c in setup {
            events.clear();
            matcher.apply(c, &mut events);
        }
        let n = (iters - done).min(timed.len() as u64) as usize;
        let start = Instant::now();
        apply_all(&mut matcher, &timed[..n], &mut events);
        total += start.elapsed();
        done += n as u64;
    }
    total
}

/// A bench over a command stream: `timed` applied after `setup`, timed by [`run_stream`].
/// With `IRONMATCH_BOOK_ONCE=<name>`, instead: `setup`, then `timed` once in [`apply_all`],
/// outside criterion, and the process ends: `scripts/core-ir.sh` counts instructions, cache
/// misses and mispredicted branches per command under callgrind this way, counts the noise
/// of a shared machine does not move.
fn bench_stream(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    cfg: &BookConfig,
    setup: &[Command],
    timed: &[Command],
) {
    if std::env::var("IRONMATCH_BOOK_ONCE").as_deref() == Ok(name) {
        let mut matcher = Matcher::new(cfg);
        let mut events = Output::with_capacity(1 << 16);
        for c in setup {
            events.clear();
            matcher.apply(c, &mut events);
        }
        eprintln!("apply_all: {} commands", timed.len());
        apply_all(&mut matcher, timed, &mut events);
        std::process::exit(0);
    }
    group.bench_function(name, |b| {
        b.iter_custom(|iters| run_stream(cfg, setup, timed, iters))
    });
}

/// The timed loop of [`run_stream`], not inlined, so that callgrind can collect it alone.
/// Commands are applied as the pipeline's matcher stage applies them: each after
/// [`Matcher::prefetch`] for the two behind it (`IRONMATCH_BOOK_PREFETCH=0`: without, to
/// measure what the prefetch does with one binary).
#[inline(never)]
fn apply_all(matcher: &mut Matcher, cmds: &[Command], events: &mut Output) {
    static PREFETCH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let prefetch =
        *PREFETCH.get_or_init(|| std::env::var("IRONMATCH_BOOK_PREFETCH").as_deref() != Ok("0"));
    for (i, c) in cmds.iter().enumerate() {
        if prefetch {
            matcher.prefetch(cmds.get(i + 1), cmds.get(i + 2));
        }
        events.clear();
        matcher.apply(black_box(c), events);
        black_box(&*events);
    }
}

fn benches(c: &mut Criterion) {
    let cfg = config();
    let mut group = c.benchmark_group("book");
    group.throughput(Throughput::Elements(1));

    // The harness alone: the same loop over commands, without matching.
    let (mixed, warmup) = mixed_stream(&cfg, 1_000_000, 7);
    group.bench_function("baseline", |b| {
        b.iter_custom(|iters| {
            let mut events = Output::with_capacity(16);
            let start = Instant::now();
            for c in mixed[warmup..].iter().cycle().take(iters as usize) {
                events.clear();
                black_box(c);
                black_box(&events);
            }
            start.elapsed()
        })
    });

    // The harness's floor: the same stream read in full, one record written a command, no
    // matching: what the harness costs on its own (the core's work overlaps part of it).
    group.bench_function("floor", |b| {
        b.iter_custom(|iters| {
            let mut events = Output::with_capacity(16);
            let start = Instant::now();
            for c in mixed[warmup..].iter().cycle().take(iters as usize) {
                events.clear();
                let c = black_box(*c);
                events.0.push(Record::Rested(Rested {
                    order_id: OrderId(c.ts.0),
                    instrument: InstrumentId(c.owner.0),
                }));
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
    bench_stream(&mut group, "add", &cfg, &setup.cmds, &adds.cmds);

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
    bench_stream(&mut group, "cancel", &cfg, &with_adds, &cancels.cmds);

    // The matcher's state for a snapshot (`[journal] snapshot_source = "matcher"` takes it
    // on the matcher's thread): the book `cancel` starts from, ~100,000 resting orders;
    // throughput is resting orders.
    {
        let mut matcher = Matcher::new(&cfg);
        let mut events = Vec::new();
        for c in &with_adds {
            events.clear();
            matcher.apply(c, &mut events);
        }
        group.throughput(Throughput::Elements(matcher.resting_orders() as u64));
        group.sample_size(20);
        // The state is dropped outside the timing (it is a copy of the whole book).
        group.bench_function("state", |b| b.iter_with_large_drop(|| matcher.state()));
        group.throughput(Throughput::Elements(1));
        group.sample_size(100);
    }

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
    if std::env::var("IRONMATCH_BOOK_ONCE").as_deref() == Ok("match") {
        // Once, for scripts/core-ir.sh: each sweep alone through `apply_all` (the function
        // it collects), the restoring adds outside it.
        let mut matcher = Matcher::new(&cfg);
        let mut events = Output::with_capacity(1 << 10);
        for c in &setup.cmds {
            events.clear();
            matcher.apply(c, &mut events);
        }
        eprintln!("apply_all: {} commands", sweep_at.len());
        let mut timed = sweep_at.iter().peekable();
        for (i, c) in sweeps.cmds.iter().enumerate() {
            if timed.next_if_eq(&&i).is_some() {
                apply_all(&mut matcher, std::slice::from_ref(c), &mut events);
            } else {
                events.clear();
                matcher.apply(c, &mut events);
            }
        }
        std::process::exit(0);
    }
    group.bench_function("match", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            let mut events = Output::with_capacity(1 << 10);
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

    bench_stream(
        &mut group,
        "mixed",
        &cfg,
        &mixed[..warmup],
        &mixed[warmup..],
    );

    let deep_shape = Shape {
        tick: TICK,
        resting: 2_000,
        near_ticks: 35,
        far_one_in: 0,
        far_ticks: 0,
    };
    let (deep, warmup) = shaped_stream(&cfg, &deep_shape, 1_000_000, 11);
    bench_stream(&mut group, "deep", &cfg, &deep[..warmup], &deep[warmup..]);

    let keyed_cfg = BookConfig {
        refs: RefRule::Keys,
        ..cfg.clone()
    };
    let keyed = with_keys(&deep);
    bench_stream(
        &mut group,
        "keyed",
        &keyed_cfg,
        &keyed[..warmup],
        &keyed[warmup..],
    );

    let keyed_seq = with_sequential_ids(&deep);
    bench_stream(
        &mut group,
        "keyed_seq",
        &keyed_cfg,
        &keyed_seq[..warmup],
        &keyed_seq[warmup..],
    );

    let wide_cfg = config_with_tick(1, 5_000);
    let wide_shape = Shape {
        tick: 1,
        resting: 1_000,
        near_ticks: 50,
        far_one_in: 3,
        far_ticks: 5_000,
    };
    let (wide, warmup) = shaped_stream(&wide_cfg, &wide_shape, 1_000_000, 13);
    bench_stream(
        &mut group,
        "wide",
        &wide_cfg,
        &wide[..warmup],
        &wide[warmup..],
    );

    let (burst, warmup) = burst_stream(&cfg, 4_000);
    bench_stream(
        &mut group,
        "burst",
        &cfg,
        &burst[..warmup],
        &burst[warmup..],
    );
    group.finish();
}

criterion_group!(name = book; config = Criterion::default().measurement_time(Duration::from_secs(4)); targets = benches);
criterion_main!(book);
