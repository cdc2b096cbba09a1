//! The journal reader on arbitrary bytes: never panics, and never accepts a record whose
//! bytes were not produced by the writer (a record it accepts re-encodes to the same bytes).
#![no_main]

use ironmatch::journal::{batch_index, read_header, read_record, write_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_header(data);
    let mut at = 0;
    while at < data.len() {
        match read_record(&data[at..]) {
            Ok((seq, entry, len)) => {
                let mut again = Vec::new();
                write_record(&mut again, seq, batch_index(&data[at..]), &entry);
                assert_eq!(&again[..], &data[at..at + len], "accepted bytes the writer would not produce");
                at += len;
            }
            Err(_) => at += 1,
        }
    }
});
