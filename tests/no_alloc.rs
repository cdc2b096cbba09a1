//! Steady-state order flow allocates nothing: every pool, table and ladder is sized at
//! start-up. A counting global allocator counts allocations made on this test's thread.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ironmatch::book::flow::{ByteSource, FlowDecoder, test_config};
use ironmatch::book::{BookConfig, Event, Matcher, StpMode};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAllocator;

// SAFETY: forwards every call unchanged to the system allocator; the only addition is a
// counter in a const-initialised thread-local, which never allocates itself.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn bytes(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs `warmup` commands, then counts allocations over the rest. Returns (commands, allocations).
fn count(config: &BookConfig, data: &[u8], warmup: usize) -> (usize, u64) {
    let mut matcher = Matcher::new(config);
    let mut decoder = FlowDecoder::new(config);
    let mut src = ByteSource::new(data);
    let mut events: Vec<Event> = Vec::with_capacity(1 << 16);
    let mut n = 0;
    while let Some(cmd) = decoder.next(&mut src) {
        if n == warmup {
            ALLOCATIONS.with(|a| a.set(0));
            COUNTING.with(|c| c.set(true));
        }
        events.clear();
        matcher.apply(&cmd, &mut events);
        n += 1;
    }
    COUNTING.with(|c| c.set(false));
    (n - warmup, ALLOCATIONS.with(Cell::get))
}

#[test]
fn steady_state_flow_allocates_nothing() {
    let data = bytes(3_000_000, 0x2545_F491_4F6C_DD1D);
    for stp in [
        StpMode::CancelResting,
        StpMode::CancelIncoming,
        StpMode::CancelBoth,
    ] {
        // Small pools: full-pool rejects are part of the flow.
        let small = test_config(stp);
        // Large pools: the books grow deep and the reference map sees heavy churn.
        let large = BookConfig {
            orders_max: 100_000,
            levels_max: 10_000,
            ..test_config(stp)
        };
        for config in [small, large] {
            let (commands, allocations) = count(&config, &data, 1_000);
            eprintln!(
                "{stp:?}, orders_max {}: {commands} commands, {allocations} allocations",
                config.orders_max
            );
            assert!(commands > 100_000);
            assert_eq!(allocations, 0, "the matcher allocated on the hot path");
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    COUNTING.with(|c| c.set(true));
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(10));
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert!(
        ALLOCATIONS.with(Cell::get) >= 1,
        "a test that cannot fail proves nothing"
    );
}
