//! The feed listener's decoders on untrusted datagrams: MoldUDP64 packets through the
//! sequencer, ITCH messages into the order-by-order book, and retransmission requests (what
//! the publisher parses). Must never panic; the book's invariants hold after every message;
//! every known ITCH message that decodes encodes back to the same bytes.
#![no_main]

use ironmatch::feed::{FeedBook, Sequencer};
use ironmatch::wire::itch::{Body, Message};
use ironmatch::wire::moldudp64::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut sequencer = Sequencer::new(None);
    let mut book = FeedBook::default();
    // Datagrams: a 2-byte length, then that many bytes (the rest if shorter).
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let datagram = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let _ = parse_request(datagram);
        let _ = sequencer.on_packet(datagram, &mut |_, bytes| {
            if let Ok(m) = Message::decode(bytes) {
                if !matches!(m.body, Body::Unknown { .. }) {
                    let mut buf = [0u8; 64];
                    let n = m.encode(&mut buf);
                    assert_eq!(&buf[..n], bytes);
                }
                let _ = book.apply(&m);
                book.check_invariants();
            }
        });
        let _ = sequencer.gap();
    }
});
