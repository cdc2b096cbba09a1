//! Stage 2, the matcher: commands in, commands and their events out.
//!
//! [`MatcherAgent`] pops commands from the gateway's ring in batches, applies each to the
//! [`Matcher`], and pushes the command followed by its events to the journal writer's
//! ring. Events are written straight into the ring (no intermediate buffer), so a sweep
//! producing thousands of events needs no memory: a full ring makes the matcher wait
//! (backpressure). Which thread runs it is the wiring's choice (see
//! [`Threading`](crate::pipeline::Threading)): its own, or the one shared with the gateway
//! and the journal writer, where the journal writer runs right after it in each cycle.
//!
//! With [metrics](crate::admin::metrics) set, it counts commands and events as they pass
//! (relaxed stores of its own counters), reads the clock once per batch for the receipt to
//! match latency, hands a [`Mark`] per batch to the journal writer, and publishes each
//! book's top at most every [`BOOK_PUBLISH_INTERVAL`]. The clock never reaches the
//! [`Matcher`]: its events stay a pure function of the commands.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::admin::metrics::{
    BOOK_PUBLISH_INTERVAL, BookTop, EngineMetrics, Mark, command_index, elapsed_ns,
};
use crate::book::{Command, Event, EventSink, Fill, Matcher, NewOrder, Removal, Rested};
use crate::journal::snapshot::SnapshotTaker;
use crate::pipeline::{Agent, Record, Ring};
use crate::types::{InstrumentId, OwnerId, Timestamp};
use crate::venue::VenueClock;

/// Commands taken from the ring before the consumer is notified.
pub const BATCH_LEN_MAX: usize = 256;

/// Free slots the output ring must have before another command is taken (at most a
/// quarter of it). With `shared` threading the journal writer drains that ring only after
/// the matcher's turn, so a batch must not fill it: a cluster node catching up applies
/// many commands at once, and their events overflowed the ring and blocked the thread.
const OUTPUT_ROOM_MIN: usize = 64;

/// Writes each event into the output ring, counting it. A match goes as one record
/// ([`Record::Fill`]) that the journal writer expands into its three events, an order's
/// acknowledgement and the feed's add of it as another ([`Record::Rested`]), a displayed
/// order's full cancel and the feed's delete as a third ([`Record::Removed`]).
struct RingSink<'a> {
    ring: &'a Ring<Record>,
    /// Records that found the ring full, in order: every later record goes behind them.
    spill: &'a mut VecDeque<Record>,
    metrics: Option<&'a EngineMetrics>,
    snapshots: Option<&'a mut SnapshotTaker>,
    /// Records pushed into the ring.
    pushed: u64,
    /// Journal records they make ([`Record::journal_records`]).
    journaled: u64,
}

impl RingSink<'_> {
    /// Counts one event in the metrics and for the snapshot taker.
    fn count(&mut self, event: &Event) {
        if let Some(m) = self.metrics {
            m.matcher.on_event(event);
        }
        if let Some(s) = self.snapshots.as_deref_mut() {
            s.count(event);
        }
    }

    /// Pushes `record`, its events already counted; into the spill if the ring is full
    /// (see [`MatcherAgent`]'s `spill`) or records already wait there.
    #[inline(always)]
    fn push_counted(&mut self, record: Record) {
        self.journaled += record.journal_records();
        self.pushed += 1;
        if !self.spill.is_empty() {
            self.spill.push_back(record);
        } else if let Err(record) = self.ring.try_push(record) {
            self.spill_first(record);
        }
    }

    #[cold]
    #[inline(never)]
    fn spill_first(&mut self, record: Record) {
        self.spill.push_back(record);
    }
}

impl EventSink for RingSink<'_> {
    #[inline]
    fn push(&mut self, event: Event) {
        self.count(&event);
        self.push_counted(Record::Event(event));
    }

    // A match, a full cancel and an order that went to the book as accepted are counted
    // from the record as their events would be, without building the events. Measured:
    // building them to count them cost the matcher stage 38 of its 1,045 instructions a
    // command in `pipeline/in_process` (enters and cancels), and, with the same counting
    // in the book bench's sink, 22% more instructions a command on `book/mixed`'s flow and
    // 67% on `book/match`'s (see the README's "What it costs the pipeline").
    #[inline]
    fn fill(&mut self, fill: Fill) {
        if let Some(m) = self.metrics {
            m.matcher.on_fill(&fill);
        }
        if let Some(s) = self.snapshots.as_deref_mut() {
            s.count_owner(fill.resting_owner);
            s.count_owner(fill.incoming_owner);
        }
        self.push_counted(Record::Fill(fill));
    }

    #[inline]
    fn removed(&mut self, removal: Removal) {
        if let Some(m) = self.metrics {
            m.matcher.on_removal(&removal);
        }
        if let Some(s) = self.snapshots.as_deref_mut() {
            s.count_owner(removal.owner);
        }
        self.push_counted(Record::Removed(removal));
    }

    #[inline]
    fn rested(&mut self, _ts: Timestamp, owner: OwnerId, _order: &NewOrder, rested: Rested) {
        // Of its two events only the acknowledgement has an owner; metrics count neither.
        if let Some(s) = self.snapshots.as_deref_mut() {
            s.count_owner(owner);
        }
        self.push_counted(Record::Rested(rested));
    }
}

/// The matcher stage as an agent. Done once a [`Record::Shutdown`] went through.
pub struct MatcherAgent {
    matcher: Matcher,
    input: Arc<Ring<Record>>,
    output: Arc<Ring<Record>>,
    done: bool,
    metrics: Option<Arc<EngineMetrics>>,
    /// Records pushed to `output` so far (the shutdown marker aside), for [`Mark`]s.
    pushed: u64,
    /// Books changed since they were last published.
    books_dirty: bool,
    /// When the books were last published: ns since midnight, the metrics clock's.
    books_published_ns: u64,
    /// The clock for metrics: the gateway's, so that receipt to match is right.
    clock: VenueClock,
    /// The matcher's next deadline (a good-till-time expiry), ns since midnight,
    /// `u64::MAX` if none: published after each batch for the gateway's timer.
    deadline: Arc<AtomicU64>,
    /// Matcher-made snapshots, if configured.
    snapshots: Option<SnapshotTaker>,
    /// Records taken from `input` ahead of the one being applied, in order (at most
    /// [`LOOKAHEAD`] once it is taken): the matcher warms the cache for the commands
    /// among them ([`Matcher::prefetch`]). The agent does not sleep while it holds any.
    ahead: VecDeque<Record>,
    /// Records of a command whose output did not fit in `output` (a mass cancel, the
    /// close, a sweep of many orders: more records than the ring's room), in order, pushed
    /// before anything else; no command is taken while any waits. The matcher never waits
    /// for room in the middle of a command: with `shared` threading the ring's consumer
    /// (the journal writer) runs on this thread after it, so that wait never ended. It
    /// grows only for such a command (at most a record per resting order) and keeps its
    /// capacity.
    spill: VecDeque<Record>,
    /// Commands applied since start.
    applied: u64,
    /// Commands since start whose records are all in `output` (a spilled command's are
    /// not until the spill is empty), published after each batch: the journal writer
    /// counts a command as released only when its last event is (see
    /// [`crate::journal::Released`]).
    completed: Arc<AtomicU64>,
    /// The last value stored in `completed` (this stage is its only writer).
    published: u64,
}

/// Records the matcher stage takes from its input ahead of the one it applies.
const LOOKAHEAD: usize = 2;

/// The command in `record`, if it is one.
fn command_in(record: Option<&Record>) -> Option<&Command> {
    match record {
        Some(Record::Command(c)) => Some(c),
        _ => None,
    }
}

impl MatcherAgent {
    /// The stage between `input` (from the gateway) and `output` (to the journal writer).
    pub fn new(matcher: Matcher, input: Arc<Ring<Record>>, output: Arc<Ring<Record>>) -> Self {
        // A recovered matcher may already have deadlines (good-till-time expiries, a
        // pause's end): published from the start, so the gateway times them even if no
        // command comes after a restart.
        let deadline = matcher.next_deadline().map_or(u64::MAX, |t| t.0);
        MatcherAgent {
            matcher,
            input,
            output,
            done: false,
            metrics: None,
            pushed: 0,
            books_dirty: true,
            books_published_ns: 0,
            clock: VenueClock::utc(),
            deadline: Arc::new(AtomicU64::new(deadline)),
            snapshots: None,
            ahead: VecDeque::with_capacity(LOOKAHEAD + 1),
            spill: VecDeque::new(),
            applied: 0,
            completed: Arc::new(AtomicU64::new(0)),
            published: 0,
        }
    }

    /// How many commands (since start) have all their records in the output ring: for
    /// the journal writer ([`crate::journal::JournalAgent::new`]).
    pub fn completed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.completed)
    }

    /// Publishes [`MatcherAgent::completed`]; before the output ring's notification, so a
    /// writer woken by it sees the count.
    fn publish_completed(&mut self) {
        let completed = self.applied - u64::from(!self.spill.is_empty());
        if self.published != completed {
            self.published = completed;
            self.completed.store(completed, Ordering::Release);
        }
    }

    /// Takes snapshots of the matcher's state at the end of batches (see
    /// [`SnapshotTaker`]).
    pub fn set_snapshots(&mut self, taker: SnapshotTaker) {
        self.snapshots = Some(taker);
    }

    /// Publishes counters, latencies and the books' tops into `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<EngineMetrics>) {
        self.clock = metrics.clock.clone();
        self.metrics = Some(metrics);
    }

    /// Publishes each book's top if it changed and the last publication is old enough
    /// (matcher thread, at most every [`BOOK_PUBLISH_INTERVAL`]). `now_ns`: the metrics
    /// clock as the caller just read it, if it did (otherwise it is read here, only when
    /// the books changed).
    fn publish_books(&mut self, force: bool, now_ns: Option<u64>) {
        let Some(m) = &self.metrics else {
            return;
        };
        if !self.books_dirty {
            return;
        }
        let as_of_ns = now_ns.unwrap_or_else(|| self.clock.now().0);
        // The clock counts from midnight: a time before the last publication is a new day.
        let since = as_of_ns.checked_sub(self.books_published_ns);
        if !(force || since.is_none_or(|ns| ns >= BOOK_PUBLISH_INTERVAL.as_nanos() as u64)) {
            return;
        }
        for (i, instrument) in m.matcher.instruments.iter().enumerate() {
            let id = InstrumentId(i as u16);
            let level =
                |l: Option<crate::book::LevelView>| l.map(|l| (l.price.0, l.shown_qty, l.open_qty));
            let [bid, ask] = self.matcher.best_bid_offer(id);
            instrument.top.publish(&BookTop {
                bid: level(bid),
                ask: level(ask),
                resting_orders: self.matcher.resting_orders_in(id) as u64,
                state: self.matcher.trading_state(id).code(),
                as_of_ns,
            });
        }
        m.matcher
            .day_phase
            .set(crate::admin::metrics::phase_code(self.matcher.phase()));
        m.matcher
            .venue_halted
            .set(u64::from(self.matcher.venue_halted()));
        self.books_dirty = false;
        self.books_published_ns = as_of_ns;
    }

    /// Where the matcher publishes its next deadline (ns since midnight, `u64::MAX` for
    /// none): the gateway sends a timer command when it has passed.
    pub fn deadline(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.deadline)
    }

    /// The matcher, for inspection after a drain.
    pub fn into_matcher(self) -> Matcher {
        self.matcher
    }
}

impl Agent for MatcherAgent {
    fn role(&self) -> &'static str {
        "matcher"
    }

    fn on_start(&mut self) {
        self.publish_books(true, None);
    }

    /// Applies up to [`BATCH_LEN_MAX`] commands, once the records of the last one that
    /// did not fit in the output ring are all in it.
    fn do_work(&mut self) -> usize {
        if !self.spill.is_empty() {
            let mut moved = 0;
            while let Some(record) = self.spill.pop_front() {
                if let Err(record) = self.output.try_push(record) {
                    self.spill.push_front(record);
                    break;
                }
                moved += 1;
            }
            self.publish_completed();
            self.output.notify();
            if !self.spill.is_empty() {
                return moved;
            }
        }
        let mut taken = 0;
        let mut commands = 0;
        // Read once per batch, for metrics only.
        let mut batch_ns = None;
        let room_min = OUTPUT_ROOM_MIN.min(self.output.capacity() / 4);
        // The output ring's room, read once and counted down (reading it means reading the
        // consumer's index, a cache line the journal writer's core keeps writing); read
        // again only when the count says it may be short.
        let mut room = self.output.room();
        while taken < BATCH_LEN_MAX {
            if room < room_min {
                room = self.output.room();
                if room < room_min {
                    break;
                }
            }
            while self.ahead.len() <= LOOKAHEAD {
                match self.input.try_pop() {
                    Some(record) => self.ahead.push_back(record),
                    None => break,
                }
            }
            match self.ahead.pop_front() {
                Some(Record::Command(cmd)) => {
                    self.matcher.prefetch(
                        command_in(self.ahead.front()),
                        command_in(self.ahead.get(1)),
                    );
                    // The room check above leaves room for it.
                    if let Err(record) = self.output.try_push(Record::Command(cmd)) {
                        self.spill.push_back(record);
                    }
                    let metrics = self.metrics.as_deref();
                    if let Some(m) = metrics {
                        let now = *batch_ns.get_or_insert_with(|| self.clock.now().0);
                        m.matcher.commands.bump(command_index(&cmd.body));
                        m.matcher
                            .receipt_to_match
                            .record(elapsed_ns(now, cmd.ts.0), 1);
                    }
                    let mut sink = RingSink {
                        ring: &self.output,
                        spill: &mut self.spill,
                        metrics,
                        snapshots: self.snapshots.as_mut(),
                        pushed: 0,
                        journaled: 0,
                    };
                    self.matcher.apply(&cmd, &mut sink);
                    let records = 1 + sink.pushed;
                    let journaled = 1 + sink.journaled;
                    self.pushed += records;
                    room = room.saturating_sub(records as usize);
                    if let Some(s) = &mut self.snapshots {
                        s.pushed(journaled);
                    }
                    commands += 1;
                    self.applied += 1;
                    if !self.spill.is_empty() {
                        taken += 1;
                        break;
                    }
                }
                Some(Record::Shutdown) => {
                    // A last snapshot makes the next start quick.
                    if let Some(s) = &mut self.snapshots {
                        s.take_waiting(&self.matcher, std::time::Duration::from_secs(1));
                    }
                    // The last command counts as complete before the marker goes.
                    self.publish_completed();
                    self.output.push(Record::Shutdown);
                    self.done = true;
                    taken += 1;
                    break;
                }
                Some(
                    r @ (Record::Event(_)
                    | Record::Fill(_)
                    | Record::Rested(_)
                    | Record::Removed(_)),
                ) => {
                    panic!("the matcher's input holds only commands, got {r:?}")
                }
                None => break,
            }
            taken += 1;
        }
        // The batch's end, for its mark and for the books' publication (one clock read).
        let mut batch_end_ns = None;
        if let (Some(m), true) = (&self.metrics, commands > 0) {
            let at_ns = self.clock.now().0;
            m.to_journal_marks.push(Mark {
                end: self.pushed,
                weight: commands,
                at_ns,
            });
            batch_end_ns = Some(at_ns);
            self.books_dirty = true;
        }
        if taken > 0 {
            self.publish_completed();
            self.output.notify();
            // At a command boundary: after the batch's records are on their way.
            if let Some(s) = &mut self.snapshots
                && s.due()
            {
                s.take(&self.matcher);
            }
            let next = self.matcher.next_deadline().map_or(u64::MAX, |t| t.0);
            if self.deadline.load(Ordering::Relaxed) != next {
                self.deadline.store(next, Ordering::Relaxed);
            }
        }
        self.publish_books(self.done, batch_end_ns);
        taken
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn prepare_sleep(&mut self) -> bool {
        // Records already taken are work: no producer will wake the agent for them. Nor
        // will the journal writer for room it makes for the spill: that wait is a bounded
        // park (dedicated threading; in shared, the writer runs before the next turn).
        self.ahead.is_empty() && self.spill.is_empty() && self.input.prepare_sleep()
    }

    fn woke(&mut self) {
        self.input.woke();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::flow::{ByteSource, FlowDecoder, STP_SETUPS, stp_test_config};
    use crate::pipeline::Wake;

    /// The matcher's counters as `/metrics` shows them: rejects and cancels by reason,
    /// trades and shares by instrument.
    fn counts(metrics: &EngineMetrics) -> Vec<(String, u64)> {
        let m = &metrics.matcher;
        let mut out: Vec<(String, u64)> = m
            .rejects
            .values()
            .map(|(name, v)| (format!("reject {name}"), v))
            .chain(
                m.cancels
                    .values()
                    .map(|(name, v)| (format!("cancel {name}"), v)),
            )
            .collect();
        for (i, instrument) in m.instruments.iter().enumerate() {
            out.push((format!("trades {i}"), instrument.trades.get()));
            out.push((format!("shares {i}"), instrument.shares.get()));
        }
        out
    }

    /// The sink counts a match, a full cancel and an order that rested from the record,
    /// without building their events: on random flows (every order feature, self-trade
    /// prevention in each mode, full pools) its metrics and per-session counts equal
    /// those of counting every event the records stand for, one by one.
    #[test]
    fn records_are_counted_as_their_events() {
        let mut records_seen = [0u64; 4];
        for setup in 0..STP_SETUPS {
            let config = stp_test_config(setup);
            let users = config.owners.len();
            for seed in 0..24u64 {
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let bytes: Vec<u8> = (0..6_000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    })
                    .collect();
                let clock = VenueClock::new(jiff::tz::TimeZone::UTC);
                let direct = EngineMetrics::new(config.instruments.len(), users, 64, clock.clone());
                let expanded = EngineMetrics::new(config.instruments.len(), users, 64, clock);
                let mut taker = SnapshotTaker::detached(users);
                let mut sessions = vec![0u64; users];
                let ring = Ring::new(1 << 16, Wake::None);
                let mut matcher = Matcher::new(&config);
                let mut decoder = FlowDecoder::new(&config);
                let mut src = ByteSource::new(&bytes);
                while let Some(cmd) = decoder.next(&mut src) {
                    let mut sink = RingSink {
                        ring: &ring,
                        spill: &mut VecDeque::new(),
                        metrics: Some(&direct),
                        snapshots: Some(&mut taker),
                        pushed: 0,
                        journaled: 0,
                    };
                    matcher.apply(&cmd, &mut sink);
                    while let Some(record) = ring.try_pop() {
                        records_seen[match record {
                            Record::Fill(_) => 0,
                            Record::Removed(_) => 1,
                            Record::Rested(_) => 2,
                            _ => 3,
                        }] += 1;
                        record.for_each_event(Some(&cmd), |event| {
                            expanded.matcher.on_event(&event);
                            // An unknown owner's reject counts in no session.
                            if let Some(n) = event
                                .body
                                .owner()
                                .and_then(|owner| sessions.get_mut(usize::from(owner.0)))
                            {
                                *n += 1;
                            }
                        });
                    }
                }
                assert_eq!(
                    counts(&direct),
                    counts(&expanded),
                    "setup {setup}, seed {seed}"
                );
                assert_eq!(
                    taker.sessions(),
                    &sessions[..],
                    "setup {setup}, seed {seed}"
                );
            }
        }
        // Every kind of record went through the sink, many times.
        assert!(records_seen.iter().all(|&n| n > 1_000), "{records_seen:?}");
    }
}
