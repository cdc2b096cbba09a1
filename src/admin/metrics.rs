//! What the pipeline stages publish for the operator endpoint: counters, histograms, each
//! book's top and each session's numbers.
//!
//! Every field has exactly one writer, the stage that owns it (the gateway, the matcher or
//! the journal writer), and is a relaxed atomic: a writer adds with a load and a store (no
//! locked instruction, since nobody else writes it), readers on the admin thread load.
//! Nothing here blocks a stage, allocates after start, or is locked by a stage.
//!
//! Two kinds of record need more than one atomic:
//! - A book's top ([`TopOfBook`]) is published by the matcher thread at most every
//!   [`BOOK_PUBLISH_INTERVAL`] as a sequence-numbered set of atomics (a seqlock built of
//!   atomics only): the writer never waits; a reader that saw a write in progress reads again.
//! - Stage latencies need the time a record left the stage before. Stages hand it on through
//!   [`Marks`]: after each batch, a stage pushes one mark (how many records it has sent so
//!   far, how many this batch held, when) into a bounded queue sized so it cannot fill; the
//!   next stage, once it has finished those records, takes the mark and adds the elapsed
//!   time to its histogram, once per record the mark counted. The journal writer pushes
//!   its mark before the batch's events, so egress always finds it; the matcher can only
//!   mark a batch once it is done with it, and on its own thread the writer may have
//!   written the batch by then: the writer then counts it when it next finds nothing to
//!   do, at the time of its last write (0 if that came before the mark's time).
//!
//! Clocks read here serve metrics only: the matcher's events never depend on them.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;

use crate::book::{
    CancelReason, CommandBody, Event, EventBody, Fill, RejectReason, Removal, VenueCommand,
};
use crate::types::Timestamp;
use crate::venue::VenueClock;
use crate::wire::ouch::{inbound, outbound};

/// How often at most the matcher publishes each book's top: often enough for a person
/// watching, rare enough to cost nothing per command.
pub const BOOK_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// Times a reader tries to read a [`TopOfBook`] before giving up on this scrape (the
/// matcher writes it at most every [`BOOK_PUBLISH_INTERVAL`], so one retry is rare).
const READ_TRIES_MAX: usize = 1_000;

/// Upper bounds (inclusive, nanoseconds) of the latency and I/O duration buckets: 1 µs to
/// 1 s in 1-2.5-5 steps; slower goes to `+Inf`.
pub const DURATION_BOUNDS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Upper bounds of the journal batch size buckets, in journal records (a batch takes at
/// most `journal::BATCH_LEN_MAX` records from the matcher, each up to
/// `journal::RECORDS_PER_INPUT_MAX` journal records).
pub const BATCH_BOUNDS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

// The largest batch must land in a finite bucket.
const _: () = assert!(
    BATCH_BOUNDS[BATCH_BOUNDS.len() - 1]
        >= (crate::journal::BATCH_LEN_MAX * crate::journal::RECORDS_PER_INPUT_MAX) as u64
);

/// A counter with one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning stage calls this, so a load and a store suffice.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets the value (gauges).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value now.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed bucket bounds and one writer: a count per bucket (not
/// cumulative) and the sum of the values.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `bounds.len() + 1` buckets, the last one for values above every bound.
    buckets: Box<[Counter]>,
    sum: Counter,
}

/// A histogram read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Inclusive upper bound of each bucket; the last bucket (`+Inf`) has none.
    pub bounds: &'static [u64],
    /// Count per bucket, not cumulative; one more than `bounds`.
    pub buckets: Vec<u64>,
    /// Sum of the values recorded.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Values recorded (the sum of the buckets, so it always agrees with them).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum: Counter::default(),
        }
    }

    /// Records `value` `weight` times (owning stage only).
    #[inline]
    pub fn record(&self, value: u64, weight: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].add(weight);
        self.sum.add(value.saturating_mul(weight));
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self.buckets.iter().map(Counter::get).collect(),
            sum: self.sum.get(),
        }
    }
}

/// Nanoseconds from `then` to `now`, both since midnight; across midnight it wraps, and a
/// clock that went back gives 0.
#[inline]
pub fn elapsed_ns(now: u64, then: u64) -> u64 {
    let day = Timestamp::DAY_NS;
    let d = (now % day + day - then % day) % day;
    if d > day / 2 { 0 } else { d }
}

/// One batch handed from a stage to the next, for the next stage's latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Records the sending stage had sent, this batch included.
    pub end: u64,
    /// What the batch counts for: commands (matcher) or events (journal writer).
    pub weight: u64,
    /// When the batch left the sending stage (ns since midnight).
    pub at_ns: u64,
}

/// A queue of [`Mark`]s between two stages: one producer, one consumer, never full (see
/// [`Marks::new`]); a mark that finds it full anyway is dropped and counted.
#[derive(Debug)]
pub struct Marks {
    queue: ArrayQueue<Mark>,
    /// Marks that found the queue full (their records count for nothing).
    pub dropped: Counter,
}

impl Marks {
    /// Room for `capacity` marks: a ring's capacity plus a batch and one held mark is
    /// enough, since every batch sends at least one record through the ring.
    pub fn new(capacity: usize) -> Marks {
        Marks {
            queue: ArrayQueue::new(capacity.max(1)),
            dropped: Counter::default(),
        }
    }

    /// Producer side, after a batch was sent.
    #[inline]
    pub fn push(&self, mark: Mark) {
        if self.queue.push(mark).is_err() {
            self.dropped.add(1);
        }
    }
}

/// The consumer side of [`Marks`]: the mark not finished yet.
#[derive(Debug, Default)]
pub struct MarkReader {
    held: Option<Mark>,
}

impl MarkReader {
    /// Once the consumer has finished its first `done` records, at `now` (ns since
    /// midnight): records every finished mark's latency into `histogram`.
    pub fn finish(&mut self, marks: &Marks, done: u64, now: u64, histogram: &Histogram) {
        while let Some(mark) = self.held.take().or_else(|| marks.queue.pop()) {
            if mark.end > done {
                self.held = Some(mark);
                return;
            }
            histogram.record(elapsed_ns(now, mark.at_ns), mark.weight);
        }
    }
}

/// A labelled set of counters: one per name in a fixed list.
#[derive(Debug)]
pub struct CounterSet {
    /// Label values, in the order of the counters.
    pub names: &'static [&'static str],
    counters: Box<[Counter]>,
}

impl CounterSet {
    fn new(names: &'static [&'static str]) -> CounterSet {
        CounterSet {
            names,
            counters: names.iter().map(|_| Counter::default()).collect(),
        }
    }

    /// Adds one to counter `i` (owning stage only).
    #[inline]
    pub fn bump(&self, i: usize) {
        self.counters[i].add(1);
    }

    /// Each name with its count now.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.names
            .iter()
            .zip(self.counters.iter())
            .map(|(n, c)| (*n, c.get()))
    }
}

/// OUCH inbound message types counted by the gateway: (type letter, name).
pub const OUCH_INBOUND: [(u8, &str); 6] = [
    (inbound::ENTER, "enter_order"),
    (inbound::REPLACE, "replace_order"),
    (inbound::CANCEL, "cancel_order"),
    (inbound::MODIFY, "modify_order"),
    (inbound::MASS_CANCEL, "mass_cancel_request"),
    (inbound::ACCOUNT_QUERY, "account_query"),
];

/// OUCH outbound message types ironmatch sends: (type letter, name).
pub const OUCH_OUTBOUND: [(u8, &str); 12] = [
    (outbound::SYSTEM_EVENT, "system_event"),
    (outbound::ACCEPTED, "order_accepted"),
    (outbound::REPLACED, "order_replaced"),
    (outbound::CANCELED, "order_canceled"),
    (outbound::AIQ_CANCELED, "aiq_canceled"),
    (outbound::EXECUTED, "order_executed"),
    (outbound::REJECTED, "rejected"),
    (outbound::CANCEL_REJECT, "cancel_reject"),
    (outbound::MODIFIED, "order_modified"),
    (outbound::RESTATED, "order_restated"),
    (outbound::ACCOUNT_QUERY_RESPONSE, "account_query_response"),
    (outbound::MASS_CANCEL_RESPONSE, "mass_cancel_response"),
];

/// Command kinds the matcher counts, by [`command_index`].
pub const COMMAND_KINDS: [&str; 12] = [
    "new_order",
    "cancel",
    "replace",
    "modify",
    "mass_cancel",
    "disconnect",
    "account_query",
    "gateway_reject",
    "system_event",
    "timer",
    "operator",
    "invalid_replace",
];

/// The index of a command's kind in [`COMMAND_KINDS`].
pub fn command_index(body: &CommandBody) -> usize {
    match body {
        CommandBody::New(_) => 0,
        CommandBody::Cancel { .. } => 1,
        CommandBody::Replace(_) => 2,
        CommandBody::Modify { .. } => 3,
        CommandBody::MassCancel { .. } => 4,
        CommandBody::Disconnect => 5,
        CommandBody::AccountQuery => 6,
        CommandBody::GatewayReject { .. } => 7,
        CommandBody::Venue(VenueCommand::SystemEvent(_)) => 8,
        CommandBody::Venue(VenueCommand::Timer) => 9,
        CommandBody::Venue(VenueCommand::Operator { .. }) => 10,
        CommandBody::InvalidReplace { .. } => 11,
    }
}

/// Reject reasons, by [`reject_index`].
pub const REJECT_REASONS: [&str; 29] = [
    "unknown_owner",
    "duplicate_user_ref",
    "unknown_instrument",
    "zero_qty",
    "qty_off_lot",
    "qty_above_max",
    "price_off_tick",
    "price_out_of_range",
    "price_outside_band",
    "invalid_min_qty",
    "invalid_max_floor",
    "post_only_cannot_rest",
    "post_only_would_take",
    "order_pool_full",
    "level_pool_full",
    "unknown_order",
    "order_not_live",
    "invalid_side",
    "firm_not_authorized",
    "throttled",
    "unsupported",
    "halted",
    "closed",
    "invalid_expire_time",
    "invalid_display",
    "pegging_not_allowed",
    "invalid_cross_order",
    "retail_not_allowed",
    "not_offered",
];

/// The index of a reject reason in [`REJECT_REASONS`].
pub fn reject_index(reason: RejectReason) -> usize {
    match reason {
        RejectReason::UnknownOwner => 0,
        RejectReason::DuplicateUserRef => 1,
        RejectReason::UnknownInstrument => 2,
        RejectReason::ZeroQty => 3,
        RejectReason::QtyOffLot => 4,
        RejectReason::QtyAboveMax => 5,
        RejectReason::PriceOffTick => 6,
        RejectReason::PriceOutOfRange => 7,
        RejectReason::PriceOutsideBand => 8,
        RejectReason::InvalidMinQty => 9,
        RejectReason::InvalidMaxFloor => 10,
        RejectReason::PostOnlyCannotRest => 11,
        RejectReason::PostOnlyWouldTake => 12,
        RejectReason::OrderPoolFull => 13,
        RejectReason::LevelPoolFull => 14,
        RejectReason::UnknownOrder => 15,
        RejectReason::OrderNotLive => 16,
        RejectReason::InvalidSide => 17,
        RejectReason::FirmNotAuthorized => 18,
        RejectReason::Throttled => 19,
        RejectReason::Unsupported => 20,
        RejectReason::Halted => 21,
        RejectReason::Closed => 22,
        RejectReason::InvalidExpireTime => 23,
        RejectReason::InvalidDisplay => 24,
        RejectReason::PeggingNotAllowed => 25,
        RejectReason::InvalidCrossOrder => 26,
        RejectReason::RetailNotAllowed => 27,
        RejectReason::NotOffered => 28,
    }
}

/// Cancel reasons, by [`cancel_index`]; `self_trade_prevention` counts AIQ cancels.
pub const CANCEL_REASONS: [&str; 12] = [
    "user_requested",
    "ioc",
    "cannot_execute",
    "disconnect",
    "replace_failed",
    "closed",
    "expired",
    "halted",
    "supervisory",
    "price_band",
    "circuit_breaker",
    "self_trade_prevention",
];

/// The index of a cancel reason in [`CANCEL_REASONS`].
pub fn cancel_index(reason: CancelReason) -> usize {
    match reason {
        CancelReason::UserRequested => 0,
        CancelReason::Ioc => 1,
        CancelReason::CannotExecute => 2,
        CancelReason::Disconnect => 3,
        CancelReason::ReplaceFailed => 4,
        CancelReason::Closed => 5,
        CancelReason::Expired => 6,
        CancelReason::Halted => 7,
        CancelReason::Supervisory => 8,
        CancelReason::PriceBand => 9,
        CancelReason::CircuitBreaker => 10,
    }
}

/// Written by the gateway thread.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// OUCH messages decoded from sessions, by [`OUCH_INBOUND`] type.
    pub messages_in: CounterSet,
    /// OUCH messages sequenced for sessions, by [`OUCH_OUTBOUND`] type.
    pub messages_out: CounterSet,
    /// Sessions logged in now.
    pub sessions_connected: Counter,
    /// Per configured user, in configuration order.
    pub sessions: Box<[SessionMetrics]>,
    /// Journal writer's release of an event to the end of the egress round that handed its
    /// message to the session's socket (or stored it, for a session not connected).
    pub journaled_to_written: Histogram,
}

/// One user's session, written by the gateway thread.
#[derive(Debug, Default)]
pub struct SessionMetrics {
    /// 1 while a connection is logged in as this user.
    pub logged_in: Counter,
    /// Sequenced messages stored today (the next outbound sequence number is one more).
    pub messages: Counter,
}

/// Written by the matcher thread.
#[derive(Debug)]
pub struct MatcherMetrics {
    /// Commands applied, by [`COMMAND_KINDS`].
    pub commands: CounterSet,
    /// Rejected events, by [`REJECT_REASONS`].
    pub rejects: CounterSet,
    /// Canceled and AIQ-canceled events, by [`CANCEL_REASONS`].
    pub cancels: CounterSet,
    /// Per instrument, in configuration order.
    pub instruments: Box<[InstrumentMetrics]>,
    /// Gateway receipt of a command (its timestamp) to the start of its matcher batch.
    pub receipt_to_match: Histogram,
    /// Where the trading day stands: [`phase_name`] of it (0 before the first publication).
    pub day_phase: Counter,
    /// 1 while the venue halt is on.
    pub venue_halted: Counter,
}

/// The matcher's phase of the day as published in [`MatcherMetrics::day_phase`].
pub fn phase_code(phase: crate::book::DayPhase) -> u64 {
    use crate::book::DayPhase::*;
    match phase {
        Unscheduled => 1,
        Closed => 2,
        PreMarket => 3,
        Market => 4,
        PostMarket => 5,
    }
}

/// The name of a published phase code (`None` before the first publication).
pub fn phase_name(code: u64) -> Option<&'static str> {
    match code {
        1 => Some("no schedule"),
        2 => Some("closed"),
        3 => Some("pre-market"),
        4 => Some("market hours"),
        5 => Some("post-market"),
        _ => None,
    }
}

/// One instrument, written by the matcher thread.
#[derive(Debug, Default)]
pub struct InstrumentMetrics {
    /// Matches (one per pair of executions).
    pub trades: Counter,
    /// Shares traded.
    pub shares: Counter,
    /// The book's top, published at most every [`BOOK_PUBLISH_INTERVAL`].
    pub top: TopOfBook,
}

impl MatcherMetrics {
    /// Counts one event (matcher thread, as the event is produced).
    #[inline]
    pub fn on_event(&self, event: &Event) {
        match event.body {
            EventBody::Rejected { reason, .. } => self.rejects.bump(reject_index(reason)),
            EventBody::Canceled { reason, .. } => self.cancels.bump(cancel_index(reason)),
            EventBody::AiqCanceled { .. } => self.cancels.bump(CANCEL_REASONS.len() - 1),
            // Exactly one of these per match (see `book::message`).
            EventBody::MdExecute {
                instrument, qty, ..
            }
            | EventBody::MdTrade {
                instrument, qty, ..
            } => self.trade(instrument, qty),
            _ => {}
        }
    }

    /// Counts a match as [`on_event`](Self::on_event) counts its three events
    /// ([`Fill::events`]: the feed's trade; the executions are not counted), without
    /// building them.
    #[inline]
    pub fn on_fill(&self, fill: &Fill) {
        self.trade(fill.instrument, fill.qty);
    }

    /// Counts a full cancel as [`on_event`](Self::on_event) counts its two events
    /// ([`Removal::events`]: the cancel; the feed's delete is not counted), without
    /// building them. An order that went to the book as accepted
    /// ([`Rested`](crate::book::Rested)) counts nothing: neither of its events is counted.
    #[inline]
    pub fn on_removal(&self, removal: &Removal) {
        self.cancels.bump(cancel_index(removal.reason));
    }

    #[inline]
    fn trade(&self, instrument: crate::types::InstrumentId, qty: crate::types::Qty) {
        if let Some(i) = self.instruments.get(usize::from(instrument.0)) {
            i.trades.add(1);
            i.shares.add(u64::from(qty.0));
        }
    }
}

/// Written by the journal writer thread.
#[derive(Debug)]
pub struct JournalMetrics {
    /// Records written.
    pub records: Counter,
    /// Bytes written.
    pub bytes: Counter,
    /// Records per batch (one `write` each).
    pub batch_records: Histogram,
    /// Duration of each batch's `write`.
    pub write_ns: Histogram,
    /// Duration of each `fdatasync` (per batch with `fsync = "always"`, and at each segment
    /// rotation).
    pub fsync_ns: Histogram,
    /// End of a command's matcher batch to the end of the journal write that holds it.
    pub match_to_journaled: Histogram,
}

/// A book's best bid and offer and resting orders, as last published by the matcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BookTop {
    /// Best bid: price (4 implied decimals), displayed shares, open shares; `None` if no bid.
    pub bid: Option<(u64, u64, u64)>,
    /// Best offer, as `bid`.
    pub ask: Option<(u64, u64, u64)>,
    /// Resting orders (displayed, reserve and hidden).
    pub resting_orders: u64,
    /// The trading state in force, as its ITCH Stock Trading Action code (`T`, `H`, `P`,
    /// `Q`); 0 before the first publication.
    pub state: u8,
    /// When it was published (ns since midnight in the venue's time zone).
    pub as_of_ns: u64,
}

const TOP_FIELDS: usize = 9;

/// [`BookTop`] as atomics behind a sequence number: the matcher writes without waiting, a
/// reader retries while a write is in progress.
#[derive(Debug, Default)]
pub struct TopOfBook {
    /// Odd while a write is in progress; grows by 2 per write.
    seq: AtomicU64,
    fields: [AtomicU64; TOP_FIELDS],
}

impl TopOfBook {
    /// Publishes `top` (matcher thread only).
    pub fn publish(&self, top: &BookTop) {
        let (bid, ask) = (top.bid.unwrap_or_default(), top.ask.unwrap_or_default());
        let values: [u64; TOP_FIELDS] = [
            bid.0,
            bid.1,
            bid.2,
            ask.0,
            ask.1,
            ask.2,
            top.resting_orders,
            u64::from(top.state),
            top.as_of_ns,
        ];
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Readers that see any of the stores below also see the odd sequence number.
        fence(Ordering::Release);
        for (field, v) in self.fields.iter().zip(values) {
            field.store(v, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// The last published top, or `None` if writes kept overlapping the read.
    pub fn read(&self) -> Option<BookTop> {
        for _ in 0..READ_TRIES_MAX {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let v: [u64; TOP_FIELDS] =
                std::array::from_fn(|i| self.fields[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                // A level always has open shares, so 0 open means no level.
                let level = |p, s, o| (o > 0).then_some((p, s, o));
                return Some(BookTop {
                    bid: level(v[0], v[1], v[2]),
                    ask: level(v[3], v[4], v[5]),
                    resting_orders: v[6],
                    state: v[7] as u8,
                    as_of_ns: v[8],
                });
            }
        }
        None
    }
}

/// Everything the stages publish, shared by them and the admin thread.
#[derive(Debug)]
pub struct EngineMetrics {
    /// Stage 1 + 4.
    pub gateway: GatewayMetrics,
    /// Stage 2.
    pub matcher: MatcherMetrics,
    /// Stage 3.
    pub journal: JournalMetrics,
    /// Matcher batches on their way to the journal writer.
    pub to_journal_marks: Marks,
    /// Journal batches' events on their way to egress.
    pub to_egress_marks: Marks,
    /// When the engine started.
    pub started: Instant,
    /// The clock commands are stamped with (ns since midnight in the venue's time zone):
    /// each stage reads its own copy of it for latencies.
    pub clock: VenueClock,
}

impl EngineMetrics {
    /// Metrics for `instruments` instruments and `users` users, with mark queues for
    /// rings of `ring_capacity` records; stages read `clock` (the gateway's).
    pub fn new(
        instruments: usize,
        users: usize,
        ring_capacity: usize,
        clock: VenueClock,
    ) -> EngineMetrics {
        let marks_max = ring_capacity + crate::journal::BATCH_LEN_MAX + 1;
        EngineMetrics {
            gateway: GatewayMetrics {
                messages_in: CounterSet::new(&OUCH_INBOUND_NAMES),
                messages_out: CounterSet::new(&OUCH_OUTBOUND_NAMES),
                sessions_connected: Counter::default(),
                sessions: (0..users).map(|_| SessionMetrics::default()).collect(),
                journaled_to_written: Histogram::new(&DURATION_BOUNDS_NS),
            },
            matcher: MatcherMetrics {
                commands: CounterSet::new(&COMMAND_KINDS),
                rejects: CounterSet::new(&REJECT_REASONS),
                cancels: CounterSet::new(&CANCEL_REASONS),
                instruments: (0..instruments)
                    .map(|_| InstrumentMetrics::default())
                    .collect(),
                receipt_to_match: Histogram::new(&DURATION_BOUNDS_NS),
                day_phase: Counter::default(),
                venue_halted: Counter::default(),
            },
            journal: JournalMetrics {
                records: Counter::default(),
                bytes: Counter::default(),
                batch_records: Histogram::new(&BATCH_BOUNDS),
                write_ns: Histogram::new(&DURATION_BOUNDS_NS),
                fsync_ns: Histogram::new(&DURATION_BOUNDS_NS),
                match_to_journaled: Histogram::new(&DURATION_BOUNDS_NS),
            },
            to_journal_marks: Marks::new(marks_max),
            to_egress_marks: Marks::new(marks_max),
            started: Instant::now(),
            clock,
        }
    }
}

impl GatewayMetrics {
    /// Counts an inbound OUCH message by its type byte (gateway thread).
    #[inline]
    pub fn count_in(&self, msg_type: u8) {
        if let Some(i) = OUCH_INBOUND.iter().position(|(t, _)| *t == msg_type) {
            self.messages_in.bump(i);
        }
    }

    /// Counts an outbound OUCH message by its type byte (gateway thread).
    #[inline]
    pub fn count_out(&self, msg_type: u8) {
        if let Some(i) = OUCH_OUTBOUND.iter().position(|(t, _)| *t == msg_type) {
            self.messages_out.bump(i);
        }
    }
}

/// The OUCH type letter of a message name in [`OUCH_INBOUND`] or [`OUCH_OUTBOUND`].
pub fn ouch_type_of(name: &str) -> Option<char> {
    OUCH_INBOUND
        .iter()
        .chain(OUCH_OUTBOUND.iter())
        .find(|(_, n)| *n == name)
        .map(|(t, _)| char::from(*t))
}

const OUCH_INBOUND_NAMES: [&str; OUCH_INBOUND.len()] = {
    let mut names = [""; OUCH_INBOUND.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = OUCH_INBOUND[i].1;
        i += 1;
    }
    names
};

const OUCH_OUTBOUND_NAMES: [&str; OUCH_OUTBOUND.len()] = {
    let mut names = [""; OUCH_OUTBOUND.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = OUCH_OUTBOUND[i].1;
        i += 1;
    }
    names
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = Histogram::new(&DURATION_BOUNDS_NS);
        h.record(1_000, 1);
        h.record(1_001, 2);
        h.record(2_000_000_000, 1);
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 2);
        assert_eq!(s.buckets[DURATION_BOUNDS_NS.len()], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum, 1_000 + 2 * 1_001 + 2_000_000_000);
    }

    #[test]
    fn marks_are_finished_only_once_their_records_are() {
        let marks = Marks::new(4);
        let h = Histogram::new(&DURATION_BOUNDS_NS);
        let mut reader = MarkReader::default();
        marks.push(Mark {
            end: 3,
            weight: 1,
            at_ns: 1_000,
        });
        marks.push(Mark {
            end: 10,
            weight: 4,
            at_ns: 2_000,
        });
        reader.finish(&marks, 2, 5_000, &h);
        assert_eq!(h.snapshot().count(), 0);
        reader.finish(&marks, 9, 5_000, &h);
        assert_eq!(h.snapshot().count(), 1);
        reader.finish(&marks, 10, 5_000, &h);
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum, 4_000 + 4 * 3_000);
    }

    #[test]
    fn elapsed_wraps_at_midnight_and_never_goes_negative() {
        assert_eq!(elapsed_ns(10, Timestamp::DAY_NS - 5), 15);
        assert_eq!(elapsed_ns(100, 200), 0);
    }

    #[test]
    fn a_published_top_reads_back() {
        let top = TopOfBook::default();
        assert_eq!(top.read(), Some(BookTop::default()));
        let value = BookTop {
            bid: Some((1_500_000, 100, 300)),
            ask: None,
            resting_orders: 3,
            state: b'T',
            as_of_ns: 42,
        };
        top.publish(&value);
        assert_eq!(top.read(), Some(value));
    }

    #[test]
    fn a_reader_never_sees_half_a_publication() {
        let top = std::sync::Arc::new(TopOfBook::default());
        let writer = {
            let top = std::sync::Arc::clone(&top);
            std::thread::spawn(move || {
                for n in 1..=20_000u64 {
                    top.publish(&BookTop {
                        bid: Some((n, n, n)),
                        ask: Some((n, n, n)),
                        resting_orders: n,
                        state: b'H',
                        as_of_ns: n,
                    });
                }
            })
        };
        let mut last = 0;
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            if let Some(t) = top.read() {
                let n = t.resting_orders;
                assert_eq!(t.bid, (n > 0).then_some((n, n, n)));
                assert_eq!(t.ask, t.bid);
                assert_eq!(t.as_of_ns, n);
                assert_eq!(t.state, if n > 0 { b'H' } else { 0 });
                assert!(n >= last, "publications are read in order");
                last = n;
                reads += 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(top.read().map(|t| t.resting_orders), Some(20_000));
    }

    #[test]
    fn every_ouch_type_has_one_name() {
        assert_eq!(ouch_type_of("order_executed"), Some('E'));
        assert_eq!(ouch_type_of("enter_order"), Some('O'));
        let mut out: Vec<u8> = OUCH_OUTBOUND.iter().map(|(t, _)| *t).collect();
        out.sort_unstable();
        out.dedup();
        assert_eq!(out.len(), OUCH_OUTBOUND.len());
    }
}
