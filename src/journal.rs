//! Stage 3, the journal writer thread: the source of truth, and the gate for replies.
//!
//! Takes commands and events from the matcher and forwards the events to egress. Events
//! leave only after this stage has handled their batch, so once the journal is written
//! here (the journal issue), no client hears of anything that is not on disk. Until then
//! this stage writes nothing: it exists so the pipeline has its final shape.

use crossbeam::sync::Parker;

use crate::pipeline::{Idle, Record, Ring, WaitStrategy, idle_wait};

/// Records taken from the ring before the consumer is notified.
pub const BATCH_LEN_MAX: usize = 1024;

/// Runs the journal stage until a [`Record::Shutdown`] arrives, then forwards it.
pub fn run_journal(
    input: &Ring<Record>,
    output: &Ring<Record>,
    wait: WaitStrategy,
    parker: &Parker,
) {
    let mut idle = Idle::new();
    loop {
        let mut taken = 0;
        while taken < BATCH_LEN_MAX {
            match input.try_pop() {
                Some(Record::Command(_)) => {}
                Some(event @ Record::Event(_)) => output.push(event),
                Some(Record::Shutdown) => {
                    output.push(Record::Shutdown);
                    output.notify();
                    return;
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
