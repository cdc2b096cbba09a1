//! The fast book against the reference model on random command streams.
//!
//! Every command goes to both; their events must be identical, their books identical,
//! the fast book's structural invariants must hold, and an audit of the event stream must
//! account for every share (accepted = executed + canceled + open).

use std::collections::HashMap;

use ironmatch::book::flow::{ByteSource, FlowDecoder, STP_SETUPS, stp_test_config};
use ironmatch::book::reference::{BookView, ReferenceMatcher};
use ironmatch::book::{
    BookConfig, Command, CommandBody, Event, EventBody, LevelView, Matcher, OrderAck, RefRule,
    VenueCommand,
};
use ironmatch::types::{BookSide, MatchId, OrderId, OwnerId, Price, UserRef};
use proptest::prelude::*;

/// Follows the event stream and checks that shares are conserved and that the market-data
/// events rebuild exactly the displayed part of the books.
#[derive(Default)]
struct Audit {
    /// order id -> shares entered, executed, canceled, open now
    orders: HashMap<OrderId, Shares>,
    /// live (owner, user_ref) -> order id
    live: HashMap<(OwnerId, UserRef), OrderId>,
    /// match id -> (qty, price, sides seen)
    matches: HashMap<MatchId, (u32, u64, u8)>,
    /// feed reference -> (instrument, side, price, displayed shares), from Md* events only
    feed: HashMap<OrderId, (u16, BookSide, u64, u32)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Shares {
    entered: u64,
    executed: u64,
    canceled: u64,
    open: u64,
}

impl Audit {
    fn enter(&mut self, owner: OwnerId, order: &OrderAck) {
        let qty = u64::from(order.qty.0);
        let shares = Shares {
            entered: qty,
            open: qty,
            ..Shares::default()
        };
        self.orders.insert(order.order_id, shares);
        self.live.insert((owner, order.user_ref), order.order_id);
    }

    fn shares(&mut self, id: OrderId) -> &mut Shares {
        self.orders.get_mut(&id).expect("event names a known order")
    }

    fn on(&mut self, event: &Event) {
        match event.body {
            EventBody::Accepted { owner, order } => self.enter(owner, &order),
            EventBody::Replaced {
                owner,
                orig_user_ref,
                order,
            } => {
                let old = self
                    .live
                    .remove(&(owner, orig_user_ref))
                    .expect("replaced order was live");
                // The old order's open shares move to the new order: close the old one.
                let s = self.shares(old);
                s.canceled += s.open;
                s.open = 0;
                self.enter(owner, &order);
            }
            EventBody::Executed {
                order_id,
                qty,
                price,
                match_id,
                leaves,
                ..
            } => {
                let s = self.shares(order_id);
                s.executed += u64::from(qty.0);
                s.open -= u64::from(qty.0);
                assert_eq!(
                    s.open,
                    u64::from(leaves.0),
                    "{order_id:?}: leaves after execution"
                );
                let m = self.matches.entry(match_id).or_insert((qty.0, price.0, 0));
                assert_eq!(
                    (m.0, m.1),
                    (qty.0, price.0),
                    "both sides of {match_id:?} agree"
                );
                m.2 += 1;
                assert!(m.2 <= 2, "a match has two sides");
            }
            EventBody::Canceled {
                order_id,
                qty,
                leaves,
                ..
            } => {
                let s = self.shares(order_id);
                s.canceled += u64::from(qty.0);
                s.open -= u64::from(qty.0);
                assert_eq!(
                    s.open,
                    u64::from(leaves.0),
                    "{order_id:?}: leaves after cancel"
                );
            }
            EventBody::AiqCanceled { order_id, qty, .. } => {
                let s = self.shares(order_id);
                s.canceled += u64::from(qty.0);
                s.open -= u64::from(qty.0);
                assert_eq!(s.open, 0, "self-trade prevention cancels the whole order");
            }
            EventBody::Modified {
                owner,
                user_ref,
                qty,
                ..
            } => {
                let id = self.live[&(owner, user_ref)];
                let s = self.shares(id);
                s.canceled += s.open - u64::from(qty.0);
                s.open = u64::from(qty.0);
            }
            _ => self.on_feed(event),
        }
    }

    fn on_feed(&mut self, event: &Event) {
        match event.body {
            EventBody::MdAdd {
                instrument,
                md_ref,
                side,
                qty,
                price,
                ..
            } => {
                let dup = self
                    .feed
                    .insert(md_ref, (instrument.0, side, price.0, qty.0));
                assert!(dup.is_none(), "feed reference {md_ref:?} added twice");
            }
            EventBody::MdExecute { md_ref, qty, .. } | EventBody::MdCancel { md_ref, qty, .. } => {
                let entry = self
                    .feed
                    .get_mut(&md_ref)
                    .expect("feed event names a shown order");
                entry.3 = entry
                    .3
                    .checked_sub(qty.0)
                    .expect("feed quantity never goes negative");
                if entry.3 == 0 {
                    self.feed.remove(&md_ref);
                }
            }
            EventBody::MdDelete { md_ref, .. } => {
                self.feed
                    .remove(&md_ref)
                    .expect("feed delete names a shown order");
            }
            EventBody::MdReplace {
                old_md_ref,
                new_md_ref,
                qty,
                price,
                ..
            } => {
                let (instrument, side, _, _) = self
                    .feed
                    .remove(&old_md_ref)
                    .expect("feed replace names a shown order");
                self.feed
                    .insert(new_md_ref, (instrument, side, price.0, qty.0));
            }
            _ => {}
        }
    }

    fn check(&self, view: &BookView) {
        let mut resting: HashMap<OrderId, u64> = HashMap::new();
        let mut shown: HashMap<OrderId, (u16, BookSide, u64, u32)> = HashMap::new();
        for (i, sides) in view.sides.iter().enumerate() {
            for (s, side) in sides.iter().enumerate() {
                let book_side = if s == 0 { BookSide::Bid } else { BookSide::Ask };
                for o in side {
                    resting.insert(o.order_id, u64::from(o.open));
                    if !o.hidden {
                        shown.insert(o.md_ref, (i as u16, book_side, o.price.0, o.shown));
                    }
                }
            }
        }
        for (id, s) in &self.orders {
            let open = resting.get(id).copied().unwrap_or(0);
            assert_eq!(
                s.open, open,
                "order {id:?}: audit says {} open, book says {open}",
                s.open
            );
            assert_eq!(
                s.entered,
                s.executed + s.canceled + s.open,
                "order {id:?} loses shares: {s:?}"
            );
        }
        for (id, m) in &self.matches {
            assert_eq!(m.2, 2, "match {id:?} has both sides");
        }
        assert_eq!(
            self.feed, shown,
            "the feed's book differs from the displayed book"
        );
    }
}

/// Runs the bytes through both matchers; panics with the command index on divergence.
/// Returns the number of commands run.
fn run_both(bytes: &[u8], stp: usize, full_checks: bool) -> usize {
    let config = stp_test_config(stp);
    let mut fast = Matcher::new(&config);
    let mut model = ReferenceMatcher::new(&config);
    let mut decoder = FlowDecoder::new(&config);
    let mut src = ByteSource::new(bytes);
    let mut fast_events: Vec<Event> = Vec::new();
    let mut model_events: Vec<Event> = Vec::new();
    let mut audit = Audit::default();
    let mut n = 0;
    let mut snapshots = 0usize;
    while let Some(cmd) = decoder.next(&mut src) {
        step(
            &mut fast,
            &mut model,
            &cmd,
            &mut fast_events,
            &mut model_events,
            n,
        );
        for e in &fast_events {
            audit.on(e);
        }
        if full_checks && n % 97 == 96 {
            // Snapshot and restore: from here on the model checks the restored matcher,
            // so a restore that lost any state (priority, references, counters) diverges.
            let state = fast.state();
            fast = Matcher::from_state(&config, &state)
                .unwrap_or_else(|e| panic!("restore after command {n} failed: {e}"));
            assert_eq!(fast.state(), state, "state changed by a restore at {n}");
            snapshots += 1;
        }
        if full_checks {
            let view = fast.view();
            assert_eq!(
                view,
                model.view(),
                "books differ after command {n}: {cmd:?}"
            );
            audit.check(&view);
            check_queries(&fast, &config, &view, n);
        }
        n += 1;
    }
    let view = fast.view();
    assert_eq!(view, model.view(), "books differ at the end");
    audit.check(&view);
    assert!(
        !full_checks || snapshots == n / 97,
        "every 97th command restores"
    );
    n
}

/// The book queries (best bid and offer, level at a price, top levels) agree with the
/// levels aggregated from the model's book.
fn check_queries(fast: &Matcher, config: &BookConfig, view: &BookView, n: usize) {
    for (i, spec) in config.instruments.iter().enumerate() {
        let instrument = fast.instrument(spec.symbol).expect("configured symbol");
        assert_eq!(instrument.0 as usize, i);
        let mut bbo = [None, None];
        for side in [BookSide::Bid, BookSide::Ask] {
            let mut levels: Vec<LevelView> = Vec::new();
            for o in &view.sides[i][side.index()] {
                match levels.last_mut() {
                    Some(l) if l.price == o.price => {
                        l.shown_qty += u64::from(o.shown);
                        l.open_qty += u64::from(o.open);
                    }
                    _ => levels.push(LevelView {
                        price: o.price,
                        shown_qty: u64::from(o.shown),
                        open_qty: u64::from(o.open),
                    }),
                }
            }
            let mut out = vec![LevelView::default(); levels.len() + 1];
            let written = fast.top_levels(instrument, side, &mut out);
            assert_eq!(&out[..written], &levels[..], "top levels after command {n}");
            let mut two = [LevelView::default(); 2];
            let written = fast.top_levels(instrument, side, &mut two);
            assert_eq!(&two[..written], &levels[..levels.len().min(2)]);
            for l in &levels {
                assert_eq!(fast.level_at(instrument, side, l.price), Some(*l));
            }
            let empty = Price(spec.min_price.0 + spec.tick.0 * 3);
            if !levels.iter().any(|l| l.price == empty) {
                assert_eq!(fast.level_at(instrument, side, empty), None);
            }
            assert_eq!(
                fast.level_at(instrument, side, Price(spec.max_price.0 + 1)),
                None
            );
            bbo[side.index()] = levels.first().copied();
        }
        assert_eq!(
            fast.best_bid_offer(instrument),
            bbo,
            "BBO after command {n}"
        );
    }
}

fn step(
    fast: &mut Matcher,
    model: &mut ReferenceMatcher,
    cmd: &Command,
    fast_events: &mut Vec<Event>,
    model_events: &mut Vec<Event>,
    n: usize,
) {
    fast_events.clear();
    model_events.clear();
    fast.apply(cmd, fast_events);
    model.apply(cmd, model_events);
    assert_eq!(
        fast_events, model_events,
        "events differ at command {n}: {cmd:?}"
    );
    if let Err(broken) = fast.check_invariants() {
        panic!("invariant broken after command {n} ({cmd:?}): {broken}");
    }
}

fn stp_mode() -> impl Strategy<Value = usize> {
    0..STP_SETUPS
}

/// Random byte strings decode to random command streams; proptest shrinks a failing
/// string to a short one, so a failure reads as a handful of commands.
#[test]
fn fast_book_matches_reference_model() {
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let total = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    // About 18 bytes per command since the large-pool setups: 400 cases of 2,000 to 10,000
    // bytes give 131,208 to 140,316 commands (four runs), far above the floor below (1,000
    // to 8,000 bytes gave about 100,000 and fell under it at random: 98,782 once in CI).
    let strategy = (
        proptest::collection::vec(any::<u8>(), 2000..10_000),
        stp_mode(),
    );
    let result = runner.run(&strategy, |(bytes, stp)| {
        total.fetch_add(run_both(&bytes, stp, true), Ordering::Relaxed);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let total = total.into_inner();
    eprintln!("model check: {total} commands agreed");
    assert!(
        total >= 100_000,
        "the default run must cover at least 100,000 commands, ran {total}"
    );
}

/// A tiny deterministic generator, so a failing seed reproduces exactly.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seeded_run(seed: u64, commands_min: usize) -> usize {
    let mut state = seed;
    let mut total = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while total < commands_min {
        for b in chunk.chunks_mut(8) {
            let word = splitmix(&mut state).to_le_bytes();
            b.copy_from_slice(&word[..b.len()]);
        }
        // A mixed draw: the generator's state alone steps by a constant, so its residue
        // would visit only a few of the setups.
        let stp = (splitmix(&mut state) % STP_SETUPS as u64) as usize;
        let outcome = std::panic::catch_unwind(|| run_both(&chunk, stp, false));
        match outcome {
            Ok(n) => total += n,
            Err(e) => {
                eprintln!(
                    "model check failed: seed {seed}, after {total} commands, STP setup {stp}"
                );
                std::panic::resume_unwind(e);
            }
        }
    }
    total
}

#[test]
fn seeded_streams_agree() {
    let n = seeded_run(0x1234_5678, 20_000);
    eprintln!("seeded model check: {n} commands agreed");
}

/// The long run: 10,000,000 commands. `IRONMATCH_SEED` picks the seed (printed either way).
#[test]
#[ignore = "long: cargo test --release --test model -- --ignored"]
fn ten_million_commands_agree() {
    let seed = std::env::var("IRONMATCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("seed {seed} (rerun with IRONMATCH_SEED={seed})");
    let n = seeded_run(seed, 10_000_000);
    eprintln!("{n} commands agreed");
}

/// The bytes `flow_exercises_every_rule` decodes under every setup.
fn rule_bytes() -> Vec<u8> {
    let mut state = 42u64;
    let mut bytes = vec![0u8; 400_000];
    for b in bytes.chunks_mut(8) {
        b.copy_from_slice(&splitmix(&mut state).to_le_bytes()[..b.len()]);
    }
    bytes
}

/// Whether a command may cancel orders gathered by owner (mass cancel, disconnect, an
/// operator's or the day's venue command); the timer only expires single orders.
fn gathers_owner_orders(body: &CommandBody) -> bool {
    match body {
        CommandBody::MassCancel { .. } | CommandBody::Disconnect => true,
        CommandBody::Venue(VenueCommand::Timer) => false,
        CommandBody::Venue(_) => true,
        _ => false,
    }
}

/// The large-pool setups on a long stream, against the model: short proptest cases keep
/// the book small, while on these bytes the book grows past 64 orders, so bulk cancels
/// gather users' orders from several 64-slot chunks (the test first checks, with the fast
/// book alone, that the stream gets there under each setup: mass cancels, disconnects or
/// venue commands taking two or more orders out of more than 64).
#[test]
fn large_pools_agree() {
    let bytes = rule_bytes();
    for setup in 10..STP_SETUPS {
        let config = stp_test_config(setup);
        let mut fast = Matcher::new(&config);
        let mut decoder = FlowDecoder::new(&config);
        let mut src = ByteSource::new(&bytes);
        let mut events = Vec::new();
        let (mut most, mut bulk) = (0, 0);
        while let Some(cmd) = decoder.next(&mut src) {
            let before = fast.resting_orders();
            events.clear();
            fast.apply(&cmd, &mut events);
            most = most.max(before);
            if gathers_owner_orders(&cmd.body) && before > 64 && before - fast.resting_orders() >= 2
            {
                bulk += 1;
            }
        }
        assert!(
            most > 64 && bulk > 0,
            "setup {setup}: at most {most} orders rested, {bulk} bulk cancels took 2 or more \
             out of a book of more than 64"
        );
        let n = run_both(&bytes, setup, true);
        eprintln!(
            "large pool, setup {setup}: {n} commands agreed (up to {most} orders resting; \
             {bulk} bulk cancels took two or more out of more than 64)"
        );
    }
}

/// Guards the generator: if the flow stopped producing some outcome, the model check
/// above would silently stop covering that rule.
#[test]
fn flow_exercises_every_rule() {
    use ironmatch::book::{CancelReason, RejectReason};
    let mut counts: HashMap<String, u64> = HashMap::new();
    let bytes = rule_bytes();
    let mut commands = 0;
    for stp in 0..STP_SETUPS {
        let config = stp_test_config(stp);
        let mut fast = Matcher::new(&config);
        let mut decoder = FlowDecoder::new(&config);
        let mut src = ByteSource::new(&bytes);
        let mut events = Vec::new();
        // Per instrument: the last trade price, to see trades a band would have stopped.
        let mut last: Vec<Price> = config.instruments.iter().map(|i| i.ref_price).collect();
        // Caller keys each owner has used, to see keys reused once their order left.
        let mut used: std::collections::HashSet<(u16, u64)> = Default::default();
        while let Some(cmd) = decoder.next(&mut src) {
            commands += 1;
            events.clear();
            let resting_before = fast.resting_orders();
            fast.apply(&cmd, &mut events);
            // A mass cancel, disconnect, operator cancel or close taking several orders
            // while more orders rest than one 64-slot chunk holds (the pool hands out low
            // slots first, so some of them sit beyond the first chunk). A proxy: which
            // slots the canceled orders held is not visible from outside.
            let gathered = events
                .iter()
                .filter(|e| {
                    matches!(
                        e.body,
                        EventBody::Canceled {
                            reason: CancelReason::UserRequested
                                | CancelReason::Disconnect
                                | CancelReason::Closed
                                | CancelReason::Supervisory
                                | CancelReason::Halted,
                            ..
                        }
                    )
                })
                .count();
            if gathers_owner_orders(&cmd.body) && resting_before > 64 && gathered >= 2 {
                *counts
                    .entry("Pool::BulkCancelOver64Resting".to_string())
                    .or_default() += 1;
            }
            for e in &events {
                if config.refs == RefRule::Keys {
                    for key in key_kinds(e, &mut used) {
                        *counts.entry(key.to_string()).or_default() += 1;
                    }
                }
                for key in protection_keys(&config, &cmd, e, &mut last) {
                    *counts.entry(key.to_string()).or_default() += 1;
                }
                let key = match e.body {
                    EventBody::Rejected { reason, .. } => format!("Rejected::{reason:?}"),
                    EventBody::Canceled { reason, .. } => format!("Canceled::{reason:?}"),
                    EventBody::AiqCanceled { liquidity, .. } => {
                        format!("AiqCanceled::{liquidity:?}")
                    }
                    EventBody::Executed { liquidity, .. } => format!("Executed::{liquidity:?}"),
                    EventBody::TradingAction { state, .. } => format!("TradingAction::{state:?}"),
                    EventBody::SystemEvent { event } => format!("SystemEvent::{event:?}"),
                    EventBody::MassCanceledSide { side, .. } => {
                        format!("MassCanceledSide::{side:?}")
                    }
                    EventBody::OperatorDone { outcome, .. } => format!("{outcome:?}")
                        .split([' ', '{'])
                        .next()
                        .map(|o| format!("OperatorDone::{o}"))
                        .unwrap(),
                    ref other => format!("{other:?}")
                        .split([' ', '{'])
                        .next()
                        .unwrap()
                        .to_string(),
                };
                *counts.entry(key).or_default() += 1;
            }
        }
    }
    let mut keys: Vec<_> = counts.iter().collect();
    keys.sort();
    eprintln!("{commands} commands: {keys:?}");
    let rejects = [
        RejectReason::UnknownOwner,
        RejectReason::DuplicateUserRef,
        RejectReason::UnknownInstrument,
        RejectReason::ZeroQty,
        RejectReason::QtyOffLot,
        RejectReason::QtyAboveMax,
        RejectReason::PriceOffTick,
        RejectReason::PriceOutOfRange,
        RejectReason::PriceOutsideBand,
        RejectReason::InvalidMinQty,
        RejectReason::InvalidMaxFloor,
        RejectReason::PostOnlyCannotRest,
        RejectReason::PostOnlyWouldTake,
        RejectReason::OrderPoolFull,
        RejectReason::LevelPoolFull,
        RejectReason::UnknownOrder,
        RejectReason::OrderNotLive,
        RejectReason::InvalidSide,
        RejectReason::FirmNotAuthorized,
        RejectReason::Throttled,
        RejectReason::Unsupported,
        RejectReason::Halted,
        RejectReason::Closed,
        RejectReason::InvalidExpireTime,
        RejectReason::InvalidDisplay,
        RejectReason::PeggingNotAllowed,
        RejectReason::InvalidCrossOrder,
        RejectReason::RetailNotAllowed,
        RejectReason::NotOffered,
    ];
    let cancels = [
        CancelReason::UserRequested,
        CancelReason::Ioc,
        CancelReason::CannotExecute,
        CancelReason::Disconnect,
        CancelReason::ReplaceFailed,
        CancelReason::Closed,
        CancelReason::Expired,
        CancelReason::Halted,
        CancelReason::Supervisory,
        CancelReason::PriceBand,
        CancelReason::CircuitBreaker,
    ];
    // Every reason: the metrics' table has one name for each (its index is an exhaustive
    // match), so a reason added there and not here fails.
    let mut named: Vec<usize> = rejects
        .iter()
        .map(|r| ironmatch::admin::metrics::reject_index(*r))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert_eq!(
        named.len(),
        ironmatch::admin::metrics::REJECT_REASONS.len(),
        "a reject reason is missing from this list"
    );
    let mut wanted: Vec<String> = rejects.iter().map(|r| format!("Rejected::{r:?}")).collect();
    wanted.extend(cancels.iter().map(|c| format!("Canceled::{c:?}")));
    for kind in [
        "Accepted",
        "AccountQueried",
        "Replaced",
        "Modified",
        "CancelRejected",
        "Restated",
        "MassCanceled",
        "MassCanceledSide::Buy",
        "MassCanceledSide::Sell",
        "MassCanceledSide::SellShort",
        "MassCanceledSide::SellShortExempt",
        "Executed::Added",
        "Executed::AddedHidden",
        "Executed::Removed",
        "AiqCanceled::Added",
        "AiqCanceled::AddedHidden",
        "AiqCanceled::Removed",
        "MdAdd",
        "MdExecute",
        "MdCancel",
        "MdDelete",
        "MdReplace",
        "MdTrade",
        "TradingAction::Trading",
        "TradingAction::Halted",
        "TradingAction::Paused",
        "TradingAction::QuotationOnly",
        "SystemEvent::StartOfMessages",
        "SystemEvent::StartOfSystemHours",
        "SystemEvent::StartOfMarketHours",
        "SystemEvent::EndOfMarketHours",
        "SystemEvent::EndOfSystemHours",
        "OperatorDone::Done",
        "OperatorDone::UnknownSymbol",
        "OperatorDone::UnknownUser",
        "Repriced",
        "Breaker::Paused",
        "Breaker::Resumed",
        "BandOff::TradeBeyondBand",
        "BandOff::MarketOrderSwept",
        "FatFingerOff::AcceptedBeyondRange",
        "Band::PassiveBeyondBandAccepted",
        "Keys::Wide",
        "Keys::Reused",
        "Keys::LiveRejected",
        "Pool::BulkCancelOver64Resting",
    ] {
        wanted.push(kind.to_string());
    }
    let missing: Vec<&String> = wanted.iter().filter(|k| !counts.contains_key(*k)).collect();
    assert!(missing.is_empty(), "the flow never produced {missing:?}");
}

/// Keys for the caller-key rule ([`RefRule::Keys`]): an order accepted with a key of 2^32
/// or more, one accepted with a key its owner used before (its order had left), and a
/// request rejected because its key was live.
fn key_kinds(e: &Event, used: &mut std::collections::HashSet<(u16, u64)>) -> Vec<&'static str> {
    use ironmatch::book::RejectReason;
    let mut keys = Vec::new();
    match e.body {
        EventBody::Accepted { owner, order } | EventBody::Replaced { owner, order, .. } => {
            let key = order.user_ref.0;
            if key > u64::from(u32::MAX) {
                keys.push("Keys::Wide");
            }
            if !used.insert((owner.0, key)) {
                keys.push("Keys::Reused");
            }
        }
        EventBody::Rejected {
            reason: RejectReason::DuplicateUserRef,
            ..
        } => keys.push("Keys::LiveRejected"),
        _ => {}
    }
    keys
}

/// Keys for the price protection rules, which event kinds alone do not tell apart: a
/// breaker pause (reason `LUDP`) and its resume by a deadline (not an operator's command),
/// trades on a band-less instrument further from the last trade than the others' bands
/// allow, a market order there trading, limit prices beyond the fat-finger range accepted
/// where it is off, and a passive order accepted beyond the band where it is on.
fn protection_keys(
    config: &BookConfig,
    cmd: &Command,
    e: &Event,
    last: &mut [Price],
) -> Vec<&'static str> {
    use ironmatch::book::{CommandBody, TradingState, VenueCommand};
    let mut keys = Vec::new();
    match e.body {
        EventBody::TradingAction { state, reason, .. } => {
            let operator = matches!(cmd.body, CommandBody::Venue(VenueCommand::Operator { .. }));
            if state == TradingState::Paused && reason == *b"LUDP" {
                keys.push("Breaker::Paused");
            }
            if state == TradingState::Trading && !operator {
                keys.push("Breaker::Resumed");
            }
        }
        EventBody::MdExecute {
            instrument, price, ..
        }
        | EventBody::MdTrade {
            instrument, price, ..
        } => {
            let i = usize::from(instrument.0);
            let spec = &config.instruments[i];
            // 3 ticks: the other instruments' band.
            if spec.band_bps == 0 && price.0.abs_diff(last[i].0) > 3 * spec.tick.0 {
                keys.push("BandOff::TradeBeyondBand");
            }
            if spec.band_bps == 0 && matches!(cmd.body, CommandBody::New(o) if o.price.is_none()) {
                keys.push("BandOff::MarketOrderSwept");
            }
            last[i] = price;
        }
        EventBody::Accepted { order, .. } => {
            let i = usize::from(order.instrument.0);
            let spec = &config.instruments[i];
            let (p, r) = (order.price.0, spec.ref_price.0);
            if spec.fat_finger_bps == 0 && order.price.0 != 0 && p.abs_diff(r) > r / 5 {
                keys.push("FatFingerOff::AcceptedBeyondRange");
            }
            if let Some((low, high)) = spec.band(last[i])
                && order.price.0 != 0
                && (order.price < low || order.price > high)
            {
                keys.push("Band::PassiveBeyondBandAccepted");
            }
        }
        _ => {}
    }
    keys
}
