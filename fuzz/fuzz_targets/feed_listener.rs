//! The feed listener's decoders on untrusted datagrams: MoldUDP64 packets through the
//! sequencer, ITCH messages into the order-by-order book, and retransmission requests (what
//! the publisher parses). Must never panic; the book's invariants hold after every message;
//! every known ITCH message that decodes encodes back to the same bytes
//! (`ironmatch::feed::listener::exercise` checks all of it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Datagrams: a 2-byte length, then that many bytes (the rest if shorter).
    let mut datagrams = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        datagrams.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    ironmatch::feed::listener::exercise(datagrams);
});
