//! Journal benchmarks: `journal/append` (records staged and written in batches of 1,024,
//! `fsync = "never"`, to a temporary directory) and `journal/replay` (reading records back:
//! CRC32C, sequence check, payload decode; no matching), with `journal/baseline` (copying
//! the same bytes). `journal/recover_full` and `journal/recover_snapshot`: recovery of the
//! same 200,000 records by a full re-run, and from a snapshot covering 90% of them
//! (throughput per journal record). Records are the commands and events of the book flow
//! generator.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ironmatch::book::flow::{ByteSource, FlowDecoder, test_config};
use ironmatch::book::{Matcher, StpMode};
use ironmatch::journal::{self, Entry, FsyncMode, Header, JournalWriter};

/// A realistic mix of command and event records.
fn entries(n: usize) -> Vec<Entry> {
    let book = test_config(StpMode::CancelResting);
    let mut matcher = Matcher::new(&book);
    let mut decoder = FlowDecoder::new(&book);
    let bytes: Vec<u8> = (0..n * 16).map(|i| (i * 7919 % 251) as u8).collect();
    let mut src = ByteSource::new(&bytes);
    let mut out = Vec::with_capacity(n);
    let mut events = Vec::new();
    while out.len() < n {
        let Some(cmd) = decoder.next(&mut src) else {
            break;
        };
        events.clear();
        matcher.apply(&cmd, &mut events);
        out.push(Entry::Command(cmd));
        out.extend(events.iter().map(|e| Entry::Event(*e)));
    }
    out.truncate(n);
    out
}

fn temp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ironmatch-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn benches(c: &mut Criterion) {
    let records = entries(200_000);
    let book = test_config(StpMode::CancelResting);
    let header = Header {
        instance: 1,
        first_seq: 1,
        fingerprint: journal::fingerprint(&book),
        created_ns: 0,
    };
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));

    group.bench_function("append", |b| {
        b.iter_custom(|iters| {
            let dir = temp("append");
            let mut writer =
                JournalWriter::open(&dir, header, None, 1, FsyncMode::Never, 1 << 30).unwrap();
            let start = Instant::now();
            for (i, entry) in records.iter().cycle().take(iters as usize).enumerate() {
                writer.stage(entry);
                if i % journal::BATCH_LEN_MAX == journal::BATCH_LEN_MAX - 1 {
                    writer.commit().unwrap();
                }
            }
            writer.commit().unwrap();
            let elapsed = start.elapsed();
            std::fs::remove_dir_all(&dir).ok();
            elapsed
        })
    });

    // One journal of 200,000 records, read back whole.
    let dir = temp("replay");
    let mut writer = JournalWriter::open(&dir, header, None, 1, FsyncMode::Never, 1 << 30).unwrap();
    for entry in &records {
        writer.stage(entry);
    }
    writer.commit().unwrap();
    let path = journal::segment_paths(&dir).unwrap().remove(0);
    let bytes = std::fs::read(&path).unwrap();
    group.bench_function("baseline", |b| {
        let mut copy = vec![0u8; bytes.len()];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters.div_ceil(records.len() as u64) {
                copy.copy_from_slice(&bytes);
                black_box(&copy);
            }
            start.elapsed().mul_f64(
                iters as f64 / (iters.div_ceil(records.len() as u64) * records.len() as u64) as f64,
            )
        })
    });
    group.bench_function("replay", |b| {
        b.iter_custom(|iters| {
            let passes = iters.div_ceil(records.len() as u64);
            let start = Instant::now();
            for _ in 0..passes {
                let scan = journal::scan_journal(&dir, None, false, None, |_, entry| {
                    black_box(entry);
                    Ok(())
                })
                .unwrap();
                assert_eq!(scan.records, records.len() as u64);
            }
            start
                .elapsed()
                .mul_f64(iters as f64 / (passes * records.len() as u64) as f64)
        })
    });
    group.finish();

    // Recovery of the same 200,000 records: a full re-run (every command re-matched, every
    // event checked), and from a snapshot covering about 90% of them.
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);
    group.bench_function("recover_full", |b| {
        b.iter_with_large_drop(|| journal::recover(&dir, &book, |_| {}).unwrap().matcher)
    });
    let snap_dir = temp("snapshot");
    std::fs::create_dir_all(&snap_dir).unwrap();
    std::fs::copy(&path, snap_dir.join(path.file_name().unwrap())).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(true);
    journal::snapshot::run_snapshotter(
        journal::snapshot::SnapshotterStart {
            dir: snap_dir.clone(),
            book: book.clone(),
            instance: 1,
            state: Matcher::new(&book).state(),
            sessions: vec![0; book.owners.len()],
            next_seq: 1,
            interval: records.len() as u64 * 9 / 10,
            last_snapshot: 0,
        },
        &stop,
        None,
    );
    let snaps = journal::snapshot::snapshot_paths(&snap_dir).unwrap();
    std::fs::remove_file(&snaps.last().unwrap().1).unwrap();
    group.bench_function("recover_snapshot", |b| {
        // The recovered matcher is dropped outside the timing, as for `recover_full`.
        b.iter_with_large_drop(|| {
            let r = journal::recover(&snap_dir, &book, |_| {}).unwrap();
            assert!(r.snapshot.is_some());
            r.matcher
        })
    });
    group.finish();
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&snap_dir).ok();
}

criterion_group!(name = journal_benches; config = Criterion::default().measurement_time(Duration::from_secs(5)); targets = benches);
criterion_main!(journal_benches);
