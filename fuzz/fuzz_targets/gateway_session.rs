//! A live gateway session: the engine on loopback, a real login, then structured OUCH
//! messages whose field values come from the input (mostly valid, sometimes anything).
//! Every message must be answered, no alpha field outside printable ASCII may go out, the
//! engine must stop cleanly and its journal replay deterministically
//! (`ironmatch::gateway::exercise::exercise` checks all of it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironmatch::gateway::exercise::exercise(data);
});
