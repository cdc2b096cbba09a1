//! Hostile clients against a live engine on loopback, while honest sessions trade.
//!
//! `gateway_session_*`: the `gateway_session` fuzz target's checker
//! (`ironmatch::gateway::exercise`) driven by proptest: structured OUCH messages with
//! random field values after a real login; every message answered, no alpha field outside
//! printable ASCII, the journal replays deterministically.

mod common;

use ironmatch::gateway::exercise::{self, MESSAGES_MAX};
use proptest::prelude::*;

#[test]
fn gateway_session_checker_sees_every_kind_of_answer() {
    // A fixed input long enough for MESSAGES_MAX messages: the checker must report them
    // answered, some accepted and some rejected.
    let data: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let outcome = exercise::exercise(&data);
    assert_eq!(outcome.sent, MESSAGES_MAX, "{outcome:?}");
    assert!(outcome.answers >= outcome.sent, "{outcome:?}");
    assert!(
        outcome.accepted > 0 && outcome.rejected > 0,
        "{outcome:?}"
    );
    assert!(outcome.commands_replayed >= outcome.sent as u64, "{outcome:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn gateway_session_random_fields(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let outcome = exercise::exercise(&data);
        prop_assert!(outcome.answers >= outcome.sent);
    }
}
