//! One test per order rule, named after it, so a failure says which rule broke.
//! Every test also checks the book's structural invariants after each command.

use ironmatch::book::{
    BandRemainder, BookConfig, CancelReason, Command, CommandBody, DayEvent, Echo, Event,
    EventBody, InstrumentSpec, Liquidity, Matcher, NewOrder, OperatorAction, OperatorOutcome,
    OwnerSpec, RefRule, RejectReason, ReplaceOrder, StpMode, TimeInForce, TradingState,
    VenueCommand,
};
use ironmatch::types::*;

const XYZ: usize = 0;

/// A change to a valid order that makes one pre-trade check fail.
type Edit = Box<dyn Fn(&mut NewOrder)>;

/// Owners 0 and 1 are one firm (F1); 2 is F2; 3 is F3 without cancel-on-disconnect.
fn config(stp: StpMode, orders_max: u32, levels_max: u32) -> BookConfig {
    let instrument = |sym: &str, lot: u32| InstrumentSpec {
        symbol: Symbol::from_str_padded(sym).unwrap(),
        tick: Price(100),
        lot,
        min_price: Price(100),
        max_price: Price(2_000_000),
        max_qty: 10_000,
        ref_price: Price(100_000),
        band_bps: 1_000,
        band_remainder: BandRemainder::Cancel,
        fat_finger_bps: 5_000,
        breaker_bps: 0,
        breaker_window_secs: 0,
        breaker_pause_secs: 0,
    };
    let owner = |firm: &str, cod: bool| OwnerSpec {
        firm: Firm::from_str_padded(firm).unwrap(),
        cancel_on_disconnect: cod,
        stp: None,
    };
    BookConfig {
        instruments: vec![instrument("XYZ", 1), instrument("LOT", 100)],
        owners: vec![
            owner("F1", true),
            owner("F1", true),
            owner("F2", true),
            owner("F3", false),
        ],
        orders_max,
        levels_max,
        stp,
        scheduled: false,
        refs: RefRule::Ouch,
    }
}

struct Venue {
    cfg: BookConfig,
    m: Matcher,
    refs: [u64; 4],
    ts: u64,
}

fn px(dollars_cents: u64) -> Price {
    // px(1000) = $10.00
    Price(dollars_cents * 100)
}

impl Venue {
    fn new() -> Venue {
        Venue::with(config(StpMode::CancelResting, 1_000, 1_000))
    }

    fn with(cfg: BookConfig) -> Venue {
        Venue {
            m: Matcher::new(&cfg),
            cfg,
            refs: [0; 4],
            ts: 0,
        }
    }

    fn run(&mut self, owner: u16, body: CommandBody) -> Vec<Event> {
        self.ts += 1;
        let mut out = Vec::new();
        self.m.apply(
            &Command {
                ts: Timestamp(self.ts),
                owner: OwnerId(owner),
                body,
            },
            &mut out,
        );
        self.m.check_invariants().unwrap();
        out
    }

    fn next_ref(&mut self, owner: u16) -> UserRef {
        self.refs[usize::from(owner)] += 1;
        UserRef(self.refs[usize::from(owner)])
    }

    fn order(&self, owner: u16, side: Side, qty: u32, price: Price) -> NewOrder {
        NewOrder {
            user_ref: UserRef(0),
            side,
            qty: Qty(qty),
            symbol: self.cfg.instruments[XYZ].symbol,
            price: Some(price),
            tif: TimeInForce::Day,
            hidden: false,
            post_only: false,
            min_qty: Qty(0),
            max_floor: Qty(0),
            firm: self.cfg.owners[usize::from(owner)].firm,
            echo: Echo::default(),
        }
    }

    /// Enters `o` with the owner's next reference; returns (reference, events).
    fn enter(&mut self, owner: u16, mut o: NewOrder) -> (UserRef, Vec<Event>) {
        o.user_ref = self.next_ref(owner);
        (o.user_ref, self.run(owner, CommandBody::New(o)))
    }

    fn limit(&mut self, owner: u16, side: Side, qty: u32, price: Price) -> (UserRef, Vec<Event>) {
        let o = self.order(owner, side, qty, price);
        self.enter(owner, o)
    }

    fn cancel(&mut self, owner: u16, user_ref: UserRef, qty: u32) -> Vec<Event> {
        self.run(
            owner,
            CommandBody::Cancel {
                user_ref,
                qty: Qty(qty),
            },
        )
    }

    fn replace(
        &mut self,
        owner: u16,
        orig: UserRef,
        qty: u32,
        price: Price,
    ) -> (UserRef, Vec<Event>) {
        let user_ref = self.next_ref(owner);
        (user_ref, self.replace_as(owner, orig, user_ref, qty, price))
    }

    /// A Day replace of `orig` by `user_ref`, `qty` for the whole chain at `price`.
    fn replace_as(
        &mut self,
        owner: u16,
        orig: UserRef,
        user_ref: UserRef,
        qty: u32,
        price: Price,
    ) -> Vec<Event> {
        let r = ReplaceOrder {
            orig_user_ref: orig,
            user_ref,
            qty: Qty(qty),
            price,
            tif: TimeInForce::Day,
            hidden: false,
            post_only: false,
            min_qty: Qty(0),
            max_floor: Qty(0),
            echo: Echo::default(),
        };
        self.run(owner, CommandBody::Replace(r))
    }

    /// (owner, ref, open) of one side of XYZ, best first.
    fn side(&self, side: BookSide) -> Vec<(u16, u64, u32)> {
        self.m.view().sides[XYZ][side.index()]
            .iter()
            .map(|o| (o.owner.0, o.user_ref.0, o.open))
            .collect()
    }
}

/// (owner, ref, qty, price, liquidity) of every execution.
fn fills(events: &[Event]) -> Vec<(u16, u64, u32, Price, Liquidity)> {
    events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::Executed {
                owner,
                user_ref,
                qty,
                price,
                liquidity,
                ..
            } => Some((owner.0, user_ref.0, qty.0, price, liquidity)),
            _ => None,
        })
        .collect()
}

/// (owner, ref, qty, price) of the resting side's executions, in order.
fn resting_fills(events: &[Event]) -> Vec<(u16, u64, u32, Price)> {
    fills(events)
        .into_iter()
        .filter(|f| f.4 == Liquidity::Added)
        .map(|f| (f.0, f.1, f.2, f.3))
        .collect()
}

fn rejection(events: &[Event]) -> Option<RejectReason> {
    events.iter().find_map(|e| match e.body {
        EventBody::Rejected { reason, .. } => Some(reason),
        _ => None,
    })
}

fn canceled(events: &[Event]) -> Vec<(u64, u32, CancelReason)> {
    events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::Canceled {
                user_ref,
                qty,
                reason,
                ..
            } => Some((user_ref.0, qty.0, reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn better_price_trades_first() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1002));
    v.limit(3, Side::Sell, 100, px(1001));
    let (_, ev) = v.limit(0, Side::Buy, 100, px(1002));
    assert_eq!(fills(&ev)[0], (3, 1, 100, px(1001), Liquidity::Added));
}

/// A sweep that takes whole orders, then part of one: every fill in queue order, price
/// by price, with the right leaves, and the rest of the book as it was. A resting order
/// of the taker's own firm, met in the middle of a price, is canceled (self-trade
/// prevention, cancel resting) and the sweep goes on behind it.
#[test]
fn a_sweep_fills_whole_orders_in_queue_order_and_the_last_one_in_part() {
    let mut v = Venue::new();
    let (a, _) = v.limit(2, Side::Sell, 100, px(1000));
    let (b, _) = v.limit(3, Side::Sell, 200, px(1000));
    let (own, _) = v.limit(1, Side::Sell, 100, px(1000)); // firm F1, the taker's
    let (c, _) = v.limit(2, Side::Sell, 50, px(1000));
    let (d, _) = v.limit(3, Side::Sell, 100, px(1001));
    let (e, _) = v.limit(2, Side::Sell, 100, px(1001));
    let (taker, ev) = v.limit(0, Side::Buy, 400, px(1001));
    assert_eq!(
        resting_fills(&ev),
        vec![
            (2, a.0, 100, px(1000)),
            (3, b.0, 200, px(1000)),
            (2, c.0, 50, px(1000)),
            (3, d.0, 50, px(1001)),
        ]
    );
    assert_eq!(
        aiq(&ev),
        vec![(1, Liquidity::Added)],
        "the own order: {own:?}"
    );
    let leaves: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e.body {
            EventBody::Executed {
                owner,
                user_ref,
                leaves,
                ..
            } if (owner, user_ref) == (OwnerId(0), taker) => Some(leaves.0),
            _ => None,
        })
        .collect();
    assert_eq!(leaves, vec![300, 100, 50, 0]);
    assert_eq!(
        v.side(BookSide::Ask),
        vec![(3, d.0, 50), (2, e.0, 100)],
        "the partly filled order keeps its place"
    );
}

/// A sweep that empties whole prices, the last exactly as the incoming order runs out:
/// the prices leave the book, the next one is the best, and the order does not rest.
#[test]
fn a_sweep_that_takes_whole_prices_empties_them_and_ends_at_the_last_share() {
    let mut v = Venue::new();
    let (a, _) = v.limit(2, Side::Sell, 100, px(1000));
    let (b, _) = v.limit(3, Side::Sell, 100, px(1000));
    let (c, _) = v.limit(2, Side::Sell, 100, px(1001));
    let (d, _) = v.limit(3, Side::Sell, 100, px(1002));
    let (_, ev) = v.limit(0, Side::Buy, 300, px(1002));
    assert_eq!(
        resting_fills(&ev),
        vec![
            (2, a.0, 100, px(1000)),
            (3, b.0, 100, px(1000)),
            (2, c.0, 100, px(1001)),
        ]
    );
    assert!(canceled(&ev).is_empty());
    assert_eq!(v.side(BookSide::Ask), vec![(3, d.0, 100)]);
    assert!(v.side(BookSide::Bid).is_empty(), "nothing left to rest");
    let [_, ask] = v.m.best_bid_offer(InstrumentId(XYZ as u16));
    assert_eq!(ask.map(|l| l.price), Some(px(1002)));
}

#[test]
fn first_in_first_out_within_a_price() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1000));
    v.limit(3, Side::Sell, 100, px(1000));
    let (_, ev) = v.limit(0, Side::Buy, 150, px(1000));
    let f = fills(&ev);
    assert_eq!((f[0].0, f[0].2), (2, 100));
    assert_eq!((f[2].0, f[2].2), (3, 50));
}

#[test]
fn trades_execute_at_the_resting_price() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1000));
    let (_, ev) = v.limit(0, Side::Buy, 100, px(1005));
    assert!(fills(&ev).iter().all(|f| f.3 == px(1000)));
}

#[test]
fn cancel_reduce_keeps_priority() {
    let mut v = Venue::new();
    let (first, _) = v.limit(2, Side::Sell, 100, px(1000));
    v.limit(3, Side::Sell, 100, px(1000));
    let ev = v.cancel(2, first, 40);
    assert_eq!(
        canceled(&ev),
        vec![(first.0, 60, CancelReason::UserRequested)]
    );
    assert_eq!(v.side(BookSide::Ask), vec![(2, 1, 40), (3, 1, 100)]);
    let (_, ev) = v.limit(0, Side::Buy, 40, px(1000));
    assert_eq!(fills(&ev)[0].0, 2, "the reduced order is still first");
}

#[test]
fn cancel_to_zero_removes_the_order() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    let ev = v.cancel(2, r, 0);
    assert_eq!(canceled(&ev), vec![(r.0, 100, CancelReason::UserRequested)]);
    assert!(v.side(BookSide::Ask).is_empty());
}

#[test]
fn cancel_that_is_not_a_reduction_is_refused_and_changes_nothing() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    let ev = v.cancel(2, r, 100);
    assert!(matches!(
        ev[..],
        [Event {
            body: EventBody::CancelRejected { .. },
            ..
        }]
    ));
    assert_eq!(v.side(BookSide::Ask), vec![(2, 1, 100)]);
}

#[test]
fn replace_loses_priority_even_at_the_same_price_and_quantity() {
    let mut v = Venue::new();
    let (first, _) = v.limit(2, Side::Sell, 100, px(1000));
    v.limit(3, Side::Sell, 100, px(1000));
    let (new_ref, ev) = v.replace(2, first, 100, px(1000));
    assert!(matches!(ev[0].body, EventBody::Replaced { .. }));
    assert_eq!(
        v.side(BookSide::Ask),
        vec![(3, 1, 100), (2, new_ref.0, 100)]
    );
}

#[test]
fn replace_quantity_is_for_the_whole_chain() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    v.limit(0, Side::Buy, 30, px(1000));
    // 30 executed; a replace to 100 leaves 70 open.
    let (_, ev) = v.replace(2, r, 100, px(1001));
    match ev[0].body {
        EventBody::Replaced { order, .. } => assert_eq!(order.qty, Qty(70)),
        ref other => panic!("expected Replaced, got {other:?}"),
    }
    assert_eq!(v.side(BookSide::Ask)[0].2, 70);
}

#[test]
fn invalid_replace_cancels_the_original() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    let (new_ref, ev) = v.replace(2, r, 100, Price(100_050));
    assert_eq!(rejection(&ev), Some(RejectReason::PriceOffTick));
    assert_eq!(canceled(&ev), vec![(r.0, 100, CancelReason::ReplaceFailed)]);
    assert!(v.side(BookSide::Ask).is_empty());
    // The failed replace did not consume its reference: it can be used again.
    let mut o = v.order(2, Side::Sell, 100, px(1000));
    o.user_ref = new_ref;
    let ev = v.run(2, CommandBody::New(o));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
}

/// A Replace the gateway refused (a value OUCH allows but ironmatch does not offer, say a
/// display it has not) is an invalid replace as OUCH has it: the original, live, is
/// canceled after the rejection, as when the matcher finds the replace invalid. It was
/// only rejected, the original left trading at its old price. A refused replace of an
/// order that is not live, or with a used reference, changes nothing.
#[test]
fn a_replace_the_gateway_refused_cancels_the_original() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    let (kept, _) = v.limit(2, Side::Sell, 100, px(1001));
    let refused = |orig: UserRef, user_ref: UserRef| CommandBody::InvalidReplace {
        orig_user_ref: orig,
        user_ref,
        reason: RejectReason::NotOffered,
        clordid: *b"REFUSED       ",
    };
    // A used reference: rejected, nothing changes.
    let ev = v.run(2, refused(kept, r));
    assert_eq!(rejection(&ev), Some(RejectReason::DuplicateUserRef));
    assert!(canceled(&ev).is_empty());
    // An order that is not there: rejected, nothing changes.
    let fresh = v.next_ref(2);
    let ev = v.run(2, refused(UserRef(999), fresh));
    assert_eq!(rejection(&ev), Some(RejectReason::UnknownOrder));
    assert_eq!(v.side(BookSide::Ask).len(), 2);
    // A live order: rejected with the gateway's reason, then canceled.
    let ev = v.run(2, refused(r, fresh));
    assert_eq!(rejection(&ev), Some(RejectReason::NotOffered));
    assert_eq!(canceled(&ev), vec![(r.0, 100, CancelReason::ReplaceFailed)]);
    assert_eq!(v.side(BookSide::Ask), vec![(2, 2, 100)]);
    // The refused replace consumed no reference.
    let mut o = v.order(2, Side::Sell, 100, px(1000));
    o.user_ref = fresh;
    let ev = v.run(2, CommandBody::New(o));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
}

#[test]
fn replace_with_a_used_reference_is_rejected_without_effect() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    let replace = ReplaceOrder {
        orig_user_ref: r,
        user_ref: r,
        qty: Qty(50),
        price: px(1001),
        tif: TimeInForce::Day,
        hidden: false,
        post_only: false,
        min_qty: Qty(0),
        max_floor: Qty(0),
        echo: Echo::default(),
    };
    let ev = v.run(2, CommandBody::Replace(replace));
    assert_eq!(rejection(&ev), Some(RejectReason::DuplicateUserRef));
    assert_eq!(v.side(BookSide::Ask), vec![(2, 1, 100)]);
}

#[test]
fn modify_swaps_sell_variants_and_reduces_keeping_priority() {
    let mut v = Venue::new();
    let (first, _) = v.limit(2, Side::Sell, 100, px(1000));
    v.limit(3, Side::Sell, 100, px(1000));
    let ev = v.run(
        2,
        CommandBody::Modify {
            user_ref: first,
            side: Side::SellShort,
            qty: Qty(60),
        },
    );
    assert!(matches!(
        ev[0].body,
        EventBody::Modified {
            side: Side::SellShort,
            qty: Qty(60),
            ..
        }
    ));
    assert_eq!(v.side(BookSide::Ask), vec![(2, 1, 60), (3, 1, 100)]);
    let ev = v.run(
        2,
        CommandBody::Modify {
            user_ref: first,
            side: Side::Buy,
            qty: Qty(60),
        },
    );
    assert_eq!(rejection(&ev), Some(RejectReason::InvalidSide));
}

#[test]
fn market_order_trades_up_to_the_band_then_cancels_the_rest() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1000));
    v.limit(2, Side::Sell, 100, px(1100)); // the band edge: 10% above the reference
    v.limit(2, Side::Sell, 100, px(1000)); // same level, later
    let mut o = v.order(0, Side::Buy, 500, px(0));
    o.price = None;
    let (r, ev) = v.enter(0, o);
    let taken: u32 = fills(&ev).iter().filter(|f| f.0 == 0).map(|f| f.2).sum();
    assert_eq!(taken, 300);
    assert_eq!(canceled(&ev), vec![(r.0, 200, CancelReason::Ioc)]);
}

#[test]
fn ioc_remainder_is_canceled_and_never_rests() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1000));
    let mut o = v.order(0, Side::Buy, 150, px(1000));
    o.tif = TimeInForce::Ioc;
    let (r, ev) = v.enter(0, o);
    assert_eq!(canceled(&ev), vec![(r.0, 50, CancelReason::Ioc)]);
    assert!(v.side(BookSide::Bid).is_empty());
}

#[test]
fn fill_or_kill_is_ioc_with_min_qty_equal_to_qty() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1000));
    let mut fok = v.order(0, Side::Buy, 150, px(1000));
    fok.tif = TimeInForce::Ioc;
    fok.min_qty = Qty(150);
    let (r, ev) = v.enter(0, fok);
    assert!(fills(&ev).is_empty(), "not enough to fill: nothing trades");
    assert_eq!(canceled(&ev), vec![(r.0, 150, CancelReason::Ioc)]);
    v.limit(3, Side::Sell, 50, px(1000));
    let (_, ev) = v.enter(0, fok);
    assert_eq!(
        fills(&ev)
            .iter()
            .filter(|f| f.0 == 0)
            .map(|f| f.2)
            .sum::<u32>(),
        150
    );
}

#[test]
fn min_qty_day_order_rests_if_it_cannot_cross_and_is_canceled_if_it_would() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1001));
    let mut o = v.order(0, Side::Buy, 200, px(1000));
    o.min_qty = Qty(150);
    let (_, ev) = v.enter(0, o);
    assert!(canceled(&ev).is_empty());
    assert_eq!(v.side(BookSide::Bid).len(), 1, "does not cross: rests");
    let mut o = v.order(0, Side::Buy, 200, px(1001));
    o.min_qty = Qty(150);
    let (r, ev) = v.enter(0, o);
    assert_eq!(canceled(&ev), vec![(r.0, 200, CancelReason::CannotExecute)]);
}

#[test]
fn post_only_is_rejected_if_it_would_take_and_rests_otherwise() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1001));
    let mut o = v.order(0, Side::Buy, 100, px(1001));
    o.post_only = true;
    let (_, ev) = v.enter(0, o);
    assert_eq!(rejection(&ev), Some(RejectReason::PostOnlyWouldTake));
    o.price = Some(px(1000));
    let (_, ev) = v.enter(0, o);
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    assert_eq!(v.side(BookSide::Bid).len(), 1);
}

#[test]
fn hidden_orders_rank_behind_displayed_and_never_reach_the_feed() {
    let mut v = Venue::new();
    let mut hidden = v.order(2, Side::Sell, 100, px(1000));
    hidden.hidden = true;
    let (_, ev) = v.enter(2, hidden);
    assert!(!ev.iter().any(|e| matches!(e.body, EventBody::MdAdd { .. })));
    v.limit(3, Side::Sell, 100, px(1000));
    let (_, ev) = v.limit(0, Side::Buy, 200, px(1000));
    let f = fills(&ev);
    assert_eq!(
        (f[0].0, f[0].4),
        (3, Liquidity::Added),
        "displayed first although later"
    );
    assert_eq!((f[2].0, f[2].4), (2, Liquidity::AddedHidden));
    assert!(
        ev.iter()
            .any(|e| matches!(e.body, EventBody::MdTrade { .. }))
    );
}

#[test]
fn reserve_order_shows_its_floor_and_refills_at_the_back() {
    let mut v = Venue::new();
    let mut reserve = v.order(2, Side::Sell, 300, px(1000));
    reserve.max_floor = Qty(100);
    let (_, ev) = v.enter(2, reserve);
    assert!(
        ev.iter()
            .any(|e| matches!(e.body, EventBody::MdAdd { qty: Qty(100), .. }))
    );
    v.limit(3, Side::Sell, 100, px(1000));
    // Takes the displayed 100; the refill goes behind owner 3's order.
    let (_, ev) = v.limit(0, Side::Buy, 100, px(1000));
    assert!(ev.iter().any(|e| matches!(
        e.body,
        EventBody::Restated {
            display_qty: Qty(100),
            ..
        }
    )));
    assert_eq!(v.side(BookSide::Ask), vec![(3, 1, 100), (2, 1, 200)]);
}

fn stp_case(stp: StpMode) -> (Vec<Event>, Vec<(u16, u64, u32)>) {
    let mut v = Venue::with(config(stp, 100, 100));
    v.limit(1, Side::Sell, 100, px(1000)); // firm F1
    v.limit(2, Side::Sell, 100, px(1000)); // firm F2
    let (_, ev) = v.limit(0, Side::Buy, 100, px(1000)); // firm F1 again
    (ev, v.side(BookSide::Ask))
}

fn aiq(events: &[Event]) -> Vec<(u16, Liquidity)> {
    events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::AiqCanceled {
                owner, liquidity, ..
            } => Some((owner.0, liquidity)),
            _ => None,
        })
        .collect()
}

#[test]
fn self_trade_prevention_cancel_resting_keeps_matching() {
    let (ev, asks) = stp_case(StpMode::CancelResting);
    assert_eq!(aiq(&ev), vec![(1, Liquidity::Added)]);
    assert_eq!(fills(&ev)[0].0, 2, "then trades with the other firm");
    assert!(asks.is_empty());
}

#[test]
fn self_trade_prevention_cancel_incoming_stops() {
    let (ev, asks) = stp_case(StpMode::CancelIncoming);
    assert_eq!(aiq(&ev), vec![(0, Liquidity::Removed)]);
    assert!(fills(&ev).is_empty());
    assert_eq!(asks.len(), 2);
}

#[test]
fn self_trade_prevention_none_lets_one_firm_trade() {
    let (ev, asks) = stp_case(StpMode::None);
    assert!(aiq(&ev).is_empty());
    assert_eq!(
        fills(&ev)[0].0,
        1,
        "trades with its own firm's order first, in time order"
    );
    assert_eq!(asks, vec![(2, 1, 100)]);
}

#[test]
fn self_trade_prevention_follows_the_incoming_owners_own_mode() {
    // The venue prevents; owner 0 (incoming) opted out: it trades with its own firm.
    let mut cfg = config(StpMode::CancelBoth, 100, 100);
    cfg.owners[0].stp = Some(StpMode::None);
    let mut v = Venue::with(cfg.clone());
    v.limit(1, Side::Sell, 100, px(1000));
    let (_, ev) = v.limit(0, Side::Buy, 100, px(1000));
    assert!(aiq(&ev).is_empty());
    assert_eq!(fills(&ev).len(), 2);
    // Owner 1 (incoming) still has the venue's mode against owner 0's resting order.
    let mut v = Venue::with(cfg);
    v.limit(0, Side::Sell, 100, px(1000));
    let (_, ev) = v.limit(1, Side::Buy, 100, px(1000));
    assert_eq!(
        aiq(&ev),
        vec![(0, Liquidity::Added), (1, Liquidity::Removed)]
    );
}

#[test]
fn self_trade_prevention_cancel_both() {
    let (ev, asks) = stp_case(StpMode::CancelBoth);
    assert_eq!(
        aiq(&ev),
        vec![(1, Liquidity::Added), (0, Liquidity::Removed)]
    );
    assert_eq!(asks, vec![(2, 1, 100)]);
}

#[test]
fn each_pre_trade_check_has_its_own_reason() {
    let mut v = Venue::new();
    let cases: Vec<(Edit, RejectReason)> = vec![
        (
            Box::new(|o| o.symbol = Symbol::from_str_padded("NOPE").unwrap()),
            RejectReason::UnknownInstrument,
        ),
        (Box::new(|o| o.qty = Qty(0)), RejectReason::ZeroQty),
        (Box::new(|o| o.qty = Qty(10_001)), RejectReason::QtyAboveMax),
        (
            Box::new(|o| o.price = Some(Price(100_050))),
            RejectReason::PriceOffTick,
        ),
        (
            Box::new(|o| o.price = Some(Price(2_000_100))),
            RejectReason::PriceOutOfRange,
        ),
        (
            Box::new(|o| o.price = Some(px(1501))),
            RejectReason::PriceOutsideBand,
        ),
        (
            Box::new(|o| o.min_qty = Qty(101)),
            RejectReason::InvalidMinQty,
        ),
        (
            Box::new(|o| {
                o.symbol = Symbol::from_str_padded("LOT").unwrap();
                o.qty = Qty(300);
                o.min_qty = Qty(150)
            }),
            RejectReason::InvalidMinQty,
        ),
        (
            Box::new(|o| {
                o.hidden = true;
                o.max_floor = Qty(10)
            }),
            RejectReason::InvalidMaxFloor,
        ),
        (
            Box::new(|o| {
                o.post_only = true;
                o.tif = TimeInForce::Ioc
            }),
            RejectReason::PostOnlyCannotRest,
        ),
        (
            Box::new(|o| {
                o.symbol = Symbol::from_str_padded("LOT").unwrap();
                o.qty = Qty(150)
            }),
            RejectReason::QtyOffLot,
        ),
    ];
    for (edit, reason) in cases {
        let mut o = v.order(0, Side::Buy, 100, px(1000));
        edit(&mut o);
        let (_, ev) = v.enter(0, o);
        assert_eq!(rejection(&ev), Some(reason));
        assert_eq!(ev.len(), 1, "a reject has no other effect");
    }
    assert!(v.side(BookSide::Bid).is_empty());
}

#[test]
fn unknown_and_no_longer_live_orders_are_told_apart() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    v.cancel(2, r, 0);
    assert_eq!(
        rejection(&v.cancel(2, r, 0)),
        Some(RejectReason::OrderNotLive)
    );
    assert_eq!(
        rejection(&v.cancel(2, UserRef(99), 0)),
        Some(RejectReason::UnknownOrder)
    );
}

#[test]
fn a_session_cannot_touch_another_sessions_order() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    // Owner 3 names owner 2's reference: to owner 3 that order does not exist.
    assert_eq!(
        rejection(&v.cancel(3, r, 0)),
        Some(RejectReason::UnknownOrder)
    );
    let (_, ev) = v.replace(3, r, 50, px(1001));
    assert_eq!(rejection(&ev), Some(RejectReason::UnknownOrder));
    assert_eq!(v.side(BookSide::Ask), vec![(2, 1, 100)]);
}

#[test]
fn a_repeated_or_lower_reference_is_rejected_with_no_effect() {
    let mut v = Venue::new();
    let (r, _) = v.limit(2, Side::Sell, 100, px(1000));
    let mut again = v.order(2, Side::Sell, 100, px(1000));
    again.user_ref = r;
    let ev = v.run(2, CommandBody::New(again));
    assert_eq!(rejection(&ev), Some(RejectReason::DuplicateUserRef));
    assert_eq!(ev.len(), 1);
    assert_eq!(v.side(BookSide::Ask).len(), 1);
}

#[test]
fn mass_cancel_by_instrument_and_side() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1001));
    v.limit(2, Side::Buy, 100, px(999));
    let mut other = v.order(2, Side::Buy, 100, px(999));
    other.symbol = Symbol::from_str_padded("LOT").unwrap();
    v.enter(2, other);
    let user_ref = v.next_ref(2);
    let firm = Firm::from_str_padded("F2").unwrap();
    let symbol = Symbol::from_str_padded("XYZ").unwrap();
    let ev = v.run(
        2,
        CommandBody::MassCancel {
            user_ref,
            firm,
            symbol,
            side: Some(Side::Buy),
        },
    );
    assert!(matches!(
        ev.last().unwrap().body,
        EventBody::MassCanceledSide {
            side: Side::Buy,
            count: 1,
            ..
        }
    ));
    assert_eq!(v.side(BookSide::Ask).len(), 1);
    assert_eq!(v.m.resting_orders(), 2);
    // Sell short exempt names the ask side, and the event keeps the side as it was named.
    let user_ref = v.next_ref(2);
    let ev = v.run(
        2,
        CommandBody::MassCancel {
            user_ref,
            firm,
            symbol,
            side: Some(Side::SellShortExempt),
        },
    );
    assert!(matches!(
        ev.last().unwrap().body,
        EventBody::MassCanceledSide {
            side: Side::SellShortExempt,
            count: 1,
            ..
        }
    ));
    assert!(v.side(BookSide::Ask).is_empty());
    assert_eq!(v.m.resting_orders(), 1);
    let user_ref = v.next_ref(2);
    let wrong = Firm::from_str_padded("F1").unwrap();
    let ev = v.run(
        2,
        CommandBody::MassCancel {
            user_ref,
            firm: wrong,
            symbol,
            side: None,
        },
    );
    assert_eq!(rejection(&ev), Some(RejectReason::FirmNotAuthorized));
}

/// Min quantity (FOK) against a reserve order with an order of the taker's own firm behind
/// it, under self-trade prevention that cancels the taker: the reserve's refill goes to the
/// back of the displayed queue, behind the own-firm order, so only its displayed part is
/// executable before the sweep would stop. Counting its whole reserve let the FOK trade in
/// part and then be canceled by self-trade prevention.
#[test]
fn min_quantity_counts_a_reserve_only_up_to_an_own_firm_order_behind_it() {
    for stp in [StpMode::CancelIncoming, StpMode::CancelBoth] {
        for own_hidden in [false, true] {
            let mut v = Venue::with(config(stp, 1_000, 1_000));
            let mut reserve = v.order(2, Side::Sell, 1_000, px(1000));
            reserve.max_floor = Qty(100);
            v.enter(2, reserve);
            let mut own = v.order(0, Side::Sell, 100, px(1000));
            own.hidden = own_hidden;
            v.enter(0, own);
            let mut fok = v.order(1, Side::Buy, 500, px(1000));
            fok.tif = TimeInForce::Ioc;
            fok.min_qty = Qty(500);
            let (_, ev) = v.enter(1, fok);
            let filled: u32 = fills(&ev).iter().filter(|f| f.0 == 1).map(|f| f.2).sum();
            if own_hidden {
                // Hidden, it ranks behind every displayed order: the reserve refills ahead
                // of it and fills the whole 500.
                assert_eq!(filled, 500, "{stp:?}, hidden own order: {ev:?}");
            } else {
                assert_eq!(filled, 0, "{stp:?}: all or nothing, here nothing: {ev:?}");
                assert_eq!(
                    v.side(BookSide::Ask),
                    vec![(2, 1, 1_000), (0, 1, 100)],
                    "{stp:?}: the book as it was"
                );
            }
        }
    }
}

#[test]
fn cancel_on_disconnect_follows_the_users_setting() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1001));
    v.limit(3, Side::Sell, 100, px(1002));
    let ev = v.run(2, CommandBody::Disconnect);
    assert_eq!(canceled(&ev), vec![(1, 100, CancelReason::Disconnect)]);
    assert!(
        v.run(3, CommandBody::Disconnect).is_empty(),
        "owner 3 keeps its orders"
    );
    assert_eq!(v.side(BookSide::Ask), vec![(3, 1, 100)]);
}

#[test]
fn an_owners_orders_are_canceled_oldest_first_wherever_they_rest() {
    // Orders of two owners spread over many slots, some canceled and their slots reused
    // by later orders: a disconnect cancels the owner's orders in order of entry, not in
    // the order of their slots.
    let mut v = Venue::new();
    let mut live = Vec::new();
    for i in 0..300u64 {
        let (r, _) = v.limit(2, Side::Sell, 100, px(1001 + i % 50));
        live.push(r);
        v.limit(3, Side::Buy, 100, px(900 - i % 50));
    }
    for r in live.iter().step_by(3) {
        v.cancel(2, *r, 0);
    }
    live = live
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, r)| *r)
        .collect();
    for i in 0..60u64 {
        v.limit(3, Side::Buy, 100, px(899 - i % 40));
        let (r, _) = v.limit(2, Side::Sell, 100, px(1002 + i % 40));
        live.push(r);
    }
    // A snapshot lists each owner's orders in the same order, and restores to itself.
    let state = v.m.state();
    let owner2: Vec<UserRef> = state
        .orders
        .iter()
        .filter(|o| o.owner.0 == 2)
        .map(|o| o.user_ref)
        .collect();
    assert_eq!(owner2, live);
    let restored = Matcher::from_state(&v.cfg, &state).unwrap();
    assert_eq!(restored.state(), state);
    // A state whose owner's orders are out of that order is refused.
    let mut swapped = state.clone();
    let at = swapped.orders.iter().position(|o| o.owner.0 == 2).unwrap();
    swapped.orders.swap(at, at + 1);
    assert!(Matcher::from_state(&v.cfg, &swapped).is_err());
    let ev = v.run(2, CommandBody::Disconnect);
    let want: Vec<(u64, u32, CancelReason)> = live
        .iter()
        .map(|r| (r.0, 100, CancelReason::Disconnect))
        .collect();
    assert_eq!(canceled(&ev), want);
    assert_eq!(v.m.resting_orders(), 360);
}

#[test]
fn full_pools_reject_instead_of_growing() {
    let mut v = Venue::with(config(StpMode::CancelResting, 2, 10));
    v.limit(2, Side::Sell, 100, px(1001));
    v.limit(2, Side::Sell, 100, px(1002));
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1003));
    assert_eq!(rejection(&ev), Some(RejectReason::OrderPoolFull));
    // An IOC never rests, so it needs no slot.
    let mut ioc = v.order(0, Side::Buy, 100, px(1001));
    ioc.tif = TimeInForce::Ioc;
    let (_, ev) = v.enter(0, ioc);
    assert_eq!(fills(&ev).len(), 2);

    let mut v = Venue::with(config(StpMode::CancelResting, 10, 1));
    v.limit(2, Side::Sell, 100, px(1001));
    v.limit(3, Side::Sell, 100, px(1001));
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1002));
    assert_eq!(rejection(&ev), Some(RejectReason::LevelPoolFull));
}

/// A level that empties gives its place in the level pool back: the pool is full only
/// when every level in it holds orders, whatever prices were used before, and a level
/// that comes back at a price is found again (by queries and by the next trade).
#[test]
fn emptied_levels_give_their_place_back_to_a_full_pool() {
    let mut v = Venue::with(config(StpMode::CancelResting, 10, 3));
    let sym = InstrumentId(XYZ as u16);
    let ask_at = |v: &Venue, p| v.m.level_at(sym, BookSide::Ask, px(p)).map(|l| l.open_qty);
    // Two levels used and emptied: the pool has all three places again.
    let (a, _) = v.limit(2, Side::Sell, 100, px(1001));
    let (b, _) = v.limit(2, Side::Sell, 100, px(1002));
    v.cancel(2, a, 0);
    v.cancel(2, b, 0);
    assert_eq!(ask_at(&v, 1001), None);
    assert_eq!(v.m.best_bid_offer(sym)[1], None);
    // Back at an emptied price: on the book again, and the best offer.
    let (_, ev) = v.limit(2, Side::Sell, 200, px(1001));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    assert_eq!(ask_at(&v, 1001), Some(200));
    assert_eq!(v.m.best_bid_offer(sym)[1].map(|l| l.price), Some(px(1001)));
    // Two new prices: the pool is full, and the emptied $10.02 is nowhere.
    v.limit(2, Side::Sell, 100, px(1003));
    v.limit(2, Side::Sell, 100, px(1004));
    assert_eq!(ask_at(&v, 1002), None);
    // Three levels holding orders: a fourth price is refused.
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1005));
    assert_eq!(rejection(&ev), Some(RejectReason::LevelPoolFull));
    // A level emptied in a full pool gives its place back at once (a fill empties it
    // here: an IOC, which never rests, so needs no level of its own).
    let mut ioc = v.order(0, Side::Buy, 200, px(1001));
    ioc.tif = TimeInForce::Ioc;
    let (_, ev) = v.enter(0, ioc);
    assert_eq!(
        fills(&ev).len(),
        2,
        "one match, both sides' executions: {ev:?}"
    );
    assert_eq!(ask_at(&v, 1001), None);
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1005));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1006));
    assert_eq!(rejection(&ev), Some(RejectReason::LevelPoolFull));
    assert_eq!(v.m.best_bid_offer(sym)[1].map(|l| l.price), Some(px(1003)));
}

#[test]
fn the_band_follows_the_last_trade() {
    let mut v = Venue::new();
    // Reference $10.00, band 10%: an offer at $11.05 rests, but cannot trade.
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1105));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    let (r, ev) = v.limit(0, Side::Buy, 100, px(1105));
    assert!(fills(&ev).is_empty());
    assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::PriceBand)]);
    v.trade_at(px(1050));
    // Now the reference is $10.50: $11.05 is inside the band.
    let (_, ev) = v.limit(0, Side::Buy, 100, px(1105));
    assert_eq!(
        fills(&ev)[1],
        (0, r.0 + 1, 100, px(1105), Liquidity::Removed)
    );
}

#[test]
fn same_commands_give_the_same_events() {
    let run = || {
        let mut v = Venue::new();
        let mut all = Vec::new();
        for i in 0..50u64 {
            let side = if i % 3 == 0 { Side::Buy } else { Side::Sell };
            let (_, ev) = v.limit(
                (i % 4) as u16,
                side,
                100 + (i as u32 % 7) * 10,
                px(998 + i % 5),
            );
            all.extend(ev);
        }
        all
    };
    assert_eq!(run(), run());
}

#[test]
fn memory_is_sized_by_configuration() {
    let small = Matcher::new(&config(StpMode::CancelResting, 1_000, 100)).footprint_bytes();
    let large = Matcher::new(&config(StpMode::CancelResting, 100_000, 100)).footprint_bytes();
    // Growing the order pool 100x grows the per-order part ~100x, and nothing else.
    let growth = large.1 as f64 / small.1 as f64;
    assert!(
        (80.0..=140.0).contains(&growth),
        "per-order memory grew {growth}x"
    );
    assert_eq!(large.0 - large.1, small.0 - small.1);
}

/// What a configuration needs at least is known before allocating it (a start refuses a
/// configuration the machine cannot hold by this figure): never above what `Matcher::new`
/// allocates, and with large pools (where it matters) most of it.
#[test]
fn the_memory_floor_is_a_close_lower_bound() {
    for (orders, levels) in [(1_000, 100), (100_000, 100), (1_000_000, 65_536)] {
        let cfg = config(StpMode::CancelResting, orders, levels);
        let floor = Matcher::memory_floor(&cfg);
        let (total, _) = Matcher::new(&cfg).footprint_bytes();
        assert!(
            floor <= total as u64 && (orders < 1_000_000 || floor * 4 >= total as u64 * 3),
            "{orders} orders, {levels} levels: floor {floor}, allocated {total}"
        );
    }
}

// ---- The trading day, halts and the operator ----

impl Venue {
    fn venue(&mut self, command: VenueCommand) -> Vec<Event> {
        self.run(0, CommandBody::Venue(command))
    }

    fn operator(&mut self, action: OperatorAction) -> Vec<Event> {
        self.venue(VenueCommand::Operator { request: 7, action })
    }

    fn set_state(&mut self, state: TradingState, cancel_resting: bool) -> Vec<Event> {
        self.operator(OperatorAction::SetState {
            symbol: self.cfg.instruments[XYZ].symbol,
            state,
            reason: *b"T1  ",
            cancel_resting,
        })
    }

    fn day(&mut self, event: DayEvent) -> Vec<Event> {
        self.venue(VenueCommand::SystemEvent(event))
    }

    fn with_tif(
        &mut self,
        owner: u16,
        side: Side,
        price: Price,
        tif: TimeInForce,
    ) -> (UserRef, Vec<Event>) {
        let mut o = self.order(owner, side, 100, price);
        o.tif = tif;
        self.enter(owner, o)
    }
}

fn scheduled() -> Venue {
    let mut cfg = config(StpMode::CancelResting, 1_000, 1_000);
    cfg.scheduled = true;
    Venue::with(cfg)
}

fn operator_outcome(events: &[Event]) -> Option<OperatorOutcome> {
    events.iter().find_map(|e| match e.body {
        EventBody::OperatorDone {
            request: 7,
            outcome,
        } => Some(outcome),
        _ => None,
    })
}

fn trading_actions(events: &[Event]) -> Vec<(u16, TradingState)> {
    events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::TradingAction {
                instrument, state, ..
            } => Some((instrument.0, state)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_halted_instrument_rejects_orders_and_replaces_but_takes_cancels() {
    let mut v = Venue::new();
    let (resting, _) = v.limit(2, Side::Sell, 100, px(1000));
    let events = v.set_state(TradingState::Halted, false);
    assert_eq!(trading_actions(&events), [(0, TradingState::Halted)]);
    assert_eq!(
        operator_outcome(&events),
        Some(OperatorOutcome::Done { canceled: 0 })
    );
    // A crossing buy: rejected as halted, nothing trades, the resting order stays.
    let (_, events) = v.limit(3, Side::Buy, 100, px(1000));
    assert_eq!(rejection(&events), Some(RejectReason::Halted));
    assert!(fills(&events).is_empty());
    // A replace is rejected and its original stays as it was (not canceled).
    let (_, events) = v.replace(2, resting, 100, px(1001));
    assert_eq!(rejection(&events), Some(RejectReason::Halted));
    assert!(canceled(&events).is_empty());
    assert_eq!(v.side(BookSide::Ask), [(2, resting.0, 100)]);
    // So is a replace the gateway refused: halted first, whatever else is wrong with it.
    let user_ref = v.next_ref(2);
    let events = v.run(
        2,
        CommandBody::InvalidReplace {
            orig_user_ref: resting,
            user_ref,
            reason: RejectReason::NotOffered,
            clordid: *b"REFUSED       ",
        },
    );
    assert_eq!(rejection(&events), Some(RejectReason::Halted));
    assert!(canceled(&events).is_empty());
    assert_eq!(v.side(BookSide::Ask), [(2, resting.0, 100)]);
    // Reductions and cancels are accepted.
    assert_eq!(
        canceled(&v.cancel(2, resting, 40)),
        [(resting.0, 60, CancelReason::UserRequested)]
    );
    // Resume: the order trades again.
    assert_eq!(
        trading_actions(&v.set_state(TradingState::Trading, false)),
        [(0, TradingState::Trading)]
    );
    let (_, events) = v.limit(3, Side::Buy, 40, px(1000));
    assert_eq!(fills(&events).len(), 2);
}

#[test]
fn a_halt_with_cancel_cancels_the_instruments_orders_with_reason_halted() {
    let mut v = Venue::new();
    let (a, _) = v.limit(2, Side::Sell, 100, px(1000));
    let (b, _) = v.limit(0, Side::Buy, 100, px(990));
    let mut other = v.order(0, Side::Buy, 100, px(990));
    other.symbol = v.cfg.instruments[1].symbol;
    let (_, _) = v.enter(0, other);
    let events = v.set_state(TradingState::Halted, true);
    // Owner by owner, each in order of entry; the other instrument's order stays.
    assert_eq!(
        canceled(&events),
        [
            (b.0, 100, CancelReason::Halted),
            (a.0, 100, CancelReason::Halted)
        ]
    );
    assert_eq!(
        operator_outcome(&events),
        Some(OperatorOutcome::Done { canceled: 2 })
    );
    assert_eq!(v.m.resting_orders(), 1);
}

#[test]
fn quotation_only_takes_orders_that_would_not_execute() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1000));
    v.set_state(TradingState::QuotationOnly, false);
    let (_, events) = v.limit(3, Side::Buy, 100, px(999));
    assert!(rejection(&events).is_none(), "a bid below the offer rests");
    let (_, events) = v.limit(3, Side::Buy, 100, px(1000));
    assert_eq!(
        rejection(&events),
        Some(RejectReason::Halted),
        "it would execute"
    );
    assert!(fills(&events).is_empty());
}

#[test]
fn the_venue_halt_halts_every_instrument_and_lifts_to_each_own_state() {
    let mut v = Venue::new();
    v.set_state(TradingState::Paused, false);
    let events = v.operator(OperatorAction::VenueHalt(true));
    // XYZ was paused: now halted; LOT was trading: now halted.
    assert_eq!(
        trading_actions(&events),
        [(0, TradingState::Halted), (1, TradingState::Halted)]
    );
    let (_, events) = v.limit(3, Side::Buy, 100, px(999));
    assert_eq!(rejection(&events), Some(RejectReason::Halted));
    let events = v.operator(OperatorAction::VenueHalt(false));
    assert_eq!(
        trading_actions(&events),
        [(0, TradingState::Paused), (1, TradingState::Trading)]
    );
    assert_eq!(v.m.trading_state(InstrumentId(0)), TradingState::Paused);
}

#[test]
fn the_operator_cancels_a_users_or_an_instruments_orders() {
    let mut v = Venue::new();
    let (a, _) = v.limit(2, Side::Sell, 100, px(1000));
    let (b, _) = v.limit(2, Side::Sell, 100, px(1001));
    v.limit(3, Side::Buy, 100, px(990));
    let events = v.operator(OperatorAction::CancelUser(OwnerId(2)));
    assert_eq!(
        canceled(&events),
        [
            (a.0, 100, CancelReason::Supervisory),
            (b.0, 100, CancelReason::Supervisory)
        ]
    );
    let events = v.operator(OperatorAction::CancelInstrument(
        v.cfg.instruments[XYZ].symbol,
    ));
    assert_eq!(
        operator_outcome(&events),
        Some(OperatorOutcome::Done { canceled: 1 })
    );
    assert_eq!(
        operator_outcome(&v.operator(OperatorAction::CancelUser(OwnerId(9)))),
        Some(OperatorOutcome::UnknownUser)
    );
    let nope = Symbol::from_str_padded("NOPE").unwrap();
    assert_eq!(
        operator_outcome(&v.operator(OperatorAction::CancelInstrument(nope))),
        Some(OperatorOutcome::UnknownSymbol)
    );
}

#[test]
fn each_time_in_force_is_accepted_only_in_its_hours() {
    use TimeInForce::*;
    let gtt = Gtt { expire_secs: 60 };
    let tifs = [Day, Ioc, Gtx, gtt, AfterHours];
    // Phase after each transition -> which of Day, IOC, GTX, GTT, after hours are accepted.
    let table = [
        (None, [false; 5]),
        (Some(DayEvent::StartOfMessages), [false; 5]),
        (
            Some(DayEvent::StartOfSystemHours),
            [false, true, true, true, false],
        ),
        (Some(DayEvent::StartOfMarketHours), [true; 5]),
        (
            Some(DayEvent::EndOfMarketHours),
            [false, true, true, true, true],
        ),
        (Some(DayEvent::EndOfSystemHours), [false; 5]),
    ];
    let mut v = scheduled();
    for (event, accepted) in table {
        if let Some(event) = event {
            v.day(event);
        }
        for (tif, ok) in tifs.iter().zip(accepted) {
            let (_, events) = v.with_tif(3, Side::Buy, px(900), *tif);
            let reason = rejection(&events);
            assert_eq!(reason.is_none(), ok, "{tif:?} after {event:?}: {reason:?}");
            if !ok {
                assert_eq!(reason, Some(RejectReason::Closed));
            }
        }
    }
}

#[test]
fn the_close_cancels_day_orders_and_the_end_of_system_hours_the_rest() {
    use TimeInForce::*;
    let mut v = scheduled();
    v.day(DayEvent::StartOfSystemHours);
    v.day(DayEvent::StartOfMarketHours);
    let (day, _) = v.with_tif(3, Side::Buy, px(900), Day);
    let (gtx, _) = v.with_tif(3, Side::Buy, px(901), Gtx);
    let (after, _) = v.with_tif(3, Side::Buy, px(902), AfterHours);
    let events = v.day(DayEvent::EndOfMarketHours);
    assert!(matches!(
        events[0].body,
        EventBody::SystemEvent {
            event: DayEvent::EndOfMarketHours
        }
    ));
    assert_eq!(canceled(&events), [(day.0, 100, CancelReason::Closed)]);
    let events = v.day(DayEvent::EndOfSystemHours);
    assert_eq!(
        canceled(&events),
        [
            (gtx.0, 100, CancelReason::Closed),
            (after.0, 100, CancelReason::Closed)
        ]
    );
    assert_eq!(v.m.resting_orders(), 0);
}

#[test]
fn the_end_of_system_hours_leaves_no_expiry_to_wake_for() {
    let mut v = scheduled();
    v.day(DayEvent::StartOfSystemHours);
    let (gtt, _) = v.with_tif(
        2,
        Side::Sell,
        px(1000),
        TimeInForce::Gtt { expire_secs: 60 },
    );
    assert!(v.m.next_deadline().is_some());
    let events = v.day(DayEvent::EndOfSystemHours);
    assert_eq!(canceled(&events), [(gtt.0, 100, CancelReason::Closed)]);
    assert_eq!(
        v.m.next_deadline(),
        None,
        "the canceled order's expiry is gone too"
    );
}

#[test]
fn a_good_till_time_order_expires_at_its_time() {
    let mut v = Venue::new();
    let (early, _) = v.with_tif(2, Side::Sell, px(1000), TimeInForce::Gtt { expire_secs: 2 });
    let (late, _) = v.with_tif(2, Side::Sell, px(1001), TimeInForce::Gtt { expire_secs: 5 });
    assert_eq!(v.m.next_deadline(), Some(Timestamp(1 + 2_000_000_000)));
    // Not yet: the order trades.
    v.ts = 1_999_999_999;
    let (_, events) = v.limit(3, Side::Buy, 10, px(1000));
    assert_eq!(fills(&events).len(), 2);
    // Its time has come: it expires before the next command matches, so a buy at its
    // price finds nothing.
    v.ts = 2_000_000_000;
    let (_, events) = v.limit(3, Side::Buy, 10, px(1000));
    assert_eq!(canceled(&events)[0], (early.0, 90, CancelReason::Expired));
    assert!(fills(&events).is_empty());
    // With no other command, a timer expires it.
    v.ts = 10_000_000_000;
    let events = v.venue(VenueCommand::Timer);
    assert_eq!(canceled(&events), [(late.0, 100, CancelReason::Expired)]);
    assert_eq!(v.m.next_deadline(), None);
    // An expire time of 0 or a day is refused.
    for expire_secs in [0, 86_400] {
        let (_, events) = v.with_tif(2, Side::Sell, px(1000), TimeInForce::Gtt { expire_secs });
        assert_eq!(rejection(&events), Some(RejectReason::InvalidExpireTime));
    }
}

/// Prices of any size an embedder may configure: the band's, fat-finger range's and
/// breaker's edges around a price of the range must fit in 64 bits, which `Matcher::new`
/// checks (they overflowed after a trade near the top: a panic in debug builds, a band
/// wrapped to nonsense in release); within that, the largest prices trade.
#[test]
fn price_protection_that_would_overflow_is_refused_at_construction() {
    let mut cfg = config(StpMode::CancelResting, 16, 16);
    let huge = &mut cfg.instruments[0];
    huge.tick = Price(1_000_000_000_000);
    huge.min_price = huge.tick;
    huge.max_price = Price(2_000 * huge.tick.0);
    huge.ref_price = Price(1_000 * huge.tick.0);
    huge.band_bps = 10_000;
    huge.fat_finger_bps = 0;
    let refused = std::panic::catch_unwind(|| Matcher::new(&cfg)).unwrap_err();
    let text = refused.downcast_ref::<String>().unwrap();
    assert!(text.contains("overflows 64 bits"), "{text}");
    let tick = cfg.instruments[0].tick.0;
    cfg.instruments[0].max_price = Price(800 * tick);
    cfg.instruments[0].ref_price = Price(700 * tick);
    let mut v = Venue::with(cfg);
    let top = v.cfg.instruments[0].max_price;
    v.limit(2, Side::Sell, 10, top);
    let (_, events) = v.limit(3, Side::Buy, 10, top);
    assert_eq!(fills(&events).len(), 2, "{events:?}");
}

/// An embedder's timestamps may run to the end of u64: an expiry past it is at the end of
/// time, never one that wrapped to the past (the order used to expire at the next command).
#[test]
fn an_expiry_past_the_end_of_time_never_comes() {
    let mut v = Venue::new();
    v.ts = u64::MAX - 10;
    let (order, _) = v.with_tif(2, Side::Sell, px(1000), TimeInForce::Gtt { expire_secs: 5 });
    // The end of time is no deadline.
    assert_eq!(v.m.next_deadline(), None);
    let (_, events) = v.limit(3, Side::Buy, 10, px(1000));
    assert!(canceled(&events).is_empty(), "{events:?}");
    assert_eq!(resting_fills(&events), [(2, order.0, 10, px(1000))]);
}

#[test]
fn an_expiry_acts_only_on_its_own_order() {
    // A pool of three slots: orders that leave early free their slot, and their expiry
    // entries stay behind (more than the heap holds, which then purges them).
    let gtt = |secs| TimeInForce::Gtt { expire_secs: secs };
    let mut v = Venue::with(config(StpMode::CancelResting, 3, 10));
    // The first order leaves early and a day order takes its slot at once: the old
    // entry's time must not cancel the order now in that slot.
    let (gone, _) = v.with_tif(2, Side::Sell, px(1000), gtt(1));
    v.cancel(2, gone, 0);
    let (day, _) = v.with_tif(2, Side::Sell, px(1001), TimeInForce::Day);
    // Another leaves early and its slot stays free until its time: the slot still holds
    // the gone order's line, id and all.
    let (left, _) = v.with_tif(3, Side::Buy, px(900), gtt(1));
    v.cancel(3, left, 0);
    v.ts = 1_000_000_001;
    let events = v.venue(VenueCommand::Timer);
    assert!(canceled(&events).is_empty(), "{events:?}");
    assert_eq!(v.m.resting_orders(), 1);
    // A live good-till-time order, then more entries than the heap holds, each of an
    // order that left: the purge keeps the live one, which still expires at its time.
    let (late, _) = v.with_tif(3, Side::Buy, px(901), gtt(3));
    for _ in 0..5 {
        let (r, _) = v.with_tif(2, Side::Sell, px(1002), gtt(2));
        v.cancel(2, r, 0);
    }
    v.ts = 5_000_000_000;
    let events = v.venue(VenueCommand::Timer);
    assert_eq!(canceled(&events), [(late.0, 100, CancelReason::Expired)]);
    let resting: Vec<UserRef> = v.m.state().orders.iter().map(|o| o.user_ref).collect();
    assert_eq!(resting, [day]);
    assert_eq!(v.m.next_deadline(), None);
}

#[test]
fn a_reused_key_is_not_expired_by_its_old_orders_entry() {
    let mut v = keyed();
    let mut gtt = v.order(2, Side::Sell, 100, px(1000));
    gtt.user_ref = UserRef(WIDE);
    gtt.tif = TimeInForce::Gtt { expire_secs: 1 };
    v.run(2, CommandBody::New(gtt));
    v.run(
        2,
        CommandBody::Cancel {
            user_ref: UserRef(WIDE),
            qty: Qty(0),
        },
    );
    // The same key, a day order now (a slot of its own or the freed one).
    v.enter_key(2, WIDE, Side::Sell, 100, px(1001));
    v.ts = 2_000_000_000;
    let events = v.venue(VenueCommand::Timer);
    assert!(canceled(&events).is_empty(), "{events:?}");
    assert_eq!(v.m.resting_orders(), 1);
}

// ---- Price protection: the band, the fat-finger range, the circuit breaker ----

/// [`config`] with XYZ's price protection changed by `edit`.
fn protected(edit: impl Fn(&mut InstrumentSpec)) -> Venue {
    let mut cfg = config(StpMode::CancelResting, 1_000, 1_000);
    edit(&mut cfg.instruments[XYZ]);
    Venue::with(cfg)
}

/// A breaker of 5% around the mean of the last 60 seconds, pausing for 30 seconds.
fn with_breaker() -> Venue {
    protected(|i| {
        i.breaker_bps = 500;
        i.breaker_window_secs = 60;
        i.breaker_pause_secs = 30;
    })
}

const SEC: u64 = 1_000_000_000;

impl Venue {
    /// Owner 2 offers 100 at `price`, owner 3 takes them: one trade at `price`.
    fn trade_at(&mut self, price: Price) {
        self.limit(2, Side::Sell, 100, price);
        let (_, ev) = self.limit(3, Side::Buy, 100, price);
        assert_eq!(fills(&ev).len(), 2, "a trade at {price}");
    }

    fn market(&mut self, owner: u16, side: Side, qty: u32) -> (UserRef, Vec<Event>) {
        let mut o = self.order(owner, side, qty, px(0));
        o.price = None;
        self.enter(owner, o)
    }

    /// Limit prices of one side of XYZ, best first.
    fn prices(&self, side: BookSide) -> Vec<Price> {
        self.m.view().sides[XYZ][side.index()]
            .iter()
            .map(|o| o.price)
            .collect()
    }
}

fn fill_prices(events: &[Event], owner: u16) -> Vec<Price> {
    fills(events)
        .iter()
        .filter(|f| f.0 == owner)
        .map(|f| f.3)
        .collect()
}

#[test]
fn after_a_sharp_fall_a_passive_sell_at_twice_the_last_price_is_accepted() {
    let mut v = Venue::new();
    // $10.00 down to $6.10, each trade within 10% of the one before.
    for cents in [910, 820, 740, 670, 610] {
        v.trade_at(px(cents));
    }
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1220));
    assert!(rejection(&ev).is_none(), "{ev:?}");
    assert_eq!(v.prices(BookSide::Ask), [px(1220)]);
}

#[test]
fn a_marketable_order_trades_only_up_to_the_band() {
    let mut v = Venue::new();
    v.limit(2, Side::Sell, 100, px(1050));
    v.limit(2, Side::Sell, 100, px(1100)); // the band's upper edge: 10% above $10.00
    v.limit(2, Side::Sell, 100, px(1150));
    // The band is taken on arrival: the buy's own trades do not move it.
    let (r, ev) = v.limit(0, Side::Buy, 300, px(1200));
    assert_eq!(fill_prices(&ev, 0), [px(1050), px(1100)]);
    assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::PriceBand)]);
    assert_eq!(v.prices(BookSide::Ask), [px(1150)]);
    assert!(v.side(BookSide::Bid).is_empty());
    // The band now follows the last trade ($11.00: up to $12.10). An IOC's remainder is
    // canceled as an IOC remainder.
    v.limit(2, Side::Sell, 100, px(1220));
    let mut ioc = v.order(0, Side::Buy, 200, px(1220));
    ioc.tif = TimeInForce::Ioc;
    let (r, ev) = v.enter(0, ioc);
    assert_eq!(fill_prices(&ev, 0), [px(1150)]);
    assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::Ioc)]);
    assert_eq!(v.prices(BookSide::Ask), [px(1220)]);
}

#[test]
fn a_remainder_the_band_stops_rests_at_the_band_edge_when_so_configured() {
    let mut v = protected(|i| i.band_remainder = BandRemainder::Rest);
    v.limit(2, Side::Sell, 100, px(1050));
    v.limit(2, Side::Sell, 100, px(1150));
    let (r, ev) = v.limit(0, Side::Buy, 300, px(1200));
    assert_eq!(fill_prices(&ev, 0), [px(1050)]);
    // Reference $10.00 on arrival: the band's edge is $11.00. The rest is repriced there,
    // the owner is told, and the feed shows it there.
    let tail: Vec<_> = ev[ev.len() - 2..].iter().map(|e| e.body).collect();
    assert!(matches!(
        tail[0],
        EventBody::Repriced { user_ref, price, .. } if user_ref == r && price == px(1100)
    ));
    assert!(matches!(
        tail[1],
        EventBody::MdAdd { qty: Qty(200), price, .. } if price == px(1100)
    ));
    assert_eq!(v.prices(BookSide::Bid), [px(1100)]);
    assert_eq!(v.side(BookSide::Bid), [(0, r.0, 200)]);
}

/// With band edges off the tick (10.05% of $10.00: $8.995 and $11.005), a remainder through
/// the band rests at the edge rounded to a tick inside the band, on either side.
#[test]
fn a_remainder_through_an_off_tick_band_edge_rests_on_the_tick_inside() {
    let edge = |v: &mut Venue, side: Side, limit: u64, first: u64, second: u64| {
        let contra = if side == Side::Buy {
            Side::Sell
        } else {
            Side::Buy
        };
        v.limit(2, contra, 100, px(first));
        v.limit(2, contra, 100, px(second));
        let (r, ev) = v.limit(0, side, 300, px(limit));
        assert_eq!(fill_prices(&ev, 0), [px(first)]);
        ev.iter()
            .find_map(|e| match e.body {
                EventBody::Repriced {
                    user_ref, price, ..
                } if user_ref == r => Some(price),
                _ => None,
            })
            .expect("the remainder is repriced")
    };
    let off_tick = |i: &mut InstrumentSpec| {
        i.band_bps = 1_005;
        i.band_remainder = BandRemainder::Rest;
    };
    let mut v = protected(off_tick);
    assert_eq!(edge(&mut v, Side::Buy, 1200, 1050, 1150), px(1100));
    assert_eq!(v.prices(BookSide::Bid), [px(1100)]);
    let mut v = protected(off_tick);
    assert_eq!(edge(&mut v, Side::Sell, 800, 950, 850), px(900));
    assert_eq!(v.prices(BookSide::Ask), [px(900)]);
}

#[test]
fn the_band_also_stops_trades_beyond_its_other_edge() {
    for remainder in [BandRemainder::Cancel, BandRemainder::Rest] {
        let mut v = protected(|i| i.band_remainder = remainder);
        // An offer below the band's lower edge ($9.00) rests: nothing bids that high.
        v.limit(2, Side::Sell, 100, px(850));
        // A bid that crosses it cannot trade at $8.50, and cannot rest crossing it.
        let (r, ev) = v.limit(0, Side::Buy, 100, px(870));
        assert!(fills(&ev).is_empty());
        assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::PriceBand)]);
        assert!(v.side(BookSide::Bid).is_empty());
    }
}

#[test]
fn self_trade_prevention_never_reaches_beyond_the_bands_other_edge() {
    // Owners 0 and 1 are both of firm F1. An offer of owner 1 below the band's lower edge
    // ($9.00) cannot trade with owner 0's bid, so there is no self-trade to prevent: it
    // stays, and the bid is stopped by the band.
    let mut v = Venue::new();
    let (offer, _) = v.limit(1, Side::Sell, 100, px(850));
    let (r, ev) = v.limit(0, Side::Buy, 100, px(870));
    assert!(aiq(&ev).is_empty(), "{ev:?}");
    assert!(fills(&ev).is_empty());
    assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::PriceBand)]);
    assert_eq!(v.side(BookSide::Ask), [(1, offer.0, 100)]);
}

#[test]
fn a_minimum_quantity_counts_only_what_trades_before_the_breaker_would_pause() {
    let setup = || {
        let mut v = with_breaker();
        v.ts = 100 * SEC;
        v.trade_at(px(1000));
        // The breaker allows $9.50 to $10.50 a second later: $10.60 may not print.
        v.ts = 101 * SEC;
        for cents in [1020, 1040, 1060] {
            v.limit(2, Side::Sell, 100, px(cents));
        }
        v
    };
    // Fill or kill of 300: only 200 can print before a pause, so nothing trades, nothing
    // pauses, the book stays.
    let mut v = setup();
    let mut fok = v.order(0, Side::Buy, 300, px(1060));
    fok.tif = TimeInForce::Ioc;
    fok.min_qty = Qty(300);
    let (r, ev) = v.enter(0, fok);
    assert!(fills(&ev).is_empty(), "{ev:?}");
    assert!(trading_actions(&ev).is_empty());
    assert_eq!(canceled(&ev), [(r.0, 300, CancelReason::Ioc)]);
    assert_eq!(v.m.trading_state(InstrumentId(0)), TradingState::Trading);
    assert_eq!(v.prices(BookSide::Ask), [px(1020), px(1040), px(1060)]);
    // A day order with a minimum of 300: canceled as unable to execute.
    let mut v = setup();
    let mut min = v.order(0, Side::Buy, 300, px(1060));
    min.min_qty = Qty(300);
    let (r, ev) = v.enter(0, min);
    assert!(fills(&ev).is_empty());
    assert_eq!(canceled(&ev), [(r.0, 300, CancelReason::CannotExecute)]);
    // A minimum of 200 is met: it trades 200, then the breaker pauses at $10.60.
    let mut v = setup();
    let mut min = v.order(0, Side::Buy, 300, px(1060));
    min.min_qty = Qty(200);
    let (r, ev) = v.enter(0, min);
    assert_eq!(fill_prices(&ev, 0), [px(1020), px(1040)]);
    assert_eq!(trading_actions(&ev), [(0, TradingState::Paused)]);
    assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::CircuitBreaker)]);
}

#[test]
fn band_bps_0_turns_the_band_off() {
    let mut v = protected(|i| i.band_bps = 0);
    for cents in [1050, 1300, 1490] {
        v.limit(2, Side::Sell, 100, px(cents));
    }
    let (_, ev) = v.limit(0, Side::Buy, 200, px(1300));
    assert_eq!(fill_prices(&ev, 0), [px(1050), px(1300)]);
    // A market order sweeps what the fat-finger range let rest.
    v.limit(2, Side::Sell, 100, px(1500));
    let (_, ev) = v.market(0, Side::Buy, 300);
    assert_eq!(fill_prices(&ev, 0), [px(1490), px(1500)]);
}

#[test]
fn the_fat_finger_range_refuses_absurd_prices_around_the_start_of_day_price() {
    let mut v = Venue::new();
    // ref_price $10.00, 50%: $5.00 to $15.00, both accepted.
    for (cents, ok) in [(499, false), (500, true), (1500, true), (1501, false)] {
        let (_, ev) = v.limit(2, Side::Sell, 100, px(cents));
        let reason = rejection(&ev);
        assert_eq!(reason.is_none(), ok, "{cents}: {reason:?}");
        if !ok {
            assert_eq!(reason, Some(RejectReason::PriceOutsideBand));
        }
    }
    // It stays centred on ref_price while the last trade moves.
    v.cancel(2, UserRef(2), 0);
    v.cancel(2, UserRef(3), 0);
    for cents in [1090, 1190, 1300] {
        v.trade_at(px(cents));
    }
    let (_, ev) = v.limit(2, Side::Sell, 100, px(1501));
    assert_eq!(rejection(&ev), Some(RejectReason::PriceOutsideBand));
    // fat_finger_bps = 0: only the price range applies.
    let mut v = protected(|i| i.fat_finger_bps = 0);
    let (_, ev) = v.limit(2, Side::Sell, 100, px(19_999));
    assert!(rejection(&ev).is_none());
    let (_, ev) = v.limit(2, Side::Sell, 100, px(20_001));
    assert_eq!(rejection(&ev), Some(RejectReason::PriceOutOfRange));
}

#[test]
fn a_runaway_sweep_pauses_the_instrument_and_it_resumes_after_m_seconds() {
    let mut v = with_breaker();
    v.ts = 100 * SEC;
    v.trade_at(px(1000));
    // A second later: the breaker's reference is $10.00 (the mean of the last 60 seconds),
    // so trades may print from $9.50 to $10.50.
    v.ts = 101 * SEC;
    for cents in [1020, 1040, 1060] {
        v.limit(2, Side::Sell, 100, px(cents));
    }
    let (r, ev) = v.limit(0, Side::Buy, 300, px(1060));
    assert_eq!(fill_prices(&ev, 0), [px(1020), px(1040)]);
    let tail: Vec<_> = ev[ev.len() - 2..].iter().map(|e| e.body).collect();
    assert_eq!(
        tail[0],
        EventBody::TradingAction {
            instrument: InstrumentId(0),
            state: TradingState::Paused,
            reason: *b"LUDP",
        }
    );
    assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::CircuitBreaker)]);
    assert_eq!(
        v.prices(BookSide::Ask),
        [px(1060)],
        "the $10.60 did not print"
    );
    let pause_end = v.ts + 30 * SEC;
    assert_eq!(v.m.next_deadline(), Some(Timestamp(pause_end)));
    // Paused: new orders are rejected as halted, cancels are taken.
    let (_, ev) = v.limit(3, Side::Buy, 100, px(1060));
    assert_eq!(rejection(&ev), Some(RejectReason::Halted));
    v.limit(3, Side::Buy, 100, px(900)); // rejected too: nothing rests
    assert!(v.side(BookSide::Bid).is_empty());
    // Just before the end, still paused.
    v.ts = pause_end - 2;
    let (_, ev) = v.limit(3, Side::Buy, 100, px(1060));
    assert_eq!(rejection(&ev), Some(RejectReason::Halted));
    // The first command at or past the end resumes it before it is applied: the reference
    // is now the mean of $10.00, $10.20 and $10.40, and $10.60 prints.
    let (_, ev) = v.limit(3, Side::Buy, 100, px(1060));
    assert_eq!(trading_actions(&ev), [(0, TradingState::Trading)]);
    assert!(matches!(
        ev[0].body,
        EventBody::TradingAction { reason, .. } if reason == *b"    "
    ));
    assert_eq!(fill_prices(&ev, 3), [px(1060)]);
    assert_eq!(v.m.next_deadline(), None);
    // Without other commands, the timer resumes it.
    v.ts += SEC;
    v.limit(2, Side::Sell, 100, px(1140));
    let (_, ev) = v.limit(0, Side::Buy, 100, px(1140));
    assert_eq!(trading_actions(&ev), [(0, TradingState::Paused)]);
    let pause_end = v.ts + 30 * SEC;
    v.ts = pause_end + 5 * SEC;
    let ev = v.venue(VenueCommand::Timer);
    assert_eq!(trading_actions(&ev), [(0, TradingState::Trading)]);
    assert_eq!(v.m.trading_state(InstrumentId(0)), TradingState::Trading);
}

#[test]
fn the_breaker_reference_is_the_mean_of_the_last_n_whole_seconds() {
    let mut v = protected(|i| {
        i.breaker_bps = 500;
        i.breaker_window_secs = 2;
        i.breaker_pause_secs = 30;
    });
    v.ts = 10 * SEC;
    v.trade_at(px(1000));
    v.trade_at(px(1040)); // the same second: the reference ($10.00) holds all second
    // Second 11: the mean of second 10, $10.20, so up to $10.71.
    v.ts = 11 * SEC;
    v.trade_at(px(1070));
    // Second 20: no trade in seconds 18 and 19, so the last trade ($10.70) is the
    // reference: $10.16 may not print.
    v.ts = 20 * SEC;
    v.limit(2, Side::Sell, 100, px(1010));
    let (r, ev) = v.limit(3, Side::Buy, 100, px(1010));
    assert!(fills(&ev).is_empty());
    assert_eq!(canceled(&ev), [(r.0, 100, CancelReason::CircuitBreaker)]);
    // breaker_bps = 0: no breaker.
    let mut v = Venue::new();
    v.trade_at(px(1000));
    v.trade_at(px(1099));
    assert_eq!(v.m.trading_state(InstrumentId(0)), TradingState::Trading);
}

#[test]
fn an_operator_state_overrides_a_breaker_pause() {
    let mut v = with_breaker();
    v.ts = 100 * SEC;
    v.trade_at(px(1000));
    v.limit(2, Side::Sell, 100, px(1060));
    v.limit(3, Side::Buy, 100, px(1060));
    assert_eq!(v.m.trading_state(InstrumentId(0)), TradingState::Paused);
    // The operator resumes it now; the pause's end no longer matters.
    v.set_state(TradingState::Trading, false);
    assert_eq!(v.m.next_deadline(), None);
    let (_, ev) = v.limit(3, Side::Buy, 100, px(1000));
    assert!(rejection(&ev).is_none());
    // Paused by the operator: it stays paused past any breaker pause's end.
    v.limit(2, Side::Sell, 100, px(1060));
    v.limit(3, Side::Buy, 100, px(1060));
    v.set_state(TradingState::Paused, false);
    v.ts += 3_600 * SEC;
    let ev = v.venue(VenueCommand::Timer);
    assert!(trading_actions(&ev).is_empty());
    assert_eq!(v.m.trading_state(InstrumentId(0)), TradingState::Paused);
}

#[test]
fn a_state_whose_phase_no_transition_explains_is_refused() {
    let mut v = Venue::new();
    v.venue(VenueCommand::SystemEvent(DayEvent::StartOfSystemHours));
    let good = v.m.state();
    assert!(Matcher::from_state(&v.cfg, &good).is_ok());
    let mut bad = good.clone();
    bad.phase = Some(ironmatch::book::DayPhase::Market);
    let e = Matcher::from_state(&v.cfg, &bad).unwrap_err();
    assert!(e.contains("phase"), "{e}");
    let mut bad = good;
    bad.day_event = None;
    assert!(Matcher::from_state(&v.cfg, &bad).is_err());
}

#[test]
fn a_restored_matcher_keeps_the_pause_and_the_trade_window() {
    let mut v = with_breaker();
    v.ts = 100 * SEC;
    v.trade_at(px(1000));
    v.ts = 101 * SEC;
    v.trade_at(px(1040));
    v.limit(2, Side::Sell, 100, px(1060));
    v.limit(3, Side::Buy, 100, px(1060));
    let pause_end = v.ts + 30 * SEC;
    let state = v.m.state();
    let restored = Matcher::from_state(&v.cfg, &state).unwrap();
    assert_eq!(restored.state(), state);
    assert_eq!(restored.next_deadline(), Some(Timestamp(pause_end)));
    assert_eq!(
        restored.trading_state(InstrumentId(0)),
        TradingState::Paused
    );
    // The original and the restored matcher resume at the same time and hold the next
    // trades to the same breaker reference price: the same commands, the same events.
    let mut twin = Venue {
        cfg: v.cfg.clone(),
        m: restored,
        refs: v.refs,
        ts: v.ts,
    };
    let mut tripped = false;
    for (at, owner, side, cents) in [
        (pause_end - 1, 3, Side::Buy, 1060),
        (pause_end, 3, Side::Buy, 1060),
        (pause_end + 1, 2, Side::Sell, 1120),
        (pause_end + 2, 3, Side::Buy, 1120),
    ] {
        v.ts = at - 1;
        twin.ts = at - 1;
        let (_, a) = v.limit(owner, side, 100, px(cents));
        let (_, b) = twin.limit(owner, side, 100, px(cents));
        assert_eq!(a, b, "at {at}");
        tripped |= canceled(&a)
            .iter()
            .any(|c| c.2 == CancelReason::CircuitBreaker);
    }
    assert!(tripped, "the last buy trips the breaker again");
}

/// A venue whose references are the caller's own keys ([`RefRule::Keys`]).
fn keyed() -> Venue {
    Venue::with(BookConfig {
        refs: RefRule::Keys,
        ..config(StpMode::CancelResting, 1_000, 1_000)
    })
}

impl Venue {
    /// Enters `o` with the key `key`; returns the events.
    fn enter_key(
        &mut self,
        owner: u16,
        key: u64,
        side: Side,
        qty: u32,
        price: Price,
    ) -> Vec<Event> {
        let mut o = self.order(owner, side, qty, price);
        o.user_ref = UserRef(key);
        self.run(owner, CommandBody::New(o))
    }
}

const WIDE: u64 = 0xDEAD_BEEF_0000_0001;

#[test]
fn caller_keys_take_any_64_bit_value_in_any_order() {
    let mut v = keyed();
    for (key, price) in [
        (WIDE, 1000),
        (7, 1001),
        (0, 1002),
        (u64::MAX, 1003),
        (3, 1004),
    ] {
        let ev = v.enter_key(2, key, Side::Sell, 100, px(price));
        assert!(
            matches!(ev[0].body, EventBody::Accepted { order, .. } if order.user_ref == UserRef(key)),
            "key {key:#x}: {ev:?}"
        );
    }
    // Each is addressed by its key: a cancel of the wide one, a reduce of key 0.
    let ev = v.cancel(2, UserRef(WIDE), 0);
    assert_eq!(canceled(&ev), [(WIDE, 100, CancelReason::UserRequested)]);
    let ev = v.cancel(2, UserRef(0), 40);
    assert_eq!(canceled(&ev), [(0, 60, CancelReason::UserRequested)]);
    // Another owner may use the same keys.
    let ev = v.enter_key(3, 7, Side::Buy, 100, px(900));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    // Executions carry the key.
    let ev = v.enter_key(3, WIDE, Side::Buy, 100, px(1001));
    assert_eq!(
        fills(&ev),
        [
            (2, 7, 100, px(1001), Liquidity::Added),
            (3, WIDE, 100, px(1001), Liquidity::Removed)
        ]
    );
    assert_eq!(
        v.side(BookSide::Ask),
        [(2, 0, 40), (2, u64::MAX, 100), (2, 3, 100)]
    );
}

#[test]
fn a_live_key_is_rejected_with_no_effect_and_a_key_is_free_once_its_order_left() {
    let mut v = keyed();
    v.enter_key(2, WIDE, Side::Sell, 100, px(1000));
    let ev = v.enter_key(2, WIDE, Side::Sell, 50, px(1001));
    assert_eq!(rejection(&ev), Some(RejectReason::DuplicateUserRef));
    assert_eq!(ev.len(), 1);
    assert_eq!(v.side(BookSide::Ask), [(2, WIDE, 100)]);
    // A lower key than any before is fine: there is no order to the keys.
    let ev = v.enter_key(2, 1, Side::Sell, 100, px(1002));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    // Filled, the order is gone and its key may be used again.
    v.enter_key(3, 5, Side::Buy, 100, px(1000));
    assert_eq!(v.side(BookSide::Ask), [(2, 1, 100)]);
    let ev = v.enter_key(2, WIDE, Side::Sell, 30, px(1003));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    // Canceled, likewise.
    v.cancel(2, UserRef(1), 0);
    let ev = v.enter_key(2, 1, Side::Sell, 20, px(1004));
    assert!(matches!(ev[0].body, EventBody::Accepted { .. }));
    assert_eq!(v.side(BookSide::Ask), [(2, WIDE, 30), (2, 1, 20)]);
    // A key that is not live is unknown (no history is kept of keys).
    let ev = v.cancel(2, UserRef(99), 0);
    assert_eq!(rejection(&ev), Some(RejectReason::UnknownOrder));
}

#[test]
fn a_keyed_replace_may_keep_its_key_but_not_take_a_live_one() {
    let mut v = keyed();
    v.enter_key(2, WIDE, Side::Sell, 100, px(1000));
    v.enter_key(2, 9, Side::Sell, 100, px(1001));
    // Onto another live key: refused, both orders stay as they were.
    let ev = v.replace_as(2, UserRef(WIDE), UserRef(9), 100, px(1002));
    assert_eq!(rejection(&ev), Some(RejectReason::DuplicateUserRef));
    assert_eq!(v.side(BookSide::Ask), [(2, WIDE, 100), (2, 9, 100)]);
    // Keeping its own key: a new order (back of its price) under the same key.
    let ev = v.replace_as(2, UserRef(WIDE), UserRef(WIDE), 100, px(1001));
    assert!(matches!(
        ev[0].body,
        EventBody::Replaced { orig_user_ref, order, .. }
            if orig_user_ref == UserRef(WIDE) && order.user_ref == UserRef(WIDE)
    ));
    assert_eq!(v.side(BookSide::Ask), [(2, 9, 100), (2, WIDE, 100)]);
    // Onto a fresh key.
    v.replace_as(2, UserRef(9), UserRef(4), 100, px(1001));
    assert_eq!(v.side(BookSide::Ask), [(2, WIDE, 100), (2, 4, 100)]);
    assert_eq!(
        rejection(&v.cancel(2, UserRef(9), 0)),
        Some(RejectReason::UnknownOrder)
    );
}

#[test]
fn a_keyed_core_restores_from_its_state() {
    let mut v = keyed();
    v.enter_key(2, WIDE, Side::Sell, 100, px(1000));
    v.enter_key(2, 3, Side::Sell, 100, px(1000));
    v.enter_key(1, 3, Side::Buy, 100, px(990));
    let state = v.m.state();
    let restored = Matcher::from_state(&v.cfg, &state).unwrap();
    assert_eq!(restored.view(), v.m.view());
    v.m = restored;
    assert_eq!(
        canceled(&v.cancel(2, UserRef(WIDE), 0)),
        [(WIDE, 100, CancelReason::UserRequested)]
    );
    let ev = v.enter_key(1, 3, Side::Buy, 100, px(991));
    assert_eq!(rejection(&ev), Some(RejectReason::DuplicateUserRef));
    // Under OUCH's rule the same state is refused: its references are above the
    // owners' high-water marks (0), which OUCH's rule never allows.
    let ouch = BookConfig {
        refs: RefRule::Ouch,
        ..v.cfg.clone()
    };
    assert!(Matcher::from_state(&ouch, &state).is_err());
    // And a state with OUCH high-water marks is refused under caller keys.
    let mut ouch_venue = Venue::new();
    ouch_venue.limit(2, Side::Sell, 100, px(1000));
    assert!(Matcher::from_state(&v.cfg, &ouch_venue.m.state()).is_err());
}

#[test]
fn an_account_query_after_the_last_user_ref_num_answers_the_last_one() {
    // OUCH's UserRefNum is 32 bits: once a client used the last value, the next one it
    // is told is that value still (nothing above it can be sent).
    let mut v = Venue::new();
    let mut o = v.order(2, Side::Sell, 100, px(1000));
    o.user_ref = UserRef(u64::from(u32::MAX));
    v.run(2, CommandBody::New(o));
    let ev = v.run(2, CommandBody::AccountQuery);
    assert!(matches!(
        ev[0].body,
        EventBody::AccountQueried { next_user_ref, .. } if next_user_ref == UserRef(u64::from(u32::MAX))
    ));
    let ev = keyed().run(2, CommandBody::AccountQuery);
    assert!(matches!(
        ev[0].body,
        EventBody::AccountQueried { next_user_ref, .. } if next_user_ref == UserRef(1)
    ));
}
