//! A cluster node's Raft log opened from damaged bytes. The first byte picks how the log is
//! made: the input itself (any bytes), or a real log of appends (a recipe in the input)
//! with one piece of damage (zeros over a range, or a flipped bit) anywhere, or only in its
//! last append, the one a power loss can tear (earlier ones were synced, perhaps
//! acknowledged). What must hold: opening never panics; a log it opens it cuts to what it
//! took, so that opening it again takes the same entries and cuts nothing; damage in the
//! last append never costs an entry of an earlier one; and damage before the last append
//! is never cut (the last append's mark follows it): the log opens whole or is refused.
#![no_main]

use std::path::PathBuf;

use ironmatch::cluster::store::{RaftStore, write_log_for_fuzzing};
use ironmatch::journal::FsyncMode;
use libfuzzer_sys::fuzz_target;

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ironmatch-fuzz-raft-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// The next byte of the recipe (0 once it runs out).
fn take(data: &mut &[u8]) -> u8 {
    let Some((&b, rest)) = data.split_first() else {
        return 0;
    };
    *data = rest;
    b
}

fuzz_target!(|input: &[u8]| {
    let dir = dir();
    let log = dir.join("log");
    let Some((&mode, mut data)) = input.split_first() else {
        return;
    };
    // Entries the damage cannot be allowed to cost.
    let mut kept_at_least = 0;
    match mode % 3 {
        0 => std::fs::write(&log, data).expect("the log written"),
        mode => {
            let appends: Vec<Vec<usize>> = (0..1 + take(&mut data) % 4)
                .map(|_| {
                    // Up to about 2 KB an entry, so that sectors fall inside entries.
                    (0..1 + take(&mut data) % 5)
                        .map(|_| 1 + 2 * usize::from(take(&mut data)))
                        .collect()
                })
                .collect();
            let ranges = write_log_for_fuzzing(&dir, &appends).expect("a log written");
            let last = ranges.last().expect("at least one append").clone();
            let end = last.end;
            // Where the damage may go: anywhere, or the last append only.
            let (from, to) = if mode == 1 { (0, end) } else { (last.start, end) };
            let at = from + u64::from(u16::from_le_bytes([take(&mut data), take(&mut data)])) % (to - from);
            let mut bytes = std::fs::read(&log).expect("the log read");
            let damage_end = if take(&mut data) % 2 == 0 {
                let len = (u64::from(take(&mut data)) * 8 + 1).min(to - at);
                bytes[at as usize..(at + len) as usize].fill(0);
                at + len
            } else {
                bytes[at as usize] ^= 1 << (take(&mut data) % 8);
                at + 1
            };
            std::fs::write(&log, &bytes).expect("the log written");
            let all: usize = appends.iter().map(Vec::len).sum();
            if mode == 2 {
                kept_at_least = all - appends.last().map_or(0, Vec::len);
            } else if damage_end <= last.start {
                kept_at_least = all;
            }
        }
    }
    let written = std::fs::read(&log).expect("the log read");
    if let Ok(opened) = RaftStore::open(&dir, FsyncMode::Never, 0, None) {
        let entries = opened.entries;
        drop(opened);
        assert!(entries >= kept_at_least, "{entries} entries kept of {kept_at_least} that must stay");
        let kept = std::fs::read(&log).expect("the log read");
        assert!(written.starts_with(&kept), "only a tail is cut");
        let again = RaftStore::open(&dir, FsyncMode::Never, 0, None).expect("a cut log opens");
        assert_eq!(again.entries, entries, "the same entries again");
        assert_eq!(std::fs::read(&log).expect("the log read"), kept, "nothing more cut");
    } else {
        assert_eq!(std::fs::read(&log).expect("the log read"), written, "a refused log is left as it was");
    }
});
