//! `ring/hop`: one record through a pipeline ring to a consumer thread and back on a
//! second ring (a round trip is two hops; the figure is per round trip), with the
//! consumer using the configured wait strategy (`IRONMATCH_WAIT`, default `spin_park`).
//! `ring/throughput`: records pushed by one thread and popped by another, ring kept busy.
//! `ring/baseline`: the same round trip within one thread (push then pop, no hop).

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam::sync::Parker;
use ironmatch::pipeline::{Idle, Ring, WaitStrategy, Wake, idle_wait};

fn strategy() -> WaitStrategy {
    std::env::var("IRONMATCH_WAIT")
        .ok()
        .and_then(|w| WaitStrategy::parse(&w))
        .unwrap_or(WaitStrategy::SpinPark)
}

/// A consumer thread echoing every record from `input` to `output` until `stop`.
fn echo(
    input: Arc<Ring<u64>>,
    output: Arc<Ring<u64>>,
    parker: Parker,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let wait = strategy();
    std::thread::spawn(move || {
        let mut idle = Idle::new();
        while !stop.load(Ordering::Relaxed) {
            match input.try_pop() {
                Some(v) => {
                    idle.reset();
                    output.push(v);
                    output.notify();
                }
                None => idle_wait(&input, wait, &mut idle, &parker),
            }
        }
    })
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));

    group.bench_function("baseline", |b| {
        let ring: Ring<u64> = Ring::new(1024, Wake::Thread(Parker::new().unparker().clone()));
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            ring.push(black_box(i));
            black_box(ring.try_pop())
        })
    });

    // Round trip: the bench thread waits for each reply by spinning (it is the client).
    {
        let parker = Parker::new();
        let there = Arc::new(Ring::new(1024, Wake::Thread(parker.unparker().clone())));
        let back: Arc<Ring<u64>> = Arc::new(Ring::new(
            1024,
            Wake::Thread(Parker::new().unparker().clone()),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let t = echo(
            Arc::clone(&there),
            Arc::clone(&back),
            parker,
            Arc::clone(&stop),
        );
        group.bench_function("hop", |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                there.push(i);
                there.notify();
                loop {
                    if let Some(v) = back.try_pop() {
                        break black_box(v);
                    }
                    std::hint::spin_loop();
                }
            })
        });
        group.bench_function("throughput", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut received = 0u64;
                let mut sent = 0u64;
                while received < iters {
                    while sent < iters && sent - received < 512 {
                        if there.try_push(sent).is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    there.notify();
                    while back.try_pop().is_some() {
                        received += 1;
                    }
                }
                start.elapsed()
            })
        });
        stop.store(true, Ordering::Relaxed);
        there.notify();
        t.join().unwrap();
    }
    group.finish();
}

criterion_group!(name = ring_benches; config = Criterion::default().measurement_time(Duration::from_secs(4)); targets = benches);
criterion_main!(ring_benches);
