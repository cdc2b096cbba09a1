//! Arbitrary bytes as the body of a frame on the cluster's Raft port (anything reachable on
//! the network may send them): decoding a request or a reply must never panic, and a
//! decoded append request re-encodes.
#![no_main]

use ironmatch::cluster::network::{Reply, Request, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<Request>(data) {
        let bytes = postcard::to_allocvec(&request).expect("a decoded request encodes");
        assert!(decode::<Request>(&bytes).is_ok());
    }
    let _ = decode::<Reply>(data);
});
