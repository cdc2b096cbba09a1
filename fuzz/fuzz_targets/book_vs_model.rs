//! Arbitrary bytes decode to a command stream; the fast book and the reference model must
//! produce identical events and books, and the fast book's invariants must hold.
#![no_main]

use ironmatch::book::flow::{ByteSource, FlowDecoder, stp_test_config};
use ironmatch::book::reference::ReferenceMatcher;
use ironmatch::book::Matcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let config = stp_test_config(usize::from(mode));
    let mut fast = Matcher::new(&config);
    let mut model = ReferenceMatcher::new(&config);
    let mut decoder = FlowDecoder::new(&config);
    let mut src = ByteSource::new(data);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    while let Some(cmd) = decoder.next(&mut src) {
        a.clear();
        b.clear();
        fast.apply(&cmd, &mut a);
        model.apply(&cmd, &mut b);
        assert_eq!(a, b, "events differ for {cmd:?}");
        if let Err(broken) = fast.check_invariants() {
            panic!("invariant broken after {cmd:?}: {broken}");
        }
    }
    assert_eq!(fast.view(), model.view());
});
