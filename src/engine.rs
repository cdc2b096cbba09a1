//! Stage 2, the matcher: commands in, commands and their events out.
//!
//! [`MatcherAgent`] pops commands from the gateway's ring in batches, applies each to the
//! [`Matcher`], and pushes the command followed by its events to the journal writer's
//! ring. Events are written straight into the ring (no intermediate buffer), so a sweep
//! producing thousands of events needs no memory: a full ring makes the matcher wait
//! (backpressure). Which thread runs it is the wiring's choice (see
//! [`Threading`](crate::pipeline::Threading)): its own, or the one shared with the gateway
//! and the journal writer, where the journal writer runs right after it in each cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::book::{Event, EventSink, Matcher};
use crate::pipeline::{Agent, Record, Ring};

/// Commands taken from the ring before the consumer is notified.
pub const BATCH_LEN_MAX: usize = 256;

/// Writes each event into the output ring.
struct RingSink<'a>(&'a Ring<Record>);

impl EventSink for RingSink<'_> {
    #[inline]
    fn push(&mut self, event: Event) {
        self.0.push(Record::Event(event));
    }
}

/// The matcher stage as an agent. Done once a [`Record::Shutdown`] went through.
pub struct MatcherAgent {
    matcher: Matcher,
    input: Arc<Ring<Record>>,
    output: Arc<Ring<Record>>,
    done: bool,
    /// The matcher's next deadline (a good-till-time expiry), ns since midnight,
    /// `u64::MAX` if none: published after each batch for the gateway's timer.
    deadline: Arc<AtomicU64>,
}

impl MatcherAgent {
    /// The stage between `input` (from the gateway) and `output` (to the journal writer).
    pub fn new(matcher: Matcher, input: Arc<Ring<Record>>, output: Arc<Ring<Record>>) -> Self {
        MatcherAgent {
            matcher,
            input,
            output,
            done: false,
            deadline: Arc::new(AtomicU64::new(u64::MAX)),
        }
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

    /// Applies up to [`BATCH_LEN_MAX`] commands.
    fn do_work(&mut self) -> usize {
        let mut taken = 0;
        while taken < BATCH_LEN_MAX {
            match self.input.try_pop() {
                Some(Record::Command(cmd)) => {
                    self.output.push(Record::Command(cmd));
                    self.matcher.apply(&cmd, &mut RingSink(&self.output));
                }
                Some(Record::Shutdown) => {
                    self.output.push(Record::Shutdown);
                    self.done = true;
                    taken += 1;
                    break;
                }
                Some(Record::Event(e)) => {
                    panic!("the matcher's input holds only commands, got {e:?}")
                }
                None => break,
            }
            taken += 1;
        }
        if taken > 0 {
            self.output.notify();
            let next = self.matcher.next_expiry().map_or(u64::MAX, |t| t.0);
            if self.deadline.load(Ordering::Relaxed) != next {
                self.deadline.store(next, Ordering::Relaxed);
            }
        }
        taken
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn prepare_sleep(&mut self) -> bool {
        self.input.prepare_sleep()
    }

    fn woke(&mut self) {
        self.input.woke();
    }
}
