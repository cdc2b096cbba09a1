//! The fast book: pooled orders in intrusive FIFO queues, levels on direct-indexed ladders.
//!
//! Memory is allocated once in [`Matcher::new`]; `apply` never allocates (proven by
//! `tests/no_alloc.rs`). Orders are found by `(owner, user_ref)` through an index that is
//! only ever probed, never iterated, so determinism holds.
//!
//! Layout, chosen by `cargo bench --bench book` (see the README): everything about an
//! order (what matching, cancels and events read, and the reserve size and echo bytes that
//! refills, replaces and the close read) fills one 64-byte cache line. A level keeps its
//! displayed and total quantities, so the quantity at a price is one read.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::breaker::{TradeWindow, WindowState};
use super::divisor::Divisor;
use super::ladder::Ladder;
use super::message::*;
use super::owners::OwnerSlots;
use super::pool::{NIL, Pool};
use super::ref_index::OrderIndex;
use super::symbols::SymbolTable;
use super::{
    BandRemainder, BookConfig, InstrumentSpec, LADDER_TICKS_MAX, OwnerSpec, RefRule, StpMode,
};
use crate::types::*;

/// A resting order: one cache line holds everything about it (matching, cancels, events,
/// reserve refills, replaces and the close). See the README for the whole per-order cost.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Order {
    id: OrderId,
    /// Feed reference of the displayed part (changes at each reserve refill).
    md_ref: OrderId,
    user_ref: UserRef,
    /// Shares still open, displayed and reserve together.
    open: u32,
    /// Shares displayed now (0 for hidden orders).
    shown: u32,
    /// Queue neighbours in the order's level.
    prev: u32,
    next: u32,
    level: u32,
    firm: Firm,
    /// Shares executed by the whole replace chain, for replace quantities.
    executed: u32,
    /// Reserve: the displayed part at each refill (0: none).
    max_floor: u32,
    owner: OwnerId,
    instrument: InstrumentId,
    /// Side, hidden and day-only, packed (see [`Order::side`]): the line has no spare byte.
    flags: u8,
    /// Echo bytes a replace carries over.
    capacity: u8,
    cross_type: u8,
    customer_type: u8,
}

// One cache line per order; growing it is a measured decision.
const _: () = assert!(std::mem::size_of::<Order>() == 64);

/// `Order::flags`: the side's code in the low two bits, then these.
const HIDDEN: u8 = 1 << 2;
/// Time in force Day: canceled at the end of market hours.
const DAY_ONLY: u8 = 1 << 3;
const SIDE_BITS: u8 = 0b11;

impl Order {
    fn pack_flags(side: Side, hidden: bool, day_only: bool) -> u8 {
        let side = match side {
            Side::Buy => 0,
            Side::Sell => 1,
            Side::SellShort => 2,
            Side::SellShortExempt => 3,
        };
        side | if hidden { HIDDEN } else { 0 } | if day_only { DAY_ONLY } else { 0 }
    }

    #[inline(always)]
    fn side(&self) -> Side {
        match self.flags & SIDE_BITS {
            0 => Side::Buy,
            1 => Side::Sell,
            2 => Side::SellShort,
            _ => Side::SellShortExempt,
        }
    }

    #[inline(always)]
    fn book_side(&self) -> BookSide {
        self.side().book_side()
    }

    fn set_side(&mut self, side: Side) {
        self.flags = Order::pack_flags(side, self.hidden(), self.day_only());
    }

    #[inline(always)]
    fn hidden(&self) -> bool {
        self.flags & HIDDEN != 0
    }

    fn day_only(&self) -> bool {
        self.flags & DAY_ONLY != 0
    }
}

/// A FIFO of orders, linked through `Order::prev/next`.
#[derive(Clone, Copy, Debug)]
struct Queue {
    head: u32,
    tail: u32,
}

const EMPTY_QUEUE: Queue = Queue {
    head: NIL,
    tail: NIL,
};

/// One price of one side: displayed orders first, then hidden ones.
#[derive(Clone, Copy, Debug)]
struct Level {
    price: Price,
    /// Tick number of `price` on its ladder.
    tick: u32,
    shown: Queue,
    hidden: Queue,
    /// Shares displayed at this price (the feed's view of it).
    shown_qty: u64,
    /// Shares open at this price, displayed, reserve and hidden.
    open_qty: u64,
}

impl Default for Level {
    fn default() -> Level {
        Level {
            price: Price(0),
            tick: 0,
            shown: EMPTY_QUEUE,
            hidden: EMPTY_QUEUE,
            shown_qty: 0,
            open_qty: 0,
        }
    }
}

impl Level {
    fn queue(&mut self, hidden: bool) -> &mut Queue {
        if hidden {
            &mut self.hidden
        } else {
            &mut self.shown
        }
    }

    fn head(&self) -> u32 {
        if self.shown.head != NIL {
            self.shown.head
        } else {
            self.hidden.head
        }
    }
}

#[derive(Debug)]
struct Book {
    spec: InstrumentSpec,
    /// `spec.tick` and `spec.lot`, prepared: prices and quantities are checked with no
    /// hardware division.
    tick: Divisor,
    lot: Divisor,
    /// Indexed by `BookSide::index()`.
    sides: [Ladder; 2],
    /// Centre of the price band: the last trade, or `ref_price` before any. Set through
    /// [`Book::set_reference`], which keeps `band` in step, or during a sweep by each
    /// trade alone, `band` following once the sweep ends ([`Matcher::sweep`]).
    reference: Price,
    /// `spec.band(reference)`, kept so that an order's checks do not compute it: the
    /// reference moves only when a trade prints at a new price. Stale inside a sweep,
    /// where nothing reads it (the incoming order's band edge was fixed at its entry).
    band: Option<(Price, Price)>,
    /// Orders resting in this book (displayed, reserve and hidden).
    resting: u32,
    /// The instrument's own trading state (the venue halt is applied on top).
    state: TradingState,
    /// The fat-finger range, fixed for the day: limit prices outside it are rejected.
    fat_finger: (Price, Price),
    /// The configured price range and the fat-finger range, intersected (both fixed for
    /// the day): the limits, inclusive, [`Matcher::enter_plain`] takes before the band.
    plain: (Price, Price),
    /// End of a circuit-breaker pause, ns since midnight (`u64::MAX`: none).
    pause_until: u64,
    /// The last seconds of trades, for the breaker's reference price.
    window: TradeWindow,
    /// The second `breaker_range` was computed for (`u64::MAX`: not yet): the range holds
    /// for a whole second, since the window counts only whole seconds before it.
    breaker_second: u64,
    /// The prices a trade may print at without tripping the breaker, inclusive.
    breaker_range: (Price, Price),
}

impl Book {
    /// Moves the band's centre to `price` (a trade printed there).
    #[inline(always)]
    fn set_reference(&mut self, price: Price) {
        if self.reference != price {
            self.reference = price;
            self.band = self.spec.band(price);
        }
    }

    /// Tick number of a valid limit price (within range, on a tick).
    #[inline]
    fn tick_of(&self, price: Price) -> u32 {
        self.tick.exact_quotient(price.0 - self.spec.min_price.0) as u32
    }

    /// Price of tick number `tick`.
    #[inline]
    fn price_of(&self, tick: u32) -> Price {
        Price(self.spec.min_price.0 + u64::from(tick) * self.spec.tick.0)
    }

    /// Best price and its level on `side`.
    #[inline]
    fn best(&self, side: BookSide) -> Option<(Price, u32)> {
        self.sides[side.index()]
            .best()
            .map(|(tick, level)| (self.price_of(tick), level))
    }
}

#[derive(Clone, Copy, Debug)]
struct Owner {
    spec: OwnerSpec,
    /// Self-trade prevention for this owner's incoming orders (its own or the venue's).
    stp: StpMode,
    /// The highest reference used ([`RefRule::Ouch`]; 0 with [`RefRule::Keys`]).
    last_ref: u64,
}

/// One price level as the book queries report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelView {
    /// The level's price.
    pub price: Price,
    /// Shares displayed (what the feed shows at this price); 0 if only hidden orders rest.
    pub shown_qty: u64,
    /// Shares open: displayed, reserve and hidden together.
    pub open_qty: u64,
}

/// The order being entered while it matches.
#[derive(Clone, Copy, Debug)]
struct Incoming {
    owner: OwnerId,
    user_ref: UserRef,
    order_id: OrderId,
    instrument: InstrumentId,
    side: Side,
    firm: Firm,
    /// Its limit price, where it rests (the band or fat-finger edge for market orders).
    limit: Price,
    /// Worst price it may trade at: `limit`, or the band edge if that comes first.
    reach: Price,
    /// The band's other edge: it may not trade at a price better than this either (0 for
    /// a buy, `u64::MAX` for a sell when the band is off).
    guard: Price,
    remaining: u32,
    /// Shares executed by this order and, for a replacement, the chain before it.
    executed: u32,
}

/// The prices an entering order rests at and may trade at (see [`Incoming`]).
#[derive(Clone, Copy, Debug)]
struct Prices {
    limit: Price,
    reach: Price,
    guard: Price,
}

/// What happens to an entering order after matching.
#[derive(Clone, Copy, Debug)]
struct Entry {
    tif: TimeInForce,
    market: bool,
    hidden: bool,
    min_qty: u32,
    max_floor: u32,
    capacity: u8,
    cross_type: u8,
    customer_type: u8,
}

/// The fast matcher for all instruments. See the [module docs](super) for the rules.
///
/// ```
/// use ironmatch::book::flow::test_config;
/// use ironmatch::book::{Command, CommandBody, Echo, EventBody, Matcher, NewOrder, StpMode, TimeInForce};
/// use ironmatch::types::*;
///
/// let config = test_config(StpMode::CancelResting);
/// let mut matcher = Matcher::new(&config);
/// let order = |owner: u16, side, price| Command {
///     ts: Timestamp(34_200_000_000_000),
///     owner: OwnerId(owner),
///     body: CommandBody::New(NewOrder {
///         user_ref: UserRef(1),
///         side,
///         qty: Qty(10),
///         symbol: config.instruments[0].symbol,
///         price: Some(Price(price)),
///         tif: TimeInForce::Day,
///         hidden: false,
///         post_only: false,
///         min_qty: Qty(0),
///         max_floor: Qty(0),
///         firm: config.owners[usize::from(owner)].firm,
///         echo: Echo::default(),
///     }),
/// };
/// let mut events = Vec::new();
/// matcher.apply(&order(2, Side::Sell, 1_000_000), &mut events); // a maker offers 10 @ 100.00
/// matcher.apply(&order(3, Side::Buy, 1_000_100), &mut events); // a taker bids 100.01
/// let fills: Vec<_> = events
///     .iter()
///     .filter_map(|e| match e.body {
///         EventBody::Executed { owner, qty, price, .. } => Some((owner.0, qty.0, price)),
///         _ => None,
///     })
///     .collect();
/// // Both sides trade 10 at the resting order's price.
/// assert_eq!(fills, [(2, 10, Price(1_000_000)), (3, 10, Price(1_000_000))]);
/// ```
#[derive(Debug)]
pub struct Matcher {
    books: Vec<Book>,
    symbols: SymbolTable,
    owners: Vec<Owner>,
    orders: Pool<Order>,
    levels: Pool<Level>,
    by_ref: OrderIndex,
    /// Each order slot's owner, for the operations on one owner's orders.
    owner_slots: OwnerSlots,
    /// Orders gathered by those operations (capacity for every order: never grows).
    scratch: Vec<Gathered>,
    /// References follow OUCH's rule ([`RefRule::Ouch`]) rather than being caller keys.
    ouch_refs: bool,
    next_order_id: u64,
    next_match_id: u64,
    /// Where the trading day stands.
    phase: DayPhase,
    /// The day's last transition, if any (the scheduler resumes after it on a restart).
    day_event: Option<DayEvent>,
    /// The venue's kill switch: every instrument halted.
    venue_halted: bool,
    /// Good-till-time orders by expire time, then order id. Entries of orders that left
    /// the book early stay until their time (or a purge when the heap is full); an entry
    /// counts only while its slot still holds its order ([`Matcher::holds`]).
    expiries: BinaryHeap<Reverse<Expiry>>,
    /// Earliest entry of `expiries` (`u64::MAX` if none).
    next_expiry: u64,
    /// Earliest end of a circuit-breaker pause (`u64::MAX` if none).
    next_resume: u64,
    /// `min(next_expiry, next_resume)`: one compare per command.
    next_deadline: u64,
}

/// A band edge rounded to a tick inside the band (down for a buy's, up for a sell's): where
/// a limit through the band trades up to and its remainder may rest. Rare, so a plain
/// division.
#[cold]
#[inline(never)]
fn inside_tick(buy: bool, edge: Price, tick: Price) -> Price {
    if buy {
        Price(edge.0 - edge.0 % tick.0)
    } else {
        Price(edge.0.div_ceil(tick.0) * tick.0)
    }
}

/// Resting orders (in use order slots) below which [`Matcher::prefetch`] does nothing:
/// 256 KiB of order lines, which stay in a core's own caches. Measured: `book/mixed` (640
/// resting orders) ran 7-11% slower when it prefetched, `book/cancel` (100,640) 1.2x to
/// 1.9x faster, `book/add` above it 3-5% slower (see the README).
pub const PREFETCH_ORDERS_MIN: usize = 4096;

/// A good-till-time order's expire time, identity and slot: 20 bytes, ordered by time,
/// then order id (unique, so the slot never decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(4))]
struct Expiry {
    at: u64,
    id: u64,
    slot: u32,
}

const _: () = assert!(std::mem::size_of::<Expiry>() == 20);

/// An order gathered for a mass cancel: sorted by id without reading order lines again
/// (a large owner's orders do not fit in cache: sorting slots by reading each line's id
/// at every comparison would cost O(n log n) scattered reads on the matcher's thread).
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct Gathered {
    id: u64,
    slot: u32,
}

/// The `(owner, key)` the order in `slot` holds, for the reference index.
#[inline(always)]
fn key_of(orders: &Pool<Order>, slot: u32) -> (u16, u64) {
    let o = &orders[slot];
    (o.owner.0, o.user_ref.0)
}

/// Queue ranks of the resting orders by slot, for [`Matcher::state`].
enum Ranks {
    BySlot(Vec<u32>),
    Map(FxHashMap<u32, u32>),
}

impl Ranks {
    /// For `used` orders in a pool of `slots`.
    fn for_pool(used: usize, slots: usize) -> Ranks {
        if used.saturating_mul(16) >= slots {
            Ranks::BySlot(vec![0; slots])
        } else {
            let mut map = FxHashMap::default();
            map.reserve(used);
            Ranks::Map(map)
        }
    }

    fn set(&mut self, slot: u32, rank: u32) {
        match self {
            Ranks::BySlot(v) => v[slot as usize] = rank,
            Ranks::Map(m) => {
                m.insert(slot, rank);
            }
        }
    }

    fn get(&self, slot: u32) -> u32 {
        match self {
            Ranks::BySlot(v) => v[slot as usize],
            Ranks::Map(m) => m[&slot],
        }
    }
}

impl Matcher {
    /// Allocates every pool and table for `config`. Panics on an invalid config; the
    /// configuration loader validates it first with clear errors.
    pub fn new(config: &BookConfig) -> Matcher {
        assert!(config.instruments.len() < usize::from(u16::MAX));
        assert!(config.owners.len() < usize::from(u16::MAX));
        assert!(
            config.orders_max <= super::ORDERS_MAX,
            "orders_max {} is above {}",
            config.orders_max,
            super::ORDERS_MAX
        );
        let books: Vec<Book> = config
            .instruments
            .iter()
            .map(|spec| {
                assert!(spec.tick.0 > 0 && spec.lot > 0 && spec.min_price <= spec.max_price);
                assert!(spec.min_price.0.is_multiple_of(spec.tick.0));
                assert!(
                    spec.ref_price.0.is_multiple_of(spec.tick.0)
                        && spec.ref_price >= spec.min_price
                        && spec.ref_price <= spec.max_price,
                    "{}: ref_price on a tick within the price range",
                    spec.symbol
                );
                assert!(
                    spec.ticks() <= LADDER_TICKS_MAX,
                    "{}: {} ticks in range, at most {LADDER_TICKS_MAX}",
                    spec.symbol,
                    spec.ticks()
                );
                assert!(
                    spec.breaker_bps == 0
                        || (spec.breaker_window_secs > 0
                            && spec.breaker_pause_secs > 0
                            && spec.max_price.0 <= u64::from(u32::MAX)),
                    "{}: a circuit breaker needs a window, a pause and prices below 2^32",
                    spec.symbol
                );
                // Price protection's edges around any price of the range fit in 64 bits
                // (an embedder's prices need not stay below OUCH's limit).
                let bps_max = spec.band_bps.max(spec.fat_finger_bps).max(spec.breaker_bps);
                assert!(
                    spec.max_price
                        .0
                        .checked_mul(10_000 + u64::from(bps_max))
                        .is_some(),
                    "{}: max_price {} with {bps_max} basis points of price protection overflows 64 bits",
                    spec.symbol,
                    spec.max_price.0
                );
                // The trade window holds a bucket a second.
                assert!(
                    spec.breaker_bps == 0 || spec.breaker_window_secs <= 3_600,
                    "{}: breaker_window_secs {} is above 3600",
                    spec.symbol,
                    spec.breaker_window_secs
                );
                let ticks = spec.ticks() as u32;
                Book {
                    spec: *spec,
                    tick: Divisor::new(spec.tick.0),
                    lot: Divisor::new(u64::from(spec.lot)),
                    sides: [
                        Ladder::new(BookSide::Bid, ticks),
                        Ladder::new(BookSide::Ask, ticks),
                    ],
                    reference: spec.ref_price,
                    band: spec.band(spec.ref_price),
                    resting: 0,
                    state: TradingState::Trading,
                    fat_finger: spec.fat_finger(),
                    plain: (
                        spec.min_price.max(spec.fat_finger().0),
                        spec.max_price.min(spec.fat_finger().1),
                    ),
                    pause_until: u64::MAX,
                    window: TradeWindow::new(
                        if spec.breaker_bps == 0 {
                            0
                        } else {
                            spec.breaker_window_secs
                        },
                        spec.ref_price,
                    ),
                    breaker_second: u64::MAX,
                    breaker_range: (Price(0), Price(u64::MAX)),
                }
            })
            .collect();
        let symbols: Vec<Symbol> = config.instruments.iter().map(|spec| spec.symbol).collect();
        let symbols = SymbolTable::new(&symbols).unwrap_or_else(|e| panic!("{e}"));
        let owners = config
            .owners
            .iter()
            .map(|spec| Owner {
                spec: *spec,
                stp: spec.stp.unwrap_or(config.stp),
                last_ref: 0,
            })
            .collect();
        let by_ref = OrderIndex::new(config.owners.len(), config.orders_max);
        Matcher {
            books,
            symbols,
            owners,
            orders: Pool::with_capacity(config.orders_max),
            levels: Pool::with_capacity(config.levels_max),
            by_ref,
            owner_slots: OwnerSlots::new(config.owners.len(), config.orders_max),
            scratch: Vec::with_capacity(config.orders_max as usize),
            ouch_refs: config.refs == RefRule::Ouch,
            next_order_id: 1,
            next_match_id: 1,
            phase: if config.scheduled {
                DayPhase::Closed
            } else {
                DayPhase::Unscheduled
            },
            day_event: None,
            venue_halted: false,
            expiries: BinaryHeap::with_capacity(config.orders_max as usize),
            next_expiry: u64::MAX,
            next_resume: u64::MAX,
            next_deadline: u64::MAX,
        }
    }

    /// Applies one command, writing its events to `out`.
    pub fn apply(&mut self, cmd: &Command, out: &mut impl EventSink) {
        let mut emit = Emitter { ts: cmd.ts, out };
        if cmd.ts.0 >= self.next_deadline {
            self.deadlines_due(&mut emit);
        }
        if let CommandBody::Venue(venue) = &cmd.body {
            return self.venue(venue, &mut emit);
        }
        if usize::from(cmd.owner.0) >= self.owners.len() {
            if let Some(user_ref) = consumed_ref(&cmd.body) {
                emit.reject(cmd.owner, user_ref, RejectReason::UnknownOwner, BLANK_ID);
            }
            return;
        }
        match &cmd.body {
            CommandBody::New(order) => self.new_order(cmd.owner, order, &mut emit),
            CommandBody::Cancel { user_ref, qty } => {
                self.cancel(cmd.owner, *user_ref, *qty, &mut emit)
            }
            CommandBody::Replace(replace) => self.replace(cmd.owner, replace, &mut emit),
            CommandBody::InvalidReplace {
                orig_user_ref,
                user_ref,
                reason,
                clordid,
            } => self.invalid_replace(
                cmd.owner,
                *orig_user_ref,
                *user_ref,
                *reason,
                *clordid,
                &mut emit,
            ),
            CommandBody::Modify {
                user_ref,
                side,
                qty,
            } => self.modify(cmd.owner, *user_ref, *side, *qty, &mut emit),
            CommandBody::MassCancel {
                user_ref,
                firm,
                symbol,
                side,
            } => self.mass_cancel(cmd.owner, *user_ref, *firm, *symbol, *side, &mut emit),
            CommandBody::AccountQuery => {
                // OUCH's UserRefNum is 32 bits: past its last value the answer stays
                // there (with caller keys `last_ref` is 0 and the answer 1).
                let next = self.owners[usize::from(cmd.owner.0)]
                    .last_ref
                    .saturating_add(1)
                    .min(u64::from(u32::MAX));
                emit.event(EventBody::AccountQueried {
                    owner: cmd.owner,
                    next_user_ref: UserRef(next),
                });
            }
            CommandBody::GatewayReject {
                user_ref,
                reason,
                clordid,
            } => emit.reject(cmd.owner, *user_ref, *reason, *clordid),
            // Handled before the owner is looked at.
            CommandBody::Venue(_) => {}
            CommandBody::Disconnect => {
                if self.owners[usize::from(cmd.owner.0)]
                    .spec
                    .cancel_on_disconnect
                {
                    self.cancel_owner_orders(
                        cmd.owner,
                        None,
                        None,
                        CancelReason::Disconnect,
                        &mut emit,
                    );
                }
            }
        }
        #[cfg(debug_assertions)]
        self.debug_check_tops();
    }

    fn new_order(&mut self, owner: OwnerId, o: &NewOrder, emit: &mut Emitter<'_, impl EventSink>) {
        if !self.take_ref(owner, o.user_ref) {
            return emit.reject(
                owner,
                o.user_ref,
                RejectReason::DuplicateUserRef,
                o.echo.clordid,
            );
        }
        let Some(instrument) = self.symbols.get(o.symbol) else {
            return emit.reject(
                owner,
                o.user_ref,
                RejectReason::UnknownInstrument,
                o.echo.clordid,
            );
        };
        let instrument = InstrumentId(instrument);
        let prices = match self.enter_plain(owner, o, instrument, emit) {
            Plain::Rested => return,
            Plain::Priced(prices) => prices,
            Plain::Full => match self.checked_prices(o, instrument) {
                Ok(prices) => prices,
                Err(reason) => return emit.reject(owner, o.user_ref, reason, o.echo.clordid),
            },
        };
        let order_id = self.take_order_id();
        let incoming = Incoming {
            owner,
            user_ref: o.user_ref,
            order_id,
            instrument,
            side: o.side,
            firm: o.firm,
            limit: prices.limit,
            reach: prices.reach,
            guard: prices.guard,
            remaining: o.qty.0,
            executed: 0,
        };
        let entry = Entry {
            tif: o.tif,
            market: o.price.is_none(),
            hidden: o.hidden,
            min_qty: o.min_qty.0,
            max_floor: o.max_floor.0,
            capacity: o.echo.capacity,
            cross_type: o.echo.cross_type,
            customer_type: o.echo.customer_type,
        };
        self.enter(incoming, entry, Some(o), emit);
    }

    /// Every check of a new order, in order: the phase and trading state, then
    /// [`Self::validate`], quotation-only crossing and the pools' room.
    fn checked_prices(
        &self,
        o: &NewOrder,
        instrument: InstrumentId,
    ) -> Result<Prices, RejectReason> {
        self.open_for(instrument, o.tif)?;
        self.validate(
            instrument,
            o.side,
            o.qty.0,
            o.price,
            o.tif,
            o.post_only,
            o.min_qty.0,
            o.max_floor.0,
            o.hidden,
        )
        .and_then(|prices| {
            self.quotation_check(instrument, o.side, prices.limit)?;
            let can_rest = !matches!(o.tif, TimeInForce::Ioc) & o.price.is_some();
            self.check_capacity(instrument, o.side.book_side(), prices, can_rest, None)?;
            Ok(prices)
        })
    }

    /// The common new order, checked with fewer tests: a displayed limit order with no
    /// minimum quantity, reserve or post-only, living at least the day or IOC (not
    /// good-till-time), in an instrument that is trading, at a price inside the band (so
    /// neither repriced nor limited by it), with room in the pools. Such an order that
    /// does not trade (not IOC, not crossing) is put on the book here ([`Plain::Rested`]);
    /// one that may trade gets its prices ([`Plain::Priced`]: its limit, and the band's
    /// other edge as its guard) for [`Self::enter`]. Any other order, having changed
    /// nothing, is left to the full checks ([`Plain::Full`]), which find a reject's reason.
    ///
    /// The checks it fuses are [`Self::open_for`], [`Self::validate`],
    /// [`Self::quotation_check`] and [`Self::check_capacity`] for such an order: the
    /// phase and trading state in two tests, the quantity's range in one, the price's
    /// range and fat-finger range in one range ([`Book::plain`]), then the band; the
    /// crossing test is on tick numbers. Debug builds check that the full checks agree.
    #[inline(always)]
    fn enter_plain(
        &mut self,
        owner: OwnerId,
        o: &NewOrder,
        instrument: InstrumentId,
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> Plain {
        let Some(price) = o.price else {
            return Plain::Full;
        };
        let plain = matches!(
            o.tif,
            TimeInForce::Day | TimeInForce::Ioc | TimeInForce::Gtx | TimeInForce::AfterHours
        ) & ((o.min_qty.0 | o.max_floor.0) == 0)
            & !(o.hidden | o.post_only)
            & !self.venue_halted
            & matches!(self.phase, DayPhase::Unscheduled | DayPhase::Market);
        let book = &self.books[usize::from(instrument.0)];
        if !plain | (book.state != TradingState::Trading) {
            return Plain::Full;
        }
        let qty = o.qty.0;
        // 1..=max_qty in one compare.
        if qty.wrapping_sub(1) >= book.spec.max_qty || !book.lot.divides(u64::from(qty)) {
            return Plain::Full;
        }
        if price < book.plain.0 || price > book.plain.1 || !book.tick.divides(price.0) {
            return Plain::Full;
        }
        // Inside the band: a limit through it is repriced or stopped by the full path.
        if let Some((low, high)) = book.band
            && (price < low || price > high)
        {
            return Plain::Full;
        }
        if self.orders.free_count() == 0 || self.levels.free_count() == 0 {
            return Plain::Full;
        }
        #[cfg(debug_assertions)]
        self.debug_check_plain(o, instrument);
        let side = o.side.book_side();
        if o.tif == TimeInForce::Ioc
            || book.sides[side.opposite().index()].crossed_by(book.tick_of(price))
        {
            return Plain::Priced(Prices {
                limit: price,
                reach: price,
                guard: guard(book.band, side == BookSide::Bid),
            });
        }
        debug_assert!(
            !book
                .best(side.opposite())
                .is_some_and(|(best, _)| side.opposite().crosses(best, price)),
            "{o:?}"
        );
        let incoming = Incoming {
            owner,
            user_ref: o.user_ref,
            order_id: self.take_order_id(),
            instrument,
            side: o.side,
            firm: o.firm,
            limit: price,
            reach: price,
            guard: price,
            remaining: qty,
            executed: 0,
        };
        let entry = Entry {
            tif: o.tif,
            market: false,
            hidden: false,
            min_qty: 0,
            max_floor: 0,
            capacity: o.echo.capacity,
            cross_type: o.echo.cross_type,
            customer_type: o.echo.customer_type,
        };
        self.rest(&incoming, &entry, Arrival::Accepted(o), emit);
        Plain::Rested
    }

    /// That the full checks give an order [`Self::enter_plain`] took the prices it gives.
    #[cfg(debug_assertions)]
    fn debug_check_plain(&self, o: &NewOrder, instrument: InstrumentId) {
        let book = &self.books[usize::from(instrument.0)];
        let limit = o.price.expect("a plain order has a limit");
        let guard = guard(book.band, o.side.book_side() == BookSide::Bid);
        let prices = self
            .checked_prices(o, instrument)
            .map(|prices| (prices.limit, prices.reach, prices.guard));
        assert_eq!(prices, Ok((limit, limit, guard)), "{o:?}");
    }

    /// Pre-trade checks shared by new orders and replaces. Returns the prices the order
    /// rests at and may trade at.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn validate(
        &self,
        instrument: InstrumentId,
        side: Side,
        qty: u32,
        price: Option<Price>,
        tif: TimeInForce,
        post_only: bool,
        min_qty: u32,
        max_floor: u32,
        hidden: bool,
    ) -> Result<Prices, RejectReason> {
        let book = &self.books[usize::from(instrument.0)];
        let spec = &book.spec;
        if let TimeInForce::Gtt { expire_secs } = tif
            && !(1..86_400).contains(&expire_secs)
        {
            return Err(RejectReason::InvalidExpireTime);
        }
        if qty == 0 {
            return Err(RejectReason::ZeroQty);
        }
        if !book.lot.divides(u64::from(qty)) {
            return Err(RejectReason::QtyOffLot);
        }
        if qty > spec.max_qty {
            return Err(RejectReason::QtyAboveMax);
        }
        let buy = side.book_side() == BookSide::Bid;
        let band = book.band;
        debug_assert_eq!(band, spec.band(book.reference));
        let (limit, reach) = match price {
            Some(p) => {
                if p < spec.min_price || p > spec.max_price {
                    return Err(RejectReason::PriceOutOfRange);
                }
                if !book.tick.divides(p.0) {
                    return Err(RejectReason::PriceOffTick);
                }
                if p < book.fat_finger.0 || p > book.fat_finger.1 {
                    return Err(RejectReason::PriceOutsideBand);
                }
                // A limit through the band trades up to the band's edge, rounded to a tick
                // inside it, where its remainder may rest. The edge on the order's side is
                // selected, not branched to (the side is random from order to order:
                // measured, such a branch was mispredicted on a quarter of `book/mixed`'s
                // commands); the branch left, a limit through the band, is rare.
                let (low, high) = band.unwrap_or((Price(0), Price(u64::MAX)));
                let edge = std::hint::select_unpredictable(buy, p.min(high), p.max(low));
                let reach = if edge != p {
                    inside_tick(buy, edge, spec.tick)
                } else {
                    p
                };
                (p, reach)
            }
            None => {
                let (low, high) = band.unwrap_or(book.fat_finger);
                let edge = if buy { high } else { low };
                (edge, edge)
            }
        };
        let guard = guard(band, buy);
        // A minimum quantity is in round lots, as the quantity is (OUCH: "round lot").
        if min_qty > qty || !book.lot.divides(u64::from(min_qty)) {
            return Err(RejectReason::InvalidMinQty);
        }
        if !book.lot.divides(u64::from(max_floor)) || (max_floor > 0 && hidden) {
            return Err(RejectReason::InvalidMaxFloor);
        }
        if post_only {
            if matches!(tif, TimeInForce::Ioc) || price.is_none() {
                return Err(RejectReason::PostOnlyCannotRest);
            }
            let contra = side.book_side().opposite();
            if let Some((best, _)) = book.best(contra)
                && contra.crosses(best, limit)
            {
                return Err(RejectReason::PostOnlyWouldTake);
            }
        }
        Ok(Prices {
            limit,
            reach,
            guard,
        })
    }

    /// Rejects an order that could rest when the pools could not hold it. `frees` is
    /// `Some` for a replace, `Some(true)` if it will empty its level (its slot becomes
    /// free). An order the band may reprice needs the level at its limit and the one at
    /// its band edge, or a free slot (it will use one of the two).
    #[inline]
    fn check_capacity(
        &self,
        instrument: InstrumentId,
        side: BookSide,
        prices: Prices,
        can_rest: bool,
        frees: Option<bool>,
    ) -> Result<(), RejectReason> {
        if !can_rest || (self.orders.free_count() > 0 && self.levels.free_count() > 0) {
            return Ok(());
        }
        self.check_capacity_full(instrument, side, prices, frees)
    }

    /// [`Self::check_capacity`] when a pool is full.
    #[cold]
    fn check_capacity_full(
        &self,
        instrument: InstrumentId,
        side: BookSide,
        prices: Prices,
        frees: Option<bool>,
    ) -> Result<(), RejectReason> {
        let replace_frees_order = frees.is_some();
        let replace_frees_level = frees == Some(true);
        if self.orders.free_count() == 0 && !replace_frees_order {
            return Err(RejectReason::OrderPoolFull);
        }
        if self.levels.free_count() == 0 && !replace_frees_level {
            let book = &self.books[usize::from(instrument.0)];
            let missing = |price| book.sides[side.index()].get(book.tick_of(price)).is_none();
            let repriced = book.spec.band_remainder == BandRemainder::Rest
                && prices.reach != prices.limit
                && missing(prices.reach);
            if missing(prices.limit) || repriced {
                return Err(RejectReason::LevelPoolFull);
            }
        }
        Ok(())
    }

    /// Matches an accepted order, then rests or cancels what is left. A new order comes
    /// with its acknowledgement, `accepted`, still to be written (first of its events).
    #[inline(always)]
    fn enter(
        &mut self,
        inc: Incoming,
        entry: Entry,
        accepted: Option<&NewOrder>,
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        let contra = inc.side.book_side().opposite();
        let book = &self.books[usize::from(inc.instrument.0)];
        let crosses = book
            .best(contra)
            .is_some_and(|(best, _)| contra.crosses(best, inc.limit));
        let ioc = matches!(entry.tif, TimeInForce::Ioc) || entry.market;
        if let Some(order) = accepted {
            if !crosses && !ioc && !entry.hidden {
                // The common case of a passive order: its acknowledgement and the feed's
                // add go to the sink together, as the command and two ids.
                return self.rest(&inc, &entry, Arrival::Accepted(order), emit);
            }
            emit.event(EventBody::Accepted {
                owner: inc.owner,
                order: OrderAck::of_new(order, inc.order_id, inc.instrument),
            });
        }
        // A copy for the matching path, whose calls take its address: the passive path
        // above then keeps the order in registers (measured: 12 instructions an add).
        let mut inc = inc;
        let reason = if !crosses {
            // Nothing to match (the reach is never more aggressive than the limit): the
            // common case of a passive order goes straight to the book.
            ioc.then_some(CancelReason::Ioc)
        } else {
            let meets_min = entry.min_qty == 0
                || self.executable_qty(&inc, entry.min_qty, emit.ts) >= entry.min_qty;
            if meets_min {
                self.sweep(&mut inc, emit);
            }
            if inc.remaining == 0 {
                return;
            }
            if ioc {
                Some(CancelReason::Ioc)
            } else if !meets_min {
                Some(CancelReason::CannotExecute)
            } else {
                self.band_stop(&mut inc, emit)
            }
        };
        match reason {
            Some(reason) => emit.event(EventBody::Canceled {
                owner: inc.owner,
                user_ref: inc.user_ref,
                order_id: inc.order_id,
                qty: Qty(inc.remaining),
                leaves: Qty(0),
                reason,
            }),
            None => {
                self.rest(&inc, &entry, Arrival::Add, emit);
            }
        }
    }

    /// After matching, a remainder that still crosses the book was stopped by the band
    /// (the sweep stops at nothing else while prices cross). With `Cancel`, or when its
    /// band edge would cross too (an order resting beyond the band's other edge blocks
    /// it), returns the cancel reason; with `Rest`, moves its limit to the band edge and
    /// says so. `None`: it rests.
    #[inline]
    fn band_stop(
        &self,
        inc: &mut Incoming,
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> Option<CancelReason> {
        let book = &self.books[usize::from(inc.instrument.0)];
        if book.spec.band_bps == 0 {
            return None;
        }
        let contra = inc.side.book_side().opposite();
        let (best, _) = book.best(contra)?;
        if !contra.crosses(best, inc.limit) {
            return None;
        }
        if book.spec.band_remainder == BandRemainder::Cancel || contra.crosses(best, inc.reach) {
            return Some(CancelReason::PriceBand);
        }
        inc.limit = inc.reach;
        emit.event(EventBody::Repriced {
            owner: inc.owner,
            user_ref: inc.user_ref,
            price: inc.reach,
        });
        None
    }

    /// Shares an incoming order could execute now (at `ts`), counting up to `needed`: the
    /// sweep stops at the band's other edge, at self-trade prevention that cancels the
    /// incoming order, and where the circuit breaker would pause the instrument.
    fn executable_qty(&self, inc: &Incoming, needed: u32, ts: Timestamp) -> u32 {
        let contra = inc.side.book_side().opposite();
        let book = &self.books[usize::from(inc.instrument.0)];
        let ladder = &book.sides[contra.index()];
        let stp = self.owners[usize::from(inc.owner.0)].stp;
        // The breaker's range holds for the whole command (it moves only with whole seconds).
        let breaker = book
            .spec
            .breaker(book.window.reference(book.window.clock(ts), book.reference));
        let mut total: u32 = 0;
        for (_, level) in ladder.iter_best_first() {
            let level = &self.levels[level];
            if !contra.crosses(level.price, inc.reach) || contra.better(level.price, inc.guard) {
                // Beyond the reach, or outside the band: the sweep stops here.
                break;
            }
            // A trade here would pause the instrument (self-trade prevention may still
            // cancel the owner's own orders here without trading, and the sweep go on).
            let trips = breaker.is_some_and(|(low, high)| level.price < low || level.price > high);
            // If the sweep will stop at a displayed order of the taker's firm here (self-trade
            // prevention that cancels the taker), a reserve order ahead of it trades only
            // its displayed part: its refill goes to the back of the displayed queue,
            // behind that order.
            let mut shown_only = false;
            if stp != StpMode::None && stp != StpMode::CancelResting {
                let mut oi = level.shown.head;
                while oi != NIL && !shown_only {
                    shown_only = self.orders[oi].firm == inc.firm;
                    oi = self.orders[oi].next;
                }
            }
            for (queue, displayed) in [(level.shown, true), (level.hidden, false)] {
                let mut oi = queue.head;
                while oi != NIL {
                    let o = &self.orders[oi];
                    if o.firm == inc.firm && stp != StpMode::None {
                        if stp != StpMode::CancelResting {
                            return total;
                        }
                    } else if trips {
                        return total;
                    } else {
                        let executable = if shown_only && displayed {
                            o.shown
                        } else {
                            o.open
                        };
                        total = total.saturating_add(executable);
                        if total >= needed {
                            return total;
                        }
                    }
                    oi = o.next;
                }
            }
        }
        total
    }

    /// Trades the incoming order against the opposite side while prices cross, within
    /// the band, until the circuit breaker trips. Level by level: the price checks are made
    /// once per level, then its orders trade front first until it empties (it leaves the
    /// ladder, whose best moves on) or the incoming order is done.
    ///
    /// Each trade moves the band's centre (`Book::reference`); the band itself is
    /// computed once, after the last one, not at every level (a division's worth of
    /// instructions per level swept).
    fn sweep(&mut self, inc: &mut Incoming, emit: &mut Emitter<'_, impl EventSink>) {
        let bi = usize::from(inc.instrument.0);
        let before = self.books[bi].reference;
        self.sweep_levels(inc, emit);
        let book = &mut self.books[bi];
        if book.reference != before {
            book.band = book.spec.band(book.reference);
        }
    }

    /// [`Self::sweep`] but for the band, which it leaves to it.
    #[inline(always)]
    fn sweep_levels(&mut self, inc: &mut Incoming, emit: &mut Emitter<'_, impl EventSink>) {
        let contra = inc.side.book_side().opposite();
        let bi = usize::from(inc.instrument.0);
        let stp = self.owners[usize::from(inc.owner.0)].stp;
        // Fixed for the day: read once, not per fill.
        let breaker = self.books[bi].spec.breaker_bps != 0;
        while inc.remaining > 0 {
            let Some((tick, level)) = self.books[bi].sides[contra.index()].best() else {
                break;
            };
            let price = self.levels[level].price;
            if !contra.crosses(price, inc.reach) {
                break;
            }
            // Beyond the band's other edge nothing trades, so nothing is prevented either.
            if contra.better(price, inc.guard) {
                break;
            }
            let shown_only = {
                let level = &self.levels[level];
                level.open_qty == level.shown_qty
            };
            if !breaker && shown_only && self.take_level(inc, level, tick, price, stp, emit) {
                continue;
            }
            // Done at an order it does not take in full: no fill of nothing follows.
            if inc.remaining == 0 {
                break;
            }
            loop {
                let oi = self.levels[level].head();
                debug_assert!(oi != NIL, "a level on the ladder is never empty");
                let emptied = if stp != StpMode::None && self.orders[oi].firm == inc.firm {
                    if !self.prevent_self_trade(inc, stp, oi, emit) {
                        return;
                    }
                    self.books[bi].sides[contra.index()].best_tick() != Some(tick)
                } else {
                    let second = if !breaker {
                        0
                    } else {
                        let second = self.books[bi].window.clock(emit.ts);
                        if self.breaker_trips(bi, second, price) {
                            self.pause(inc, emit);
                            return;
                        }
                        second
                    };
                    self.trade(inc, oi, price, second, emit)
                };
                // The level left the ladder with its last order: the next best follows.
                debug_assert_eq!(
                    emptied,
                    self.books[bi].sides[contra.index()].best_tick() != Some(tick)
                );
                if inc.remaining == 0 || emptied {
                    break;
                }
            }
        }
    }

    /// Trades the orders at `level` that fill in full, queue head first: every order
    /// there is displayed in full (the level's open and displayed totals are equal, and no
    /// order's displayed shares exceed its open ones, so no order there is hidden or holds
    /// a reserve beyond its display) and the circuit breaker is off, so each such fill
    /// removes its order. The events are [`Self::trade`]'s, fill by fill; the level's
    /// totals, its queue and the book's count are written once at the end instead of at
    /// each fill, and the filled orders' lines are not written (their slots are freed).
    /// Stops before an order larger than what `inc` has left (the per-order path fills it
    /// in part) and before an order of the incoming order's firm when self-trade
    /// prevention is on (the per-order path prevents it). Returns whether the level
    /// emptied (and left the ladder).
    #[inline(always)]
    fn take_level(
        &mut self,
        inc: &mut Incoming,
        level: u32,
        tick: u32,
        price: Price,
        stp: StpMode,
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> bool {
        let mut oi = self.levels[level].shown.head;
        // Kept in registers through the loop, written back once.
        let mut remaining = inc.remaining;
        let mut match_id = self.next_match_id;
        let mut left = 0u32;
        let contra = inc.side.book_side().opposite();
        while oi != NIL {
            let resting = self.orders[oi];
            if resting.open > remaining || (stp != StpMode::None && resting.firm == inc.firm) {
                break;
            }
            debug_assert!(resting.open == resting.shown && !resting.hidden());
            debug_assert!(resting.level == level && resting.book_side() == contra);
            let qty = resting.open;
            remaining -= qty;
            left += 1;
            emit.fill(fill_record(
                emit.ts,
                price,
                MatchId(match_id),
                (&resting, contra, false),
                inc,
                (qty, 0, remaining),
            ));
            match_id += 1;
            self.release_order(oi, &resting);
            oi = resting.next;
        }
        if left == 0 {
            return false;
        }
        let traded = inc.remaining - remaining;
        inc.remaining = remaining;
        inc.executed += traded;
        self.next_match_id = match_id;
        let book = &mut self.books[usize::from(inc.instrument.0)];
        book.resting -= left;
        book.reference = price;
        let lv = &mut self.levels[level];
        lv.open_qty -= u64::from(traded);
        lv.shown_qty -= u64::from(traded);
        lv.shown.head = oi;
        if oi != NIL {
            self.orders[oi].prev = NIL;
            return false;
        }
        debug_assert!(lv.open_qty == 0 && lv.hidden.head == NIL && lv.price == price);
        lv.shown.tail = NIL;
        self.books[usize::from(inc.instrument.0)].sides[contra.index()].remove(tick);
        self.levels.release(level);
        true
    }

    /// Whether a trade at `price` in `second` would print outside the circuit breaker's
    /// range (the breaker is on).
    #[inline]
    fn breaker_trips(&mut self, bi: usize, second: u64, price: Price) -> bool {
        let book = &mut self.books[bi];
        if second != book.breaker_second {
            let mean = book.window.reference(second, book.reference);
            book.breaker_range = book
                .spec
                .breaker(mean)
                .unwrap_or((Price(0), Price(u64::MAX)));
            book.breaker_second = second;
        }
        price < book.breaker_range.0 || price > book.breaker_range.1
    }

    /// The circuit breaker trips: the instrument pauses for its pause time and the rest of
    /// the incoming order is canceled.
    #[cold]
    #[inline(never)]
    fn pause(&mut self, inc: &mut Incoming, emit: &mut Emitter<'_, impl EventSink>) {
        let book = &mut self.books[usize::from(inc.instrument.0)];
        book.state = TradingState::Paused;
        // Saturating: a caller's timestamps may run to the end of u64 (a pause to the end
        // of time rather than one that ends at once).
        book.pause_until = emit
            .ts
            .0
            .saturating_add(u64::from(book.spec.breaker_pause_secs) * 1_000_000_000);
        self.next_resume = self.next_resume.min(book.pause_until);
        self.next_deadline = self.next_deadline.min(self.next_resume);
        emit.event(EventBody::TradingAction {
            instrument: inc.instrument,
            state: TradingState::Paused,
            reason: *b"LUDP",
        });
        emit.event(EventBody::Canceled {
            owner: inc.owner,
            user_ref: inc.user_ref,
            order_id: inc.order_id,
            qty: Qty(inc.remaining),
            leaves: Qty(0),
            reason: CancelReason::CircuitBreaker,
        });
        inc.remaining = 0;
    }

    /// Applies self-trade prevention; returns whether the incoming order goes on matching.
    fn prevent_self_trade(
        &mut self,
        inc: &mut Incoming,
        stp: StpMode,
        oi: u32,
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> bool {
        let resting = self.orders[oi];
        let price = self.levels[resting.level].price;
        let prevented = Qty(inc.remaining.min(resting.open));
        let cancel_resting = stp != StpMode::CancelIncoming;
        let cancel_incoming = stp != StpMode::CancelResting;
        if cancel_resting {
            emit.event(EventBody::AiqCanceled {
                owner: resting.owner,
                user_ref: resting.user_ref,
                order_id: resting.id,
                qty: Qty(resting.open),
                prevented,
                price,
                liquidity: if resting.hidden() {
                    Liquidity::AddedHidden
                } else {
                    Liquidity::Added
                },
            });
            if !resting.hidden() {
                emit.event(EventBody::MdDelete {
                    instrument: resting.instrument,
                    md_ref: resting.md_ref,
                });
            }
            self.remove_order(oi);
        }
        if cancel_incoming {
            emit.event(EventBody::AiqCanceled {
                owner: inc.owner,
                user_ref: inc.user_ref,
                order_id: inc.order_id,
                qty: Qty(inc.remaining),
                prevented,
                price,
                liquidity: Liquidity::Removed,
            });
            inc.remaining = 0;
            return false;
        }
        true
    }

    /// One match between the incoming order and resting order `oi` (at its level's `price`),
    /// in `second` of the instrument's trade window (unused when its breaker is off).
    /// Returns whether the level emptied (and left the ladder).
    fn trade(
        &mut self,
        inc: &mut Incoming,
        oi: u32,
        price: Price,
        second: u64,
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> bool {
        let match_id = MatchId(self.next_match_id);
        self.next_match_id += 1;
        let o = &mut self.orders[oi];
        let available = if o.hidden() { o.open } else { o.shown };
        let qty = inc.remaining.min(available);
        o.open -= qty;
        if !o.hidden() {
            o.shown -= qty;
        }
        o.executed += qty;
        let resting = *o;
        let level = &mut self.levels[resting.level];
        debug_assert_eq!(level.price, price);
        level.open_qty -= u64::from(qty);
        if !resting.hidden() {
            level.shown_qty -= u64::from(qty);
        }
        inc.remaining -= qty;
        inc.executed += qty;
        let book = &mut self.books[usize::from(inc.instrument.0)];
        if book.spec.breaker_bps != 0 {
            book.window.record(second, price, book.reference);
        }
        book.reference = price;
        emit.fill(fill_record(
            emit.ts,
            price,
            match_id,
            (&resting, resting.book_side(), resting.hidden()),
            inc,
            (qty, resting.open, inc.remaining),
        ));
        if resting.open == 0 {
            return self.remove_filled(oi, &resting);
        }
        if !resting.hidden() && resting.shown == 0 {
            self.refill(oi, emit);
        }
        false
    }

    /// Refills a reserve order's display and sends it to the back of its price.
    fn refill(&mut self, oi: u32, emit: &mut Emitter<'_, impl EventSink>) {
        let md_ref = self.take_order_id();
        self.unlink_from_level(oi);
        let o = &mut self.orders[oi];
        o.shown = o.max_floor.min(o.open);
        o.md_ref = md_ref;
        let o = *o;
        self.levels[o.level].shown_qty += u64::from(o.shown);
        self.link_to_level(oi, o.level);
        emit.event(EventBody::Restated {
            owner: o.owner,
            user_ref: o.user_ref,
            display_qty: Qty(o.shown),
            md_ref,
        });
        emit.event(EventBody::MdAdd {
            instrument: o.instrument,
            md_ref,
            side: o.book_side(),
            qty: Qty(o.shown),
            price: self.levels[o.level].price,
            firm: o.firm,
        });
    }

    /// Puts the rest of an entering order on the book; `arrival` says what the feed gets.
    #[inline(always)]
    fn rest(
        &mut self,
        inc: &Incoming,
        entry: &Entry,
        arrival: Arrival<'_>,
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        let side = inc.side.book_side();
        let shown = match (entry.hidden, entry.max_floor) {
            (true, _) => 0,
            (false, 0) => inc.remaining,
            (false, floor) => floor.min(inc.remaining),
        };
        // The level first (the capacity checks gave the order a slot and its level one, or
        // found its level there), so that the order's line is written once, already
        // linked at the back of its queue.
        let level = self.level_for(inc.instrument, side, inc.limit);
        let tail = self.levels[level].queue(entry.hidden).tail;
        let order = Order {
            id: inc.order_id,
            md_ref: inc.order_id,
            open: inc.remaining,
            shown,
            executed: inc.executed,
            user_ref: inc.user_ref,
            level,
            prev: tail,
            next: NIL,
            owner: inc.owner,
            instrument: inc.instrument,
            firm: inc.firm,
            max_floor: entry.max_floor,
            flags: Order::pack_flags(
                inc.side,
                entry.hidden,
                matches!(entry.tif, TimeInForce::Day),
            ),
            capacity: entry.capacity,
            cross_type: entry.cross_type,
            customer_type: entry.customer_type,
        };
        let oi = self
            .orders
            .try_alloc(order)
            .expect("order pool capacity is checked before an order is accepted");
        self.books[usize::from(inc.instrument.0)].resting += 1;
        if let TimeInForce::Gtt { expire_secs } = entry.tif {
            // Saturating, as a pause's end: never an expiry that wrapped to the past.
            let at = emit
                .ts
                .0
                .saturating_add(u64::from(expire_secs) * 1_000_000_000);
            self.add_expiry(Expiry {
                at,
                id: inc.order_id.0,
                slot: oi,
            });
        }
        if tail != NIL {
            self.orders[tail].next = oi;
        }
        let level = &mut self.levels[level];
        let queue = level.queue(entry.hidden);
        if tail == NIL {
            queue.head = oi;
        }
        queue.tail = oi;
        level.open_qty += u64::from(inc.remaining);
        level.shown_qty += u64::from(shown);
        self.owner_slots.add(oi, inc.owner.0);
        debug_assert!(
            self.indexed(inc.owner.0, inc.user_ref.0).is_none(),
            "a live reference indexed twice"
        );
        self.by_ref.insert(inc.owner.0, inc.user_ref.0, oi);
        if entry.hidden {
            if let Arrival::Accepted(order) = arrival {
                emit.event(EventBody::Accepted {
                    owner: inc.owner,
                    order: OrderAck::of_new(order, inc.order_id, inc.instrument),
                });
            }
            return;
        }
        let md_add = EventBody::MdAdd {
            instrument: inc.instrument,
            md_ref: inc.order_id,
            side,
            qty: Qty(shown),
            price: inc.limit,
            firm: inc.firm,
        };
        match arrival {
            Arrival::Add => emit.event(md_add),
            Arrival::Replace(old_md_ref) => emit.event(EventBody::MdReplace {
                instrument: inc.instrument,
                old_md_ref,
                new_md_ref: inc.order_id,
                qty: Qty(shown),
                price: inc.limit,
            }),
            Arrival::Accepted(order) => {
                let rested = Rested {
                    order_id: inc.order_id,
                    instrument: inc.instrument,
                };
                debug_assert_eq!(
                    rested.ack(order).md_add(),
                    md_add,
                    "the add the sink derives"
                );
                emit.rested(inc.owner, order, rested);
            }
        }
    }

    /// The level at `price`, created if needed.
    #[inline(always)]
    fn level_for(&mut self, instrument: InstrumentId, side: BookSide, price: Price) -> u32 {
        let book = &mut self.books[usize::from(instrument.0)];
        let tick = book.tick_of(price);
        let ladder = &mut book.sides[side.index()];
        if let Some(level) = ladder.get(tick) {
            return level;
        }
        let level = self
            .levels
            .try_alloc(Level {
                price,
                tick,
                ..Level::default()
            })
            .expect("level pool capacity is checked before an order is accepted");
        ladder.insert(tick, level);
        level
    }

    fn cancel(
        &mut self,
        owner: OwnerId,
        user_ref: UserRef,
        qty: Qty,
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        let Some(oi) = self.lookup(owner, user_ref, user_ref, BLANK_ID, emit) else {
            return;
        };
        let o = self.orders[oi];
        // A full cancel (0, on every lot) skips the lot's test: half of a quoting flow.
        if qty.0 != 0
            && !self.books[usize::from(o.instrument.0)]
                .lot
                .divides(u64::from(qty.0))
        {
            return emit.reject(owner, user_ref, RejectReason::QtyOffLot, BLANK_ID);
        }
        if qty.0 >= o.open {
            return emit.event(EventBody::CancelRejected { owner, user_ref });
        }
        self.reduce(oi, qty.0, CancelReason::UserRequested, emit);
    }

    fn modify(
        &mut self,
        owner: OwnerId,
        user_ref: UserRef,
        side: Side,
        qty: Qty,
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        let Some(oi) = self.lookup(owner, user_ref, user_ref, BLANK_ID, emit) else {
            return;
        };
        let o = self.orders[oi];
        if side.book_side() != o.book_side() {
            return emit.reject(owner, user_ref, RejectReason::InvalidSide, BLANK_ID);
        }
        if !self.books[usize::from(o.instrument.0)]
            .lot
            .divides(u64::from(qty.0))
        {
            return emit.reject(owner, user_ref, RejectReason::QtyOffLot, BLANK_ID);
        }
        if qty.0 == 0 {
            return self.reduce(oi, 0, CancelReason::UserRequested, emit);
        }
        self.orders[oi].set_side(side);
        let new_open = qty.0.min(o.open);
        let shown_cut = self.shrink(oi, new_open);
        emit.event(EventBody::Modified {
            owner,
            user_ref,
            side,
            qty: Qty(new_open),
        });
        if shown_cut > 0 {
            emit.event(EventBody::MdCancel {
                instrument: o.instrument,
                md_ref: o.md_ref,
                qty: Qty(shown_cut),
            });
        }
    }

    /// Warms the cache for the commands about to be applied, in a book too large for the
    /// cache: `next` is the command applied after the one about to be, `after` the one
    /// after it. For a command on a live order (cancel, modify, replace) it asks the CPU
    /// for `next`'s order line and for `after`'s index entry (which `next`'s lookup then
    /// finds in cache, a call later), so their memory latency overlaps the commands
    /// before them. A hint: nothing changes, and a reference that names no live order
    /// warms nothing useful. Only references in the index's per-owner windows are
    /// followed (OUCH references, and caller keys from a counter): a key in the hash
    /// behind them gets no prefetch of its line (`book/keyed`, such keys: no change
    /// measured; `book/keyed_seq`, a counter: 6-14% faster). Below
    /// [`PREFETCH_ORDERS_MIN`] resting orders it does nothing.
    ///
    /// The pipeline's matcher stage calls it before each command, looking two ahead in its
    /// input ring; an embedder applying a slice of commands does the same:
    ///
    /// ```
    /// # use ironmatch::book::{flow::test_config, Command, Matcher, StpMode};
    /// # let config = test_config(StpMode::CancelResting);
    /// # let mut matcher = Matcher::new(&config);
    /// # let commands: Vec<Command> = Vec::new();
    /// let mut events = Vec::new();
    /// for (i, cmd) in commands.iter().enumerate() {
    ///     matcher.prefetch(commands.get(i + 1), commands.get(i + 2));
    ///     matcher.apply(cmd, &mut events);
    /// }
    /// ```
    #[inline]
    pub fn prefetch(&self, next: Option<&Command>, after: Option<&Command>) {
        if self.orders.used_count() < PREFETCH_ORDERS_MIN {
            return;
        }
        if let Some((owner, key)) = after.and_then(|c| self.target(c)) {
            self.by_ref.prefetch(owner, key.0);
        }
        // The window only: a probe of the hash behind it would wait for memory here, before
        // the current command, which is what the prefetch is for avoiding.
        if let Some((owner, key)) = next.and_then(|c| self.target(c))
            && let Some(oi) = self.by_ref.get_recent(owner, key.0)
        {
            super::prefetch::prefetch(&self.orders[oi]);
        }
    }

    /// The live order `cmd` names, if it names one: `(owner, reference)`.
    #[inline(always)]
    fn target(&self, cmd: &Command) -> Option<(u16, UserRef)> {
        let key = match &cmd.body {
            CommandBody::Cancel { user_ref, .. } | CommandBody::Modify { user_ref, .. } => {
                *user_ref
            }
            CommandBody::Replace(r) => r.orig_user_ref,
            _ => return None,
        };
        (usize::from(cmd.owner.0) < self.owners.len()).then_some((cmd.owner.0, key))
    }

    /// Finds a live order of `owner`, or rejects `reply_ref` saying why not.
    #[inline(always)]
    fn lookup(
        &self,
        owner: OwnerId,
        user_ref: UserRef,
        reply_ref: UserRef,
        clordid: [u8; 14],
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> Option<u32> {
        if let Some(oi) = self.indexed(owner.0, user_ref.0) {
            return Some(oi);
        }
        // With caller keys `last_ref` stays 0: a key that is not live is unknown.
        let reason = if user_ref.0 != 0 && user_ref.0 <= self.owners[usize::from(owner.0)].last_ref
        {
            RejectReason::OrderNotLive
        } else {
            RejectReason::UnknownOrder
        };
        emit.reject(owner, reply_ref, reason, clordid);
        None
    }

    /// Lowers an order's open quantity to `new_open` (> 0), reserve first. Returns the
    /// displayed shares removed.
    fn shrink(&mut self, oi: u32, new_open: u32) -> u32 {
        let o = &mut self.orders[oi];
        debug_assert!(new_open > 0 && new_open <= o.open);
        let open_cut = o.open - new_open;
        o.open = new_open;
        let cut = o.shown.saturating_sub(new_open);
        o.shown -= cut;
        let level = &mut self.levels[o.level];
        level.open_qty -= u64::from(open_cut);
        level.shown_qty -= u64::from(cut);
        cut
    }

    /// Cancels an order down to `new_open` shares (0 = all), with its events.
    #[inline(always)]
    fn reduce(
        &mut self,
        oi: u32,
        new_open: u32,
        reason: CancelReason,
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        let o = self.orders[oi];
        if new_open == 0 && !o.hidden() {
            emit.removed(Removal {
                ts: emit.ts,
                user_ref: o.user_ref,
                order_id: o.id,
                md_ref: o.md_ref,
                qty: Qty(o.open),
                owner: o.owner,
                instrument: o.instrument,
                reason,
            });
            self.remove_resting(oi, &o);
            return;
        }
        emit.event(EventBody::Canceled {
            owner: o.owner,
            user_ref: o.user_ref,
            order_id: o.id,
            qty: Qty(o.open - new_open),
            leaves: Qty(new_open),
            reason,
        });
        if new_open == 0 {
            self.remove_resting(oi, &o);
            return;
        }
        let cut = self.shrink(oi, new_open);
        if cut > 0 {
            emit.event(EventBody::MdCancel {
                instrument: o.instrument,
                md_ref: o.md_ref,
                qty: Qty(cut),
            });
        }
    }

    /// A replace the gateway refused ([`CommandBody::InvalidReplace`]): found and fresh as
    /// a replace must be, and the instrument not halted or paused (then it is rejected as
    /// halted, the original kept, as any replace), it is rejected and the original
    /// canceled.
    #[cold]
    #[inline(never)]
    fn invalid_replace(
        &mut self,
        owner: OwnerId,
        orig_user_ref: UserRef,
        user_ref: UserRef,
        reason: RejectReason,
        clordid: [u8; 14],
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        let Some(oi) = self.lookup(owner, orig_user_ref, user_ref, clordid, emit) else {
            return;
        };
        let fresh = if self.ouch_refs {
            user_ref.0 > self.owners[usize::from(owner.0)].last_ref
        } else {
            user_ref.0 == orig_user_ref.0 || self.indexed(owner.0, user_ref.0).is_none()
        };
        if !fresh {
            return emit.reject(owner, user_ref, RejectReason::DuplicateUserRef, clordid);
        }
        // Halted or paused, a replace is refused and its original stays, whatever else
        // is wrong with it (a replace checks this before its fields).
        if matches!(
            self.trading_state(self.orders[oi].instrument),
            TradingState::Halted | TradingState::Paused
        ) {
            return emit.reject(owner, user_ref, RejectReason::Halted, clordid);
        }
        emit.reject(owner, user_ref, reason, clordid);
        self.reduce(oi, 0, CancelReason::ReplaceFailed, emit)
    }

    fn replace(
        &mut self,
        owner: OwnerId,
        r: &ReplaceOrder,
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        let Some(oi) = self.lookup(owner, r.orig_user_ref, r.user_ref, r.echo.clordid, emit) else {
            return;
        };
        let fresh = if self.ouch_refs {
            r.user_ref.0 > self.owners[usize::from(owner.0)].last_ref
        } else {
            r.user_ref.0 == r.orig_user_ref.0 || self.indexed(owner.0, r.user_ref.0).is_none()
        };
        if !fresh {
            return emit.reject(
                owner,
                r.user_ref,
                RejectReason::DuplicateUserRef,
                r.echo.clordid,
            );
        }
        let orig = self.orders[oi];
        if let Err(reason) = self.open_for(orig.instrument, r.tif) {
            // The original order stays as it was.
            return emit.reject(owner, r.user_ref, reason, r.echo.clordid);
        }
        let new_open = r.qty.0.saturating_sub(orig.executed);
        let level_freed = {
            let level = &self.levels[orig.level];
            orig.prev == NIL && orig.next == NIL && level.head() == oi && {
                let other = if orig.hidden() {
                    level.shown.head
                } else {
                    level.hidden.head
                };
                other == NIL
            }
        };
        let check = self
            .validate(
                orig.instrument,
                orig.side(),
                new_open,
                Some(r.price),
                r.tif,
                r.post_only,
                r.min_qty.0,
                r.max_floor.0,
                r.hidden,
            )
            .and_then(|prices| {
                let can_rest = !matches!(r.tif, TimeInForce::Ioc);
                self.check_capacity(
                    orig.instrument,
                    orig.book_side(),
                    prices,
                    can_rest,
                    Some(level_freed),
                )
                .map(|()| prices)
            });
        let prices = match check {
            Ok(prices) => prices,
            Err(reason) => {
                emit.reject(owner, r.user_ref, reason, r.echo.clordid);
                return self.reduce(oi, 0, CancelReason::ReplaceFailed, emit);
            }
        };
        let limit = prices.limit;
        if let Err(reason) = self.quotation_check(orig.instrument, orig.side(), limit) {
            // Quotation only and the new order would execute: the original stays.
            return emit.reject(owner, r.user_ref, reason, r.echo.clordid);
        }
        if self.ouch_refs {
            self.owners[usize::from(owner.0)].last_ref = r.user_ref.0;
        }
        let contra = orig.book_side().opposite();
        let marketable = self.books[usize::from(orig.instrument.0)]
            .best(contra)
            .is_some_and(|(best, _)| contra.crosses(best, limit));
        self.remove_order(oi);
        let order_id = self.take_order_id();
        emit.event(EventBody::Replaced {
            owner,
            orig_user_ref: orig.user_ref,
            order: OrderAck {
                user_ref: r.user_ref,
                order_id,
                instrument: orig.instrument,
                side: orig.side(),
                qty: Qty(new_open),
                price: r.price,
                tif: r.tif,
                hidden: r.hidden,
                post_only: r.post_only,
                min_qty: r.min_qty,
                max_floor: r.max_floor,
                firm: orig.firm,
                echo: Echo {
                    capacity: orig.capacity,
                    cross_type: orig.cross_type,
                    customer_type: orig.customer_type,
                    ..r.echo
                },
            },
        });
        let inc = Incoming {
            owner,
            user_ref: r.user_ref,
            order_id,
            instrument: orig.instrument,
            side: orig.side(),
            firm: orig.firm,
            limit,
            reach: prices.reach,
            guard: prices.guard,
            remaining: new_open,
            // The chain's executions carry over, for the next replace's quantity.
            executed: orig.executed,
        };
        let entry = Entry {
            tif: r.tif,
            market: false,
            hidden: r.hidden,
            min_qty: r.min_qty.0,
            max_floor: r.max_floor.0,
            capacity: orig.capacity,
            cross_type: orig.cross_type,
            customer_type: orig.customer_type,
        };
        if !orig.hidden() && !r.hidden && !matches!(r.tif, TimeInForce::Ioc) && !marketable {
            return self.rest(&inc, &entry, Arrival::Replace(orig.md_ref), emit);
        }
        if !orig.hidden() {
            emit.event(EventBody::MdDelete {
                instrument: orig.instrument,
                md_ref: orig.md_ref,
            });
        }
        self.enter(inc, entry, None, emit);
    }

    #[cold]
    #[inline(never)]
    fn mass_cancel(
        &mut self,
        owner: OwnerId,
        user_ref: UserRef,
        firm: Firm,
        symbol: Symbol,
        side: Option<Side>,
        emit: &mut Emitter<'_, impl EventSink>,
    ) {
        if self.ouch_refs && !self.take_ref(owner, user_ref) {
            return emit.reject(owner, user_ref, RejectReason::DuplicateUserRef, BLANK_ID);
        }
        if firm != self.owners[usize::from(owner.0)].spec.firm {
            return emit.reject(owner, user_ref, RejectReason::FirmNotAuthorized, BLANK_ID);
        }
        let instrument = if symbol == Symbol::BLANK {
            None
        } else {
            match self.symbols.get(symbol) {
                Some(i) => Some(InstrumentId(i)),
                None => {
                    return emit.reject(owner, user_ref, RejectReason::UnknownInstrument, BLANK_ID);
                }
            }
        };
        let count = self.cancel_owner_orders(
            owner,
            instrument,
            side.map(Side::book_side),
            CancelReason::UserRequested,
            emit,
        );
        emit.event(EventBody::mass_canceled(
            owner, user_ref, firm, symbol, side, count,
        ));
    }

    /// Cancels the owner's orders that match the filters, oldest first. Returns how many.
    #[cold]
    #[inline(never)]
    fn cancel_owner_orders(
        &mut self,
        owner: OwnerId,
        instrument: Option<InstrumentId>,
        side: Option<BookSide>,
        reason: CancelReason,
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> u32 {
        let mut count = 0;
        let mut slots = self.owner_orders(owner.0);
        for &Gathered { slot: oi, .. } in &slots {
            let o = self.orders[oi];
            if instrument.is_none_or(|i| i == o.instrument)
                && side.is_none_or(|s| s == o.book_side())
            {
                self.reduce(oi, 0, reason, emit);
                count += 1;
            }
        }
        slots.clear();
        self.scratch = slots;
        count
    }

    /// `owner`'s resting orders in order of entry (order ids grow with each order that
    /// rests, so that is the order of their ids), in the scratch buffer taken out of
    /// `self`: the caller puts it back, cleared.
    fn owner_orders(&mut self, owner: u16) -> Vec<Gathered> {
        let mut gathered = std::mem::take(&mut self.scratch);
        let orders = &self.orders;
        self.owner_slots.gather(owner, |slot| {
            gathered.push(Gathered {
                id: orders[slot].id.0,
                slot,
            })
        });
        gathered.sort_unstable_by_key(|g| g.id);
        gathered
    }

    /// Whether a new order (or a replace's new order) with `tif` may enter `instrument`
    /// now: the phase of the day, then the trading state.
    #[inline]
    fn open_for(&self, instrument: InstrumentId, tif: TimeInForce) -> Result<(), RejectReason> {
        if !tif.accepted_in(self.phase) {
            return Err(RejectReason::Closed);
        }
        match self.trading_state(instrument) {
            TradingState::Trading | TradingState::QuotationOnly => Ok(()),
            TradingState::Halted | TradingState::Paused => Err(RejectReason::Halted),
        }
    }

    /// In quotation only, an order that would cross the book is rejected as halted.
    #[inline]
    fn quotation_check(
        &self,
        instrument: InstrumentId,
        side: Side,
        limit: Price,
    ) -> Result<Price, RejectReason> {
        let book = &self.books[usize::from(instrument.0)];
        if book.state == TradingState::QuotationOnly && !self.venue_halted {
            let contra = side.book_side().opposite();
            if book
                .best(contra)
                .is_some_and(|(best, _)| contra.crosses(best, limit))
            {
                return Err(RejectReason::Halted);
            }
        }
        Ok(limit)
    }

    /// The trading state in force for `instrument` (the venue halt counts). Panics if
    /// `instrument` is not configured.
    pub fn trading_state(&self, instrument: InstrumentId) -> TradingState {
        if self.venue_halted {
            TradingState::Halted
        } else {
            self.books[usize::from(instrument.0)].state
        }
    }

    /// Where the trading day stands.
    pub fn phase(&self) -> DayPhase {
        self.phase
    }

    /// The day's last transition, if any.
    pub fn last_day_event(&self) -> Option<DayEvent> {
        self.day_event
    }

    /// Whether the venue-wide halt is on.
    pub fn venue_halted(&self) -> bool {
        self.venue_halted
    }

    /// The matcher's next deadline (ns since midnight), if it has one: the earliest time a
    /// good-till-time order may expire or a circuit-breaker pause ends. Deadlines are met
    /// by the first command whose timestamp has reached them, before the command itself;
    /// the pipeline sends a [`VenueCommand::Timer`] at this time if nothing else comes.
    /// It changes only in [`apply`](Self::apply), so a caller reads it after each command
    /// (or batch) and sets its timer. Replaces `next_expiry`, which knew only expiries.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        (self.next_deadline != u64::MAX).then_some(Timestamp(self.next_deadline))
    }

    /// Meets every deadline the command's timestamp has reached: good-till-time orders
    /// expire, then paused instruments resume.
    #[cold]
    #[inline(never)]
    fn deadlines_due(&mut self, emit: &mut Emitter<'_, impl EventSink>) {
        if emit.ts.0 >= self.next_expiry {
            self.expire_due(emit);
        }
        if emit.ts.0 >= self.next_resume {
            self.resume_due(emit);
        }
        self.next_deadline = self.next_expiry.min(self.next_resume);
    }

    /// Ends every circuit-breaker pause whose time has come, in instrument order. The
    /// trading action goes out only if the state in force changes (not under the venue
    /// halt).
    fn resume_due(&mut self, emit: &mut Emitter<'_, impl EventSink>) {
        for i in 0..self.books.len() {
            if self.books[i].pause_until <= emit.ts.0 {
                self.books[i].pause_until = u64::MAX;
                self.books[i].state = TradingState::Trading;
                if !self.venue_halted {
                    emit.event(EventBody::TradingAction {
                        instrument: InstrumentId(i as u16),
                        state: TradingState::Trading,
                        reason: *b"    ",
                    });
                }
            }
        }
        self.refresh_next_resume();
    }

    fn refresh_next_resume(&mut self) {
        self.next_resume = self
            .books
            .iter()
            .map(|b| b.pause_until)
            .min()
            .unwrap_or(u64::MAX);
        self.next_deadline = self.next_expiry.min(self.next_resume);
    }

    fn add_expiry(&mut self, entry: Expiry) {
        if self.expiries.len() == self.expiries.capacity() {
            // Full of entries, some of orders that left early: keep the live ones. The
            // heap holds as many entries as the pool holds orders, so there is room after.
            let mut expiries = std::mem::take(&mut self.expiries);
            expiries.retain(|Reverse(e)| self.holds(e.slot, e.id));
            self.expiries = expiries;
        }
        self.expiries.push(Reverse(entry));
        self.next_expiry = self.next_expiry.min(entry.at);
        self.next_deadline = self.next_deadline.min(entry.at);
    }

    /// Cancels every good-till-time order whose time has come by the command's timestamp,
    /// earliest first (ties: older order first).
    fn expire_due(&mut self, emit: &mut Emitter<'_, impl EventSink>) {
        while let Some(&Reverse(Expiry { at, id, slot })) = self.expiries.peek() {
            if at > emit.ts.0 {
                break;
            }
            self.expiries.pop();
            if self.holds(slot, id) {
                self.reduce(slot, 0, CancelReason::Expired, emit);
            }
        }
        self.next_expiry = self.expiries.peek().map_or(u64::MAX, |e| e.0.at);
    }

    /// A command of the venue's schedule, clock or operator.
    #[cold]
    #[inline(never)]
    fn venue(&mut self, command: &VenueCommand, emit: &mut Emitter<'_, impl EventSink>) {
        match *command {
            VenueCommand::Timer => {}
            VenueCommand::SystemEvent(event) => {
                self.phase = event.phase_after();
                self.day_event = Some(event);
                emit.event(EventBody::SystemEvent { event });
                match event {
                    DayEvent::EndOfMarketHours => {
                        self.cancel_where_emit(CancelReason::Closed, emit, |o| o.day_only());
                    }
                    DayEvent::EndOfSystemHours | DayEvent::EndOfMessages => {
                        self.cancel_where_emit(CancelReason::Closed, emit, |_| true);
                        // Nothing rests: every expiry left is of an order that is gone
                        // (it would only wake the engine for nothing).
                        self.expiries.clear();
                        self.next_expiry = u64::MAX;
                        self.next_deadline = self.next_resume;
                    }
                    _ => {}
                }
            }
            VenueCommand::Operator { request, action } => {
                let outcome = self.operator(action, emit);
                emit.event(EventBody::OperatorDone { request, outcome });
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn operator(
        &mut self,
        action: OperatorAction,
        emit: &mut Emitter<'_, impl EventSink>,
    ) -> OperatorOutcome {
        let instrument_of = |m: &Matcher, symbol: Symbol| m.symbols.get(symbol);
        match action {
            OperatorAction::SetState {
                symbol,
                state,
                reason,
                cancel_resting,
            } => {
                let Some(i) = instrument_of(self, symbol) else {
                    return OperatorOutcome::UnknownSymbol;
                };
                // The operator's state overrides a circuit-breaker pause (no resume later).
                self.books[usize::from(i)].state = state;
                if self.books[usize::from(i)].pause_until != u64::MAX {
                    self.books[usize::from(i)].pause_until = u64::MAX;
                    self.refresh_next_resume();
                }
                emit.event(EventBody::TradingAction {
                    instrument: InstrumentId(i),
                    state: self.trading_state(InstrumentId(i)),
                    reason,
                });
                let canceled = if cancel_resting {
                    self.cancel_where_emit(CancelReason::Halted, emit, |o| o.instrument.0 == i)
                } else {
                    0
                };
                OperatorOutcome::Done { canceled }
            }
            OperatorAction::VenueHalt(on) => {
                let in_force = |halted: bool, own: TradingState| {
                    if halted { TradingState::Halted } else { own }
                };
                let before = self.venue_halted;
                for i in 0..self.books.len() {
                    let instrument = InstrumentId(i as u16);
                    let own = self.books[i].state;
                    let (was, now) = (in_force(before, own), in_force(on, own));
                    if was != now {
                        emit.event(EventBody::TradingAction {
                            instrument,
                            state: now,
                            reason: if on { *b"O1  " } else { *b"    " },
                        });
                    }
                }
                self.venue_halted = on;
                OperatorOutcome::Done { canceled: 0 }
            }
            OperatorAction::CancelUser(owner) => {
                if usize::from(owner.0) >= self.owners.len() {
                    return OperatorOutcome::UnknownUser;
                }
                let canceled =
                    self.cancel_owner_orders(owner, None, None, CancelReason::Supervisory, emit);
                OperatorOutcome::Done { canceled }
            }
            OperatorAction::CancelInstrument(symbol) => {
                let Some(i) = instrument_of(self, symbol) else {
                    return OperatorOutcome::UnknownSymbol;
                };
                let canceled = self
                    .cancel_where_emit(CancelReason::Supervisory, emit, |o| o.instrument.0 == i);
                OperatorOutcome::Done { canceled }
            }
        }
    }

    /// Cancels every resting order `keep` selects, owner by owner (owner 0 first), each
    /// owner's in order of entry. Returns how many.
    fn cancel_where_emit(
        &mut self,
        reason: CancelReason,
        emit: &mut Emitter<'_, impl EventSink>,
        select: impl Fn(&Order) -> bool,
    ) -> u32 {
        let mut count = 0;
        for owner in 0..self.owners.len() as u16 {
            let mut slots = self.owner_orders(owner);
            for &Gathered { slot: oi, .. } in &slots {
                if select(&self.orders[oi]) {
                    self.reduce(oi, 0, reason, emit);
                    count += 1;
                }
            }
            slots.clear();
            self.scratch = slots;
        }
        count
    }

    /// Whether `owner` may use `user_ref` for a new order (and, with OUCH's rule, uses it
    /// up): above every reference before it ([`RefRule::Ouch`]), or not the key of a live
    /// order ([`RefRule::Keys`]).
    #[inline(always)]
    fn take_ref(&mut self, owner: OwnerId, user_ref: UserRef) -> bool {
        if self.ouch_refs {
            let last = &mut self.owners[usize::from(owner.0)].last_ref;
            if user_ref.0 <= *last {
                return false;
            }
            *last = user_ref.0;
            true
        } else {
            self.indexed(owner.0, user_ref.0).is_none()
        }
    }

    /// The slot of `owner`'s live order `key`.
    #[inline(always)]
    fn indexed(&self, owner: u16, key: u64) -> Option<u32> {
        self.by_ref
            .get(owner, key, |slot| key_of(&self.orders, slot))
    }

    /// Whether `slot` still holds live order `id`. A freed slot keeps its last order's
    /// line until reused, so the line's id alone is not enough: the index must also name
    /// this slot for the line's reference (it no longer does once the order left).
    fn holds(&self, slot: u32, id: u64) -> bool {
        let o = &self.orders[slot];
        o.id.0 == id && self.indexed(o.owner.0, o.user_ref.0) == Some(slot)
    }

    fn take_order_id(&mut self) -> OrderId {
        let id = OrderId(self.next_order_id);
        self.next_order_id += 1;
        id
    }

    /// Appends order `oi` to the back of its queue in `level`.
    #[inline(always)]
    fn link_to_level(&mut self, oi: u32, level: u32) {
        let hidden = self.orders[oi].hidden();
        let queue = self.levels[level].queue(hidden);
        let tail = queue.tail;
        if tail == NIL {
            queue.head = oi;
        } else {
            self.orders[tail].next = oi;
        }
        queue.tail = oi;
        let o = &mut self.orders[oi];
        o.prev = tail;
        o.next = NIL;
    }

    /// Takes order `oi` out of its queue; the level may be left empty.
    #[inline(always)]
    fn unlink_from_level(&mut self, oi: u32) {
        let o = self.orders[oi];
        self.unlink(oi, &o);
    }

    /// Takes order `oi` out of its queue, from `o`, a copy of its line (its queue links,
    /// level and hiddenness are what is read). Its own line's links are left undefined:
    /// the caller frees the slot or links it again.
    ///
    /// Without branches on where the order sits: each of the four links is written
    /// unconditionally, its target selected. A neighbour's link if there is one, else the
    /// order's own line (written, then never read as such); the queue's end takes the
    /// neighbour if it was the order, else keeps its value. A cancel's order sits anywhere in
    /// its queue, so branches on `prev`/`next` are hard to predict (callgrind's model
    /// counted them mispredicted 0.38 times a command of `book/mixed` and 0.25 of
    /// `book/wide`; a model that a later try found does not predict this CPU's times, so
    /// the timings are the reason kept). Measured (README, "Queue
    /// links without branches"): `wide` 1.04-1.06x, `mixed` 1.02-1.04x; 5 to 9 more
    /// instructions a cancel, so a flow whose cancels hit long queues, where the branches
    /// were predicted, may lose a few percent (`cancel` 0.95-1.02x, within its spread).
    #[inline(always)]
    fn unlink(&mut self, oi: u32, o: &Order) {
        let first = o.prev == NIL;
        let last = o.next == NIL;
        let before = std::hint::select_unpredictable(first, oi, o.prev);
        let after = std::hint::select_unpredictable(last, oi, o.next);
        self.orders[before].next = o.next;
        self.orders[after].prev = o.prev;
        let queue = self.levels[o.level].queue(o.hidden());
        queue.head = std::hint::select_unpredictable(first, o.next, queue.head);
        queue.tail = std::hint::select_unpredictable(last, o.prev, queue.tail);
    }

    /// Removes a resting order everywhere, freeing its level if it was the last one.
    #[inline(always)]
    fn remove_order(&mut self, oi: u32) {
        let o = self.orders[oi];
        self.remove_resting(oi, &o);
    }

    /// [`Self::remove_order`] with the order's line already read: `o` is a copy of slot
    /// `oi`'s line as it is now (a trade or a cancel has just read it), so the line is not
    /// read again.
    #[inline(always)]
    fn remove_resting(&mut self, oi: u32, o: &Order) {
        debug_assert!({
            let now = &self.orders[oi];
            (now.prev, now.next, now.level, now.open, now.shown)
                == (o.prev, o.next, o.level, o.open, o.shown)
        });
        self.unlink(oi, o);
        self.release_order(oi, o);
        self.books[usize::from(o.instrument.0)].resting -= 1;
        let level = &mut self.levels[o.level];
        level.open_qty -= u64::from(o.open);
        level.shown_qty -= u64::from(o.shown);
        if level.head() == NIL {
            debug_assert!(level.open_qty == 0 && level.shown_qty == 0);
            let tick = level.tick;
            self.books[usize::from(o.instrument.0)].sides[o.book_side().index()].remove(tick);
            self.levels.release(o.level);
        }
    }

    /// Frees order `oi`'s slot, its owner's mark on it and its index entry (`o`: a copy of
    /// its line); its queue and level are the caller's.
    #[inline(always)]
    fn release_order(&mut self, oi: u32, o: &Order) {
        self.owner_slots.remove(oi);
        self.by_ref
            .remove_live(o.owner.0, o.user_ref.0, oi, |slot| {
                key_of(&self.orders, slot)
            });
        self.orders.release(oi);
    }

    /// [`Self::remove_resting`] for an order a trade has just filled in full: the head of
    /// its queue (the sweep trades only heads), its shares already taken off its level's
    /// totals by the trade. `o` is a copy of its line as it is now. Returns whether its
    /// level emptied (and left the ladder).
    #[inline(always)]
    fn remove_filled(&mut self, oi: u32, o: &Order) -> bool {
        debug_assert!(o.prev == NIL && o.open == 0 && o.shown == 0);
        let next = o.next;
        if next != NIL {
            self.orders[next].prev = NIL;
        }
        let level = &mut self.levels[o.level];
        let queue = level.queue(o.hidden());
        debug_assert_eq!(queue.head, oi);
        queue.head = next;
        if next == NIL {
            queue.tail = NIL;
        }
        let emptied = level.head() == NIL;
        let tick = level.tick;
        self.release_order(oi, o);
        let book = &mut self.books[usize::from(o.instrument.0)];
        book.resting -= 1;
        if emptied {
            debug_assert!({
                let level = &self.levels[o.level];
                level.open_qty == 0 && level.shown_qty == 0
            });
            book.sides[o.book_side().index()].remove(tick);
            self.levels.release(o.level);
        }
        emptied
    }

    /// Cheap check after each command in debug builds: no book is crossed at rest.
    #[cfg(debug_assertions)]
    fn debug_check_tops(&self) {
        for book in &self.books {
            if let (Some((bid, _)), Some((ask, _))) = (book.sides[0].best(), book.sides[1].best()) {
                assert!(bid < ask, "{} crossed at rest", book.spec.symbol);
            }
        }
    }

    /// The least memory [`Matcher::new`] allocates for `config`, without allocating it: the
    /// order and level pools with their free lists, the expiry heap, the mass-cancel
    /// scratch and the slots' owners (the reference index, the ladders and the symbol
    /// table come on top), so a configuration no machine could hold is refused by name
    /// before the allocation fails.
    pub fn memory_floor(config: &BookConfig) -> u64 {
        let per_order = std::mem::size_of::<Order>()
            + std::mem::size_of::<u32>()
            + std::mem::size_of::<Reverse<Expiry>>()
            + std::mem::size_of::<Gathered>()
            + std::mem::size_of::<u16>();
        let per_level = std::mem::size_of::<Level>() + std::mem::size_of::<u32>();
        u64::from(config.orders_max) * per_order as u64
            + u64::from(config.levels_max) * per_level as u64
    }

    /// Bytes allocated at start-up for books, pools and the reference index, and the part
    /// of it that grows with each order slot (order pool, free list, index).
    pub fn footprint_bytes(&self) -> (usize, usize) {
        let ladders: usize = self
            .books
            .iter()
            .map(|b| b.sides.iter().map(Ladder::bytes).sum::<usize>())
            .sum();
        // The expiry heap is reserved for every slot (resident only as good-till-time
        // orders use it).
        let per_order = self.orders.bytes()
            + self.expiries.capacity() * std::mem::size_of::<Reverse<Expiry>>()
            + self.by_ref.bytes()
            + self.owner_slots.bytes()
            + self.scratch.capacity() * std::mem::size_of::<Gathered>();
        (
            per_order + self.levels.bytes() + ladders + self.symbols.bytes(),
            per_order,
        )
    }

    /// Number of resting orders.
    pub fn resting_orders(&self) -> usize {
        self.orders.used_count()
    }

    /// Number of orders resting in `instrument`'s book (displayed, reserve and hidden).
    /// O(1). Panics if `instrument` is not configured.
    pub fn resting_orders_in(&self, instrument: InstrumentId) -> usize {
        self.books[usize::from(instrument.0)].resting as usize
    }

    /// The instrument traded as `symbol`, for the queries below.
    pub fn instrument(&self, symbol: Symbol) -> Option<InstrumentId> {
        self.symbols.get(symbol).map(InstrumentId)
    }

    /// Best bid and best offer of `instrument` (`[bid, ask]`), displayed or not: a level
    /// holding only hidden orders is a best price with `shown_qty` 0 (what a public feed
    /// shows is the best level whose `shown_qty` is above 0). O(1). Panics if
    /// `instrument` is not configured.
    pub fn best_bid_offer(&self, instrument: InstrumentId) -> [Option<LevelView>; 2] {
        let book = &self.books[usize::from(instrument.0)];
        [BookSide::Bid, BookSide::Ask]
            .map(|side| book.best(side).map(|(_, level)| self.level_view(level)))
    }

    /// The level of `instrument` at `price` on `side`, if orders rest there (displayed or
    /// not); `None` for a price off the instrument's ticks or range. O(1). Panics if
    /// `instrument` is not configured.
    pub fn level_at(
        &self,
        instrument: InstrumentId,
        side: BookSide,
        price: Price,
    ) -> Option<LevelView> {
        let book = &self.books[usize::from(instrument.0)];
        let spec = &book.spec;
        if price < spec.min_price || price > spec.max_price || !book.tick.divides(price.0) {
            return None;
        }
        book.sides[side.index()]
            .get(book.tick_of(price))
            .map(|level| self.level_view(level))
    }

    /// Fills `out` with the levels of `instrument` on `side`, best first, those holding
    /// only hidden orders included (`shown_qty` 0); returns how many it wrote (at most
    /// `out.len()`). O(levels written); never allocates. Panics if `instrument` is not
    /// configured.
    pub fn top_levels(
        &self,
        instrument: InstrumentId,
        side: BookSide,
        out: &mut [LevelView],
    ) -> usize {
        let ladder = &self.books[usize::from(instrument.0)].sides[side.index()];
        let mut written = 0;
        for ((_, level), slot) in ladder.iter_best_first().zip(out.iter_mut()) {
            *slot = self.level_view(level);
            written += 1;
        }
        written
    }

    fn level_view(&self, level: u32) -> LevelView {
        let level = &self.levels[level];
        LevelView {
            price: level.price,
            shown_qty: level.shown_qty,
            open_qty: level.open_qty,
        }
    }

    /// A comparable picture of every book (allocates; for tests, tools and replay).
    pub fn view(&self) -> super::reference::BookView {
        use super::reference::{BookView, RestingView};
        let mut view = BookView {
            sides: Vec::with_capacity(self.books.len()),
            references: self.books.iter().map(|b| b.reference).collect(),
            last_refs: self.owners.iter().map(|o| o.last_ref).collect(),
            next_order_id: self.next_order_id,
            next_match_id: self.next_match_id,
            states: (0..self.books.len())
                .map(|i| self.trading_state(InstrumentId(i as u16)))
                .collect(),
            phase: self.phase,
            pauses: self
                .books
                .iter()
                .map(|b| pause_end(b.pause_until))
                .collect(),
        };
        for book in &self.books {
            let mut sides: [Vec<RestingView>; 2] = [Vec::new(), Vec::new()];
            for (s, ladder) in book.sides.iter().enumerate() {
                for (_, level) in ladder.iter_best_first() {
                    let level = &self.levels[level];
                    for queue in [level.shown, level.hidden] {
                        let mut oi = queue.head;
                        while oi != NIL {
                            let o = &self.orders[oi];
                            sides[s].push(RestingView {
                                order_id: o.id,
                                md_ref: o.md_ref,
                                owner: o.owner,
                                user_ref: o.user_ref,
                                side: o.side(),
                                price: level.price,
                                open: o.open,
                                shown: o.shown,
                                hidden: o.hidden(),
                                executed: o.executed,
                            });
                            oi = o.next;
                        }
                    }
                }
            }
            view.sides.push(sides);
        }
        view
    }

    /// Checks every structural invariant; `Err` describes the first broken one.
    /// O(orders): for tests and debugging, not the hot path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0usize;
        for book in &self.books {
            let sym = book.spec.symbol;
            let seen_before = seen;
            if let (Some((bid, _)), Some((ask, _))) =
                (book.best(BookSide::Bid), book.best(BookSide::Ask))
                && bid >= ask
            {
                return Err(format!("{sym}: crossed at rest, bid {bid} ask {ask}"));
            }
            for (s, ladder) in book.sides.iter().enumerate() {
                let side = if s == 0 { BookSide::Bid } else { BookSide::Ask };
                let mut prev_price: Option<Price> = None;
                for (tick, li) in ladder.iter_best_first() {
                    let price = book.price_of(tick);
                    if let Some(p) = prev_price
                        && !side.better(p, price)
                    {
                        return Err(format!("{sym}: ladder out of order at {price}"));
                    }
                    prev_price = Some(price);
                    let level = &self.levels[li];
                    if level.price != price || level.tick != tick || level.head() == NIL {
                        return Err(format!("{sym}: level {price} empty or mispriced"));
                    }
                    let (n, shown, open) = self.check_queue(level.shown, false, li, side)?;
                    let (m, _, hidden_open) = self.check_queue(level.hidden, true, li, side)?;
                    if level.shown_qty != shown || level.open_qty != open + hidden_open {
                        return Err(format!("{sym}: level {price} quantities wrong: {level:?}"));
                    }
                    seen += n + m;
                }
            }
            if seen - seen_before != book.resting as usize {
                return Err(format!(
                    "{sym}: {} orders on the book, resting count says {}",
                    seen - seen_before,
                    book.resting
                ));
            }
        }
        if seen != self.orders.used_count() || seen != self.by_ref.len() {
            return Err(format!(
                "{seen} orders on books, {} in pool, {} in reference map",
                self.orders.used_count(),
                self.by_ref.len()
            ));
        }
        let owned = self.owner_slots.check()?;
        if owned != seen {
            return Err(format!(
                "{owned} slots with an owner, {seen} orders on books"
            ));
        }
        Ok(())
    }

    /// Checks one queue of level `li`; returns its orders, displayed and open shares.
    fn check_queue(
        &self,
        queue: Queue,
        hidden: bool,
        li: u32,
        side: BookSide,
    ) -> Result<(usize, u64, u64), String> {
        let price = self.levels[li].price;
        let (mut shown, mut open) = (0u64, 0u64);
        let mut count = 0;
        let mut prev = NIL;
        let mut prev_key = 0u64;
        let mut oi = queue.head;
        while oi != NIL {
            let o = &self.orders[oi];
            // FIFO: feed references (displayed) and order ids (hidden) only grow over time,
            // and an order joins the back of its queue whenever it gets one.
            let key = if hidden { o.id.0 } else { o.md_ref.0 };
            let bad = o.prev != prev
                || o.level != li
                || o.hidden() != hidden
                || o.book_side() != side
                || o.open == 0
                || (hidden && o.shown != 0)
                || (!hidden && (o.shown == 0 || o.shown > o.open))
                || key <= prev_key
                || self.indexed(o.owner.0, o.user_ref.0) != Some(oi)
                || self.owner_slots.owner_of(oi) != Some(o.owner.0);
            if bad {
                return Err(format!(
                    "order {:?} breaks its level's invariants: {o:?}",
                    o.id
                ));
            }
            prev_key = key;
            prev = oi;
            count += 1;
            shown += u64::from(o.shown);
            open += u64::from(o.open);
            oi = o.next;
        }
        if queue.tail != prev {
            return Err(format!("queue at {price} has a wrong tail"));
        }
        Ok((count, shown, open))
    }
}

/// The record of a match of a resting order with `inc` at `price`. The fourth argument is
/// a copy of the resting order's line with its book side and hiddenness (which a caller
/// may know without decoding them from the line); the last is (shares matched, the
/// resting order's leaves, the incoming order's leaves).
#[inline(always)]
fn fill_record(
    ts: Timestamp,
    price: Price,
    match_id: MatchId,
    (resting, resting_side, resting_hidden): (&Order, BookSide, bool),
    inc: &Incoming,
    (qty, resting_leaves, incoming_leaves): (u32, u32, u32),
) -> Fill {
    Fill {
        ts,
        price,
        match_id,
        resting_user_ref: resting.user_ref,
        resting_id: resting.id,
        resting_md_ref: resting.md_ref,
        incoming_user_ref: inc.user_ref,
        incoming_id: inc.order_id,
        qty: Qty(qty),
        resting_leaves: Qty(resting_leaves),
        incoming_leaves: Qty(incoming_leaves),
        resting_owner: resting.owner,
        incoming_owner: inc.owner,
        instrument: resting.instrument,
        resting_side,
        resting_hidden,
    }
}

/// The band's other edge for an order on the bid side (`buy`) or the ask side: it may not
/// trade at a better price either (0 for a buy, `u64::MAX` for a sell when the band is off).
#[inline(always)]
fn guard(band: Option<(Price, Price)>, buy: bool) -> Price {
    match band {
        Some((low, _)) if buy => low,
        Some((_, high)) => high,
        None if buy => Price(0),
        None => Price(u64::MAX),
    }
}

/// What [`Matcher::enter_plain`] did with a new order.
enum Plain {
    /// It is on the book, acknowledged.
    Rested,
    /// It may trade: [`Matcher::enter`] takes it at these prices.
    Priced(Prices),
    /// Nothing: it needs the full checks.
    Full,
}

/// A pause end as states and views carry it: 0 for none.
fn pause_end(pause_until: u64) -> u64 {
    if pause_until == u64::MAX {
        0
    } else {
        pause_until
    }
}

/// The reference a command consumes, for rejecting commands from unknown owners.
fn consumed_ref(body: &CommandBody) -> Option<UserRef> {
    match body {
        CommandBody::New(o) => Some(o.user_ref),
        CommandBody::Cancel { user_ref, .. } | CommandBody::Modify { user_ref, .. } => {
            Some(*user_ref)
        }
        CommandBody::Replace(r) => Some(r.user_ref),
        CommandBody::InvalidReplace { user_ref, .. } => Some(*user_ref),
        CommandBody::MassCancel { user_ref, .. } => Some(*user_ref),
        CommandBody::GatewayReject { user_ref, .. } => Some(*user_ref),
        CommandBody::Disconnect | CommandBody::AccountQuery | CommandBody::Venue(_) => None,
    }
}

/// ClOrdID for requests that carry none.
pub(crate) const BLANK_ID: [u8; 14] = [b' '; 14];

/// What the feed gets when an order goes to the book (besides the order's own events).
#[derive(Clone, Copy)]
enum Arrival<'a> {
    /// An add.
    Add,
    /// A replace of this feed reference.
    Replace(OrderId),
    /// A new order that crossed nothing: its acknowledgement, not written yet, and the add
    /// together ([`EventSink::rested`]).
    Accepted(&'a NewOrder),
}

/// Stamps events with the command's time.
struct Emitter<'a, S: EventSink> {
    ts: Timestamp,
    out: &'a mut S,
}

impl<S: EventSink> Emitter<'_, S> {
    #[inline]
    fn event(&mut self, body: EventBody) {
        self.out.push(Event { ts: self.ts, body });
    }

    #[inline]
    fn fill(&mut self, fill: Fill) {
        self.out.fill(fill);
    }

    #[inline]
    fn removed(&mut self, removal: Removal) {
        self.out.removed(removal);
    }

    #[inline]
    fn rested(&mut self, owner: OwnerId, order: &NewOrder, rested: Rested) {
        self.out.rested(self.ts, owner, order, rested);
    }

    #[cold]
    #[inline(never)]
    fn reject(
        &mut self,
        owner: OwnerId,
        user_ref: UserRef,
        reason: RejectReason,
        clordid: [u8; 14],
    ) {
        self.event(EventBody::Rejected {
            owner,
            user_ref,
            reason,
            clordid,
        });
    }
}

/// One resting order in a [`BookState`]: everything the order carries except its links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestingState {
    /// Venue order reference.
    pub id: OrderId,
    /// Feed reference of the displayed part.
    pub md_ref: OrderId,
    /// Owner.
    pub owner: OwnerId,
    /// The owner's reference of the order.
    pub user_ref: UserRef,
    /// Instrument.
    pub instrument: InstrumentId,
    /// Side as entered.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Shares open, displayed and reserve together.
    pub open: u32,
    /// Shares displayed now.
    pub shown: u32,
    /// Reserve: displayed part at each refill (0: none).
    pub max_floor: u32,
    /// Shares executed by the replace chain.
    pub executed: u32,
    /// Firm, for self-trade prevention.
    pub firm: Firm,
    /// Not displayed.
    pub hidden: bool,
    /// OUCH capacity, echoed on replaces.
    pub capacity: u8,
    /// OUCH cross type, echoed on replaces.
    pub cross_type: u8,
    /// OUCH customer type, echoed on replaces.
    pub customer_type: u8,
    /// Time in force Day (canceled at the end of market hours).
    pub day_only: bool,
    /// Good till time: when it expires, ns since midnight (0: not good till time).
    pub expires_at: u64,
    /// Position in its price level's queue among all orders of the state (smaller: earlier).
    pub queue_rank: u32,
}

/// The whole state of a [`Matcher`], independent of pool layout: what a snapshot holds.
/// [`Matcher::from_state`] of [`Matcher::state`] behaves exactly like the original.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BookState {
    /// Next venue order reference.
    pub next_order_id: u64,
    /// Next match number.
    pub next_match_id: u64,
    /// Per owner: the last reference consumed.
    pub last_refs: Vec<u64>,
    /// Per instrument: centre of the price band.
    pub references: Vec<Price>,
    /// Per instrument: its own trading state.
    pub states: Vec<TradingState>,
    /// Per instrument: when its circuit-breaker pause ends, ns since midnight (0: none).
    pub pauses: Vec<u64>,
    /// Per instrument: its circuit breaker's trade window.
    pub windows: Vec<WindowState>,
    /// The venue-wide halt.
    pub venue_halted: bool,
    /// Where the trading day stands.
    pub phase: Option<DayPhase>,
    /// The day's last transition.
    pub day_event: Option<DayEvent>,
    /// Resting orders, each owner's in order of entry (owner 0 first); that order is the
    /// order of a mass cancel's events.
    pub orders: Vec<RestingState>,
}

impl Matcher {
    /// The matcher's state, for a snapshot. O(orders); allocates.
    pub fn state(&self) -> BookState {
        // Queue ranks, by order slot: walk every level's queues in priority order. The
        // matcher's thread takes this for snapshots, so it is cheap for any book: a vector
        // over every slot when the pool is well used (no hashing), a map sized for the
        // resting orders when few rest (no allocation the size of the pool).
        let mut rank = 0u32;
        let mut ranks = Ranks::for_pool(self.orders.used_count(), self.orders.capacity());
        for book in &self.books {
            for ladder in &book.sides {
                for (_, level) in ladder.iter_best_first() {
                    let level = &self.levels[level];
                    for queue in [level.shown, level.hidden] {
                        let mut oi = queue.head;
                        while oi != NIL {
                            ranks.set(oi, rank);
                            rank += 1;
                            oi = self.orders[oi].next;
                        }
                    }
                }
            }
        }
        let mut expires: FxHashMap<u64, u64> = FxHashMap::default();
        for Reverse(e) in self.expiries.iter() {
            if self.holds(e.slot, e.id) {
                expires.insert(e.id, e.at);
            }
        }
        // Owner by owner, each owner's orders in order of entry (as mass cancels take
        // them): read in slot order, then sorted by order id.
        let mut orders: Vec<RestingState> = Vec::with_capacity(rank as usize);
        for owner in 0..self.owners.len() as u16 {
            let start = orders.len();
            self.owner_slots.for_each(owner, |oi| {
                let o = &self.orders[oi];
                orders.push(RestingState {
                    id: o.id,
                    md_ref: o.md_ref,
                    owner: o.owner,
                    user_ref: o.user_ref,
                    instrument: o.instrument,
                    side: o.side(),
                    price: self.levels[o.level].price,
                    open: o.open,
                    shown: o.shown,
                    max_floor: o.max_floor,
                    executed: o.executed,
                    firm: o.firm,
                    hidden: o.hidden(),
                    capacity: o.capacity,
                    cross_type: o.cross_type,
                    customer_type: o.customer_type,
                    day_only: o.day_only(),
                    expires_at: if expires.is_empty() {
                        0
                    } else {
                        expires.get(&o.id.0).copied().unwrap_or(0)
                    },
                    queue_rank: ranks.get(oi),
                });
            });
            orders[start..].sort_unstable_by_key(|r| r.id);
        }
        BookState {
            next_order_id: self.next_order_id,
            next_match_id: self.next_match_id,
            last_refs: self.owners.iter().map(|o| o.last_ref).collect(),
            references: self.books.iter().map(|b| b.reference).collect(),
            states: self.books.iter().map(|b| b.state).collect(),
            pauses: self
                .books
                .iter()
                .map(|b| pause_end(b.pause_until))
                .collect(),
            windows: self.books.iter().map(|b| b.window.state()).collect(),
            venue_halted: self.venue_halted,
            phase: Some(self.phase),
            day_event: self.day_event,
            orders,
        }
    }

    /// Rebuilds a matcher for `config` from `state`. Every value is checked against the
    /// configuration, so a state from another configuration or a damaged one gives `Err`,
    /// never a panic or a book that breaks its invariants.
    pub fn from_state(config: &BookConfig, state: &BookState) -> Result<Matcher, String> {
        let mut m = Matcher::new(config);
        if state.last_refs.len() != m.owners.len()
            || state.references.len() != m.books.len()
            || state.states.len() != m.books.len()
            || state.pauses.len() != m.books.len()
            || state.windows.len() != m.books.len()
        {
            return Err(format!(
                "state for {} users and {} instruments, configuration has {} and {}",
                state.last_refs.len(),
                state.references.len(),
                m.owners.len(),
                m.books.len()
            ));
        }
        if state.next_order_id == 0 || state.next_match_id == 0 {
            return Err("order and match numbers start at 1".into());
        }
        m.next_order_id = state.next_order_id;
        m.next_match_id = state.next_match_id;
        if !m.ouch_refs && state.last_refs.iter().any(|&r| r != 0) {
            return Err("reference high-water marks in a state for caller keys".into());
        }
        for (owner, last_ref) in m.owners.iter_mut().zip(&state.last_refs) {
            owner.last_ref = *last_ref;
        }
        for (i, book) in m.books.iter_mut().enumerate() {
            book.set_reference(state.references[i]);
            book.state = state.states[i];
            let paused = state.pauses[i] != 0;
            if paused && (book.spec.breaker_bps == 0 || book.state != TradingState::Paused) {
                return Err(format!(
                    "{}: a breaker pause it cannot have",
                    book.spec.symbol
                ));
            }
            book.pause_until = if paused { state.pauses[i] } else { u64::MAX };
            book.window
                .restore(&state.windows[i])
                .map_err(|e| format!("{}: {e}", book.spec.symbol))?;
        }
        m.refresh_next_resume();
        m.venue_halted = state.venue_halted;
        let initial_phase = m.phase;
        m.phase = state.phase.ok_or("no phase of the day")?;
        m.day_event = state.day_event;
        // The phase changes only with the day's transitions (an embedded core without a
        // schedule may send them too).
        if m.day_event.is_some_and(|e| e.phase_after() != m.phase)
            || (m.day_event.is_none() && m.phase != initial_phase)
        {
            return Err(format!(
                "phase {:?} after the day's last transition {:?}",
                m.phase, m.day_event
            ));
        }
        let mut by_rank: Vec<(u32, u32, Price)> = Vec::with_capacity(state.orders.len());
        let mut previous_owner = 0u16;
        let mut previous_id = 0u64;
        for s in &state.orders {
            let bad = |what: &str| format!("order {}: {what}", s.id.0);
            let Some(book) = m.books.get(usize::from(s.instrument.0)) else {
                return Err(bad("unknown instrument"));
            };
            let Some(owner) = m.owners.get(usize::from(s.owner.0)) else {
                return Err(bad("unknown owner"));
            };
            let spec = &book.spec;
            let shown_ok = if s.hidden {
                s.shown == 0
            } else if s.max_floor == 0 {
                s.shown == s.open
            } else {
                s.shown <= s.max_floor && s.shown <= s.open
            };
            // Each owner's orders in order of entry, which is the order of their ids: mass
            // cancels take them that way (a state out of that order would not survive the
            // round trip through `state`).
            let out_of_order = s.owner.0 == previous_owner && s.id.0 <= previous_id;
            if s.owner.0 < previous_owner
                || out_of_order
                || s.id.0 == 0
                || s.id.0 >= state.next_order_id
                || s.md_ref.0 >= state.next_order_id
                || (m.ouch_refs && s.user_ref.0 > owner.last_ref)
                || s.open == 0
                || !(s.hidden || s.shown > 0)
                || !shown_ok
                || s.price < spec.min_price
                || s.price > spec.max_price
                || (s.price.0 - spec.min_price.0) % spec.tick.0 != 0
            {
                return Err(bad("values outside what the book allows"));
            }
            previous_owner = s.owner.0;
            previous_id = s.id.0;
            if m.indexed(s.owner.0, s.user_ref.0).is_some() {
                return Err(bad("reference used twice"));
            }
            let order = Order {
                id: s.id,
                md_ref: s.md_ref,
                open: s.open,
                shown: s.shown,
                executed: s.executed,
                user_ref: s.user_ref,
                level: NIL,
                prev: NIL,
                next: NIL,
                owner: s.owner,
                instrument: s.instrument,
                firm: s.firm,
                max_floor: s.max_floor,
                flags: Order::pack_flags(s.side, s.hidden, s.day_only),
                capacity: s.capacity,
                cross_type: s.cross_type,
                customer_type: s.customer_type,
            };
            let Some(oi) = m.orders.try_alloc(order) else {
                return Err(format!(
                    "{} resting orders, the order pool holds {}",
                    state.orders.len(),
                    config.orders_max
                ));
            };
            m.books[usize::from(s.instrument.0)].resting += 1;
            if s.expires_at != 0 {
                m.add_expiry(Expiry {
                    at: s.expires_at,
                    id: s.id.0,
                    slot: oi,
                });
            }
            m.owner_slots.add(oi, s.owner.0);
            m.by_ref.insert(s.owner.0, s.user_ref.0, oi);
            by_rank.push((s.queue_rank, oi, s.price));
        }
        // Queues: append in rank order, so each level's FIFO is as it was.
        by_rank.sort_unstable();
        if by_rank.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("two orders share a queue position".into());
        }
        for (_, oi, price) in by_rank {
            let o = m.orders[oi];
            let side = o.book_side();
            let book = &m.books[usize::from(o.instrument.0)];
            if book.sides[side.index()].get(book.tick_of(price)).is_none()
                && m.levels.free_count() == 0
            {
                return Err(format!(
                    "more price levels than the level pool holds ({})",
                    config.levels_max
                ));
            }
            let level = m.level_for(o.instrument, side, price);
            m.orders[oi].level = level;
            m.link_to_level(oi, level);
            let level = &mut m.levels[level];
            level.open_qty += u64::from(o.open);
            level.shown_qty += u64::from(o.shown);
        }
        m.check_invariants()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a book past [`PREFETCH_ORDERS_MIN`], prefetching ahead of every command (of
    /// cancels, modifies and replaces of live, gone and unknown orders, of unknown owners,
    /// and of the last commands, with nothing or one command left) runs without a panic
    /// (its lookups are bounds-checked reads of untrusted references) and, since it only
    /// reads, the two matchers agree throughout. Under Miri (`cargo +nightly miri test
    /// --lib book::matcher::tests::prefetching_ahead`) it also checks the prefetch
    /// instruction's use on real order lines and index entries.
    #[test]
    fn prefetching_ahead_changes_nothing() {
        let mut config = super::super::flow::test_config(StpMode::CancelResting);
        config.orders_max = 8_000;
        config.levels_max = 1_200;
        let symbol = config.instruments[0].symbol;
        let tick = config.instruments[0].tick.0;
        let firm = |owner: u16| config.owners[usize::from(owner)].firm;
        let mut commands = Vec::new();
        let mut ts = 34_200_000_000_000;
        let mut command = |owner: u16, body: CommandBody| {
            ts += 1_000;
            commands.push(Command {
                ts: Timestamp(ts),
                owner: OwnerId(owner),
                body,
            });
        };
        let resting = 6_000u64;
        for i in 0..resting {
            let (owner, side, price) = if i % 2 == 0 {
                (2, Side::Buy, 1_000_000 - (1 + i % 500) * tick)
            } else {
                (3, Side::Sell, 1_000_000 + (1 + i % 500) * tick)
            };
            command(
                owner,
                CommandBody::New(NewOrder {
                    user_ref: UserRef(i / 2 + 1),
                    side,
                    qty: Qty(1 + (i % 40) as u32),
                    symbol,
                    price: Some(Price(price)),
                    tif: TimeInForce::Day,
                    hidden: i % 7 == 0,
                    post_only: false,
                    min_qty: Qty(0),
                    max_floor: Qty(0),
                    firm: firm(owner),
                    echo: Echo::default(),
                }),
            );
        }
        let mut next_ref = [resting / 2 + 1; 2];
        for i in 0..4_000u64 {
            // Scattered references, some already gone, some never used.
            let target = UserRef((i * 7_919) % (resting / 2 + 200) + 1);
            let owner = 2 + (i % 2) as u16;
            match i % 5 {
                0 | 1 => command(
                    owner,
                    CommandBody::Cancel {
                        user_ref: target,
                        qty: Qty((i % 3) as u32),
                    },
                ),
                2 => command(
                    owner,
                    CommandBody::Modify {
                        user_ref: target,
                        side: if owner == 2 {
                            Side::Buy
                        } else {
                            Side::SellShort
                        },
                        qty: Qty(1),
                    },
                ),
                3 => {
                    let new_ref = &mut next_ref[usize::from(owner - 2)];
                    *new_ref += 1;
                    let price = if owner == 2 { 999_000 } else { 1_001_000 };
                    command(
                        owner,
                        CommandBody::Replace(ReplaceOrder {
                            orig_user_ref: target,
                            user_ref: UserRef(*new_ref),
                            qty: Qty(5),
                            price: Price(price),
                            tif: TimeInForce::Day,
                            hidden: false,
                            post_only: false,
                            min_qty: Qty(0),
                            max_floor: Qty(0),
                            echo: Echo::default(),
                        }),
                    )
                }
                _ => command(
                    // An owner the venue does not know.
                    40,
                    CommandBody::Cancel {
                        user_ref: target,
                        qty: Qty(0),
                    },
                ),
            }
        }
        let mut plain = Matcher::new(&config);
        let mut ahead = Matcher::new(&config);
        let (mut want, mut got) = (Vec::new(), Vec::new());
        for (i, cmd) in commands.iter().enumerate() {
            want.clear();
            got.clear();
            plain.apply(cmd, &mut want);
            ahead.prefetch(commands.get(i + 1), commands.get(i + 2));
            ahead.apply(cmd, &mut got);
            assert_eq!(got, want, "command {i}: {cmd:?}");
        }
        assert!(plain.orders.used_count() > PREFETCH_ORDERS_MIN);
        assert_eq!(ahead.state(), plain.state());
        ahead.check_invariants().unwrap();
    }

    #[test]
    fn order_flags_keep_side_hidden_and_day_only() {
        let sides = [
            Side::Buy,
            Side::Sell,
            Side::SellShort,
            Side::SellShortExempt,
        ];
        for side in sides {
            for hidden in [false, true] {
                for day_only in [false, true] {
                    let mut o = Order {
                        flags: Order::pack_flags(side, hidden, day_only),
                        ..Order::default()
                    };
                    assert_eq!(
                        (o.side(), o.book_side(), o.hidden(), o.day_only()),
                        (side, side.book_side(), hidden, day_only)
                    );
                    // A modify changes the side only.
                    for new_side in sides {
                        o.set_side(new_side);
                        assert_eq!(
                            (o.side(), o.book_side(), o.hidden(), o.day_only()),
                            (new_side, new_side.book_side(), hidden, day_only)
                        );
                    }
                }
            }
        }
    }
}
