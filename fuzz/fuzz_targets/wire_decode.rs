//! Every decoder of untrusted bytes: SoupBinTCP framing (both directions) and OUCH inbound
//! and outbound messages. Must never panic; whatever decodes must re-encode to the same bytes.
#![no_main]

use ironmatch::wire::ouch::{Inbound, decode_inbound, decode_outbound};
use ironmatch::wire::soupbin::{ClientPacket, decode_client, decode_server, next_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(frame)) = next_frame(rest, 1024) {
        if let Ok(ClientPacket::Unsequenced(msg)) = decode_client(&frame)
            && let Ok(decoded) = decode_inbound(msg)
        {
            // Options are canonicalised on encoding; a second round must be stable.
            let mut once = Vec::new();
            decoded.write(&mut once);
            let mut twice = Vec::new();
            decode_inbound(&once).expect("own encoding decodes").write(&mut twice);
            assert_eq!(once, twice);
            let _: Inbound<'_> = decoded;
            // The gateway's validation and mapping of what decodes must not panic either.
            let firm = ironmatch::types::Firm::from_str_padded("ABC").expect("valid firm");
            let _ = ironmatch::gateway::to_command(&decoded, firm);
        }
        let _ = decode_server(&frame);
        rest = &rest[frame.len..];
    }
    let _ = decode_inbound(data);
    let _ = decode_outbound(data);
});
