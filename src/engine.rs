//! Stage 2, the matcher thread: commands in, commands and their events out.
//!
//! Pops commands from the gateway's ring in batches, applies each to the [`Matcher`], and
//! pushes the command followed by its events to the journal writer's ring. Events are
//! written straight into the ring (no intermediate buffer), so a sweep producing thousands
//! of events needs no memory: a full ring makes the matcher wait (backpressure).

use std::sync::Arc;

use crossbeam::sync::Parker;

use crate::book::{Event, EventSink, Matcher};
use crate::pipeline::{Idle, Record, Ring, WaitStrategy, idle_wait};

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

/// Runs the matcher stage until a [`Record::Shutdown`] arrives; forwards it and returns
/// the matcher (for inspection after a drain).
pub fn run_matcher(
    mut matcher: Matcher,
    input: &Ring<Record>,
    output: &Arc<Ring<Record>>,
    wait: WaitStrategy,
    parker: &Parker,
) -> Matcher {
    let mut idle = Idle::new();
    loop {
        let mut taken = 0;
        while taken < BATCH_LEN_MAX {
            match input.try_pop() {
                Some(Record::Command(cmd)) => {
                    output.push(Record::Command(cmd));
                    matcher.apply(&cmd, &mut RingSink(output));
                }
                Some(Record::Shutdown) => {
                    output.push(Record::Shutdown);
                    output.notify();
                    return matcher;
                }
                Some(Record::Event(e)) => {
                    panic!("the matcher's input holds only commands, got {e:?}")
                }
                None => break,
            }
            taken += 1;
        }
        if taken > 0 {
            output.notify();
            idle.reset();
        } else {
            idle_wait(input, wait, &mut idle, parker);
        }
    }
}
