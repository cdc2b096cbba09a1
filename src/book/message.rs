//! The matcher's interface: fixed-size [`Command`]s in, fixed-size [`Event`]s out.
//!
//! Both are plain `Copy` data with no heap pointers, so they can travel through rings and be
//! journaled as they are. Every command carries its owner, the client's reference number and
//! a timestamp supplied by the caller.
//!
//! # Event order (part of the contract; the reference model follows it too)
//! - New order: `Accepted`, then for each match `Executed` (resting side), `Executed`
//!   (incoming side), then `MdExecute` (displayed resting order) or `MdTrade` (hidden);
//!   when a reserve order's displayed part is used up: `Restated`, `MdAdd` (new reference).
//!   Then either `Canceled` for an unexecuted IOC/market remainder, or `MdAdd` if the
//!   remainder rests displayed (nothing if it rests hidden). A remainder the price band
//!   stopped is `Canceled` (reason price band), or `Repriced` then rests at the band edge.
//! - Circuit breaker: a trade that would print outside the breaker's range does not
//!   happen; instead `TradingAction` (paused, reason `LUDP`), then `Canceled` (reason
//!   circuit breaker) for the incoming order's remainder.
//! - Deadlines, before the command itself when its timestamp has reached them: good-till-
//!   time orders expire (`Canceled`, earliest first), then paused instruments resume
//!   (`TradingAction`, trading, reason spaces), in instrument order.
//! - Self-trade prevention: `AiqCanceled` for the resting order (then `MdDelete` if it was
//!   displayed), and/or `AiqCanceled` for the incoming order.
//! - Cancel: `Canceled`, then `MdDelete` (all gone) or `MdCancel` (displayed part reduced).
//! - Replace: `Replaced`; then `MdReplace` if the old and new orders are displayed and the
//!   new one cannot trade on entry, otherwise `MdDelete` of the old order and the new one
//!   proceeds as a new order would.
//! - Mass cancel and disconnect: one cancel per order in the owner's order of entry, then
//!   (mass cancel only) `MassCanceled`, or `MassCanceledSide` for one limited to a side.
//! - Any command whose timestamp is at or past a good-till-time order's expire time: first
//!   `Canceled` (expired, then the feed's `MdDelete`) for each such order, earliest expire
//!   time first (older order first on a tie), then the command's own events.
//! - System event: `SystemEvent`, then (end of market hours: Day orders; end of system
//!   hours: all) one cancel per order, owner by owner, each in order of entry.
//! - Operator: `TradingAction`s (a state set on an instrument is stated even where it was
//!   in force already; the venue halt and its lifting state only what changed), cancels as
//!   asked (owner by owner), then `OperatorDone`.

use crate::types::{
    BookSide, Firm, InstrumentId, MatchId, OrderId, OwnerId, Price, Qty, Side, Symbol, Timestamp,
    UserRef,
};

/// One input to the matcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Command {
    /// Gateway time of receipt, nanoseconds since midnight; copied into every event.
    pub ts: Timestamp,
    /// The configured user whose session sent the command.
    pub owner: OwnerId,
    /// What to do.
    pub body: CommandBody,
}

/// What a command asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CommandBody {
    /// Enter a new order.
    New(NewOrder),
    /// Reduce an order to `qty` shares still open (0 cancels it); keeps time priority.
    Cancel {
        /// The order's current reference (the latest of a replace chain).
        user_ref: UserRef,
        /// New open quantity; must be below the current open quantity.
        qty: Qty,
    },
    /// Replace an order by a new one (new reference, new time priority).
    Replace(ReplaceOrder),
    /// Change the side among the sell variants and/or reduce the quantity, keeping priority.
    Modify {
        /// The order's current reference.
        user_ref: UserRef,
        /// New side; only sell, sell short and sell short exempt may swap with each other.
        side: Side,
        /// New open quantity; an increase is ignored, 0 cancels the rest.
        qty: Qty,
    },
    /// Cancel the owner's orders, optionally only one instrument and/or one side.
    MassCancel {
        /// A new reference (consumes one, as OUCH does).
        user_ref: UserRef,
        /// Must be the owner's firm.
        firm: Firm,
        /// `Symbol::BLANK` for every instrument.
        symbol: Symbol,
        /// `None` for both sides; else the side the request named (OUCH's Side option:
        /// sell, sell short and sell short exempt all name the ask side), which the
        /// response echoes. Journal format 4 and before held the book side here, whose
        /// bid and ask decode as buy and sell.
        side: Option<Side>,
    },
    /// The owner's session went away; cancels its orders if the user has
    /// cancel-on-disconnect configured.
    Disconnect,
    /// Asks for the next reference the owner may use (OUCH Account Query).
    AccountQuery,
    /// A request the gateway refused before matching (throttle, a field value ironmatch
    /// does not offer). Sequenced like everything else so the journal holds the reply;
    /// changes nothing and consumes no reference.
    GatewayReject {
        /// The request's reference.
        user_ref: UserRef,
        /// Why.
        reason: RejectReason,
        /// The request's ClOrdID, or spaces.
        clordid: [u8; 14],
    },
    /// A command of the venue's schedule, clock or operator (the command's owner is not
    /// used; the gateway sends 0).
    Venue(VenueCommand),
    /// A Replace the gateway refused (a field value out of OUCH's range, or one ironmatch
    /// does not offer). As OUCH has it, the original order, if live, is canceled
    /// (`ReplaceFailed`) after the rejection, as when the matcher finds a replace invalid;
    /// an original that is not live, or a new reference already used, is rejected as a
    /// replace is, and so is any replace in a halt or pause (`Halted`): nothing changes.
    /// Consumes no reference.
    InvalidReplace {
        /// The order to replace.
        orig_user_ref: UserRef,
        /// The replacement's reference, answered in the rejection.
        user_ref: UserRef,
        /// Why.
        reason: RejectReason,
        /// The request's ClOrdID, or spaces.
        clordid: [u8; 14],
    },
}

/// Time in force (OUCH section 5.2). Which phases of the day accept each is in
/// [`TimeInForce::accepted_in`]; what ends a resting order is in the module docs of
/// [`crate::book`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeInForce {
    /// Market hours (OUCH `0`): canceled at the end of market hours (reason closed).
    Day,
    /// Immediate or cancel (OUCH `3`); FOK is IOC with `min_qty == qty`.
    Ioc,
    /// Extended hours (OUCH `5`): system hours, canceled at their end.
    Gtx,
    /// Good till time (OUCH `6`): canceled `expire_secs` seconds after entry (reason
    /// timeout), or at the end of system hours if that comes first.
    Gtt {
        /// Seconds to live, 1..86 400 (OUCH ExpireTime option, tag 15).
        expire_secs: u32,
    },
    /// After hours (OUCH `E`): accepted from the start of market hours, lives through the
    /// post-market session, canceled at the end of system hours.
    AfterHours,
}

impl TimeInForce {
    /// Whether an order with this time in force may be entered in `phase`.
    pub fn accepted_in(self, phase: DayPhase) -> bool {
        match phase {
            DayPhase::Unscheduled => true,
            DayPhase::Closed => false,
            DayPhase::PreMarket => !matches!(self, TimeInForce::Day | TimeInForce::AfterHours),
            DayPhase::Market => true,
            DayPhase::PostMarket => self != TimeInForce::Day,
        }
    }

    /// Whether a resting order with this time in force lives past the end of market hours.
    pub fn outlives_market_hours(self) -> bool {
        self != TimeInForce::Day
    }
}

/// Where the trading day stands, as the matcher sees it: set only by
/// [`VenueCommand::SystemEvent`] commands, so replay reproduces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DayPhase {
    /// No schedule configured: every time in force is accepted at any time (an embedded
    /// core, benches, the model tests).
    Unscheduled,
    /// Before the start of system hours, or after their end: no order is accepted.
    Closed,
    /// System hours before the open: IOC, GTX and GTT orders.
    PreMarket,
    /// Market hours: every time in force.
    Market,
    /// System hours after the close: IOC, GTX, GTT and after-hours orders.
    PostMarket,
}

/// A transition of the trading day, as ITCH System Event codes name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DayEvent {
    /// `O`: start of messages (the day's first record).
    StartOfMessages,
    /// `S`: start of system hours.
    StartOfSystemHours,
    /// `Q`: start of market hours.
    StartOfMarketHours,
    /// `M`: end of market hours: Day orders are canceled.
    EndOfMarketHours,
    /// `E`: end of system hours: every resting order is canceled.
    EndOfSystemHours,
    /// `C`: end of messages (the day's last record).
    EndOfMessages,
}

impl DayEvent {
    /// Every transition, in the order of the day.
    pub const ALL: [DayEvent; 6] = [
        DayEvent::StartOfMessages,
        DayEvent::StartOfSystemHours,
        DayEvent::StartOfMarketHours,
        DayEvent::EndOfMarketHours,
        DayEvent::EndOfSystemHours,
        DayEvent::EndOfMessages,
    ];

    /// The ITCH System Event code.
    pub fn code(self) -> u8 {
        match self {
            DayEvent::StartOfMessages => b'O',
            DayEvent::StartOfSystemHours => b'S',
            DayEvent::StartOfMarketHours => b'Q',
            DayEvent::EndOfMarketHours => b'M',
            DayEvent::EndOfSystemHours => b'E',
            DayEvent::EndOfMessages => b'C',
        }
    }

    /// The phase the day is in after this transition.
    pub fn phase_after(self) -> DayPhase {
        match self {
            DayEvent::StartOfMessages | DayEvent::EndOfSystemHours | DayEvent::EndOfMessages => {
                DayPhase::Closed
            }
            DayEvent::StartOfSystemHours => DayPhase::PreMarket,
            DayEvent::StartOfMarketHours => DayPhase::Market,
            DayEvent::EndOfMarketHours => DayPhase::PostMarket,
        }
    }
}

/// An instrument's trading state, as ITCH Stock Trading Action carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TradingState {
    /// `T`: orders are accepted and execute.
    Trading,
    /// `H`: halted: new orders and replaces are rejected, nothing executes; cancels and
    /// reductions are accepted; resting orders stay unless the operator cancels them.
    Halted,
    /// `P`: paused (a circuit breaker): as halted.
    Paused,
    /// `Q`: quotation only: orders that do not cross the opposite side's best price are
    /// accepted and rest; orders that cross it are rejected as halted (even where the
    /// price band would have stopped them from executing).
    QuotationOnly,
}

impl TradingState {
    /// The ITCH Stock Trading Action code.
    pub fn code(self) -> u8 {
        match self {
            TradingState::Trading => b'T',
            TradingState::Halted => b'H',
            TradingState::Paused => b'P',
            TradingState::QuotationOnly => b'Q',
        }
    }

    /// The state for an ITCH code (`T`, `H`, `P`, `Q`).
    pub fn from_code(code: u8) -> Option<TradingState> {
        match code {
            b'T' => Some(TradingState::Trading),
            b'H' => Some(TradingState::Halted),
            b'P' => Some(TradingState::Paused),
            b'Q' => Some(TradingState::QuotationOnly),
            _ => None,
        }
    }
}

/// A command of the venue itself: its schedule, its clock or its operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VenueCommand {
    /// The day's schedule reached a transition.
    SystemEvent(DayEvent),
    /// Time passed: good-till-time orders due by the command's timestamp expire. (They
    /// also expire before any command whose timestamp is past their time; this command
    /// makes them expire when no other command comes.)
    Timer,
    /// An operator's action; its result comes back as [`EventBody::OperatorDone`] with the
    /// same request number.
    Operator {
        /// The control plane's number for the request.
        request: u64,
        /// What to do.
        action: OperatorAction,
    },
}

/// What an operator can ask of the matcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OperatorAction {
    /// Sets one instrument's trading state; with `cancel_resting`, its resting orders are
    /// canceled too (reason halted).
    SetState {
        /// The instrument.
        symbol: Symbol,
        /// The new state.
        state: TradingState,
        /// ITCH reason code (4 characters, spaces if none).
        reason: [u8; 4],
        /// Cancel the instrument's resting orders.
        cancel_resting: bool,
    },
    /// Halts (`true`) or resumes (`false`) every instrument at once: the venue's kill
    /// switch. While on, every instrument is halted whatever its own state; when lifted,
    /// each goes back to its own state.
    VenueHalt(bool),
    /// Cancels every resting order of one user (reason supervisory).
    CancelUser(OwnerId),
    /// Cancels every resting order of one instrument (reason supervisory).
    CancelInstrument(Symbol),
}

/// The result of an operator's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OperatorOutcome {
    /// Done; this many resting orders were canceled.
    Done {
        /// Orders canceled.
        canceled: u32,
    },
    /// No instrument has the symbol.
    UnknownSymbol,
    /// No configured user has the number.
    UnknownUser,
}

/// Fields the venue only echoes back; carried so the gateway needs no per-order state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Echo {
    /// OUCH Capacity byte.
    pub capacity: u8,
    /// OUCH Intermarket Sweep Eligibility byte.
    pub iso: u8,
    /// OUCH Cross Type byte.
    pub cross_type: u8,
    /// OUCH CustomerType option byte (space when absent).
    pub customer_type: u8,
    /// Client order id, echoed as given.
    pub clordid: [u8; 14],
}

impl Default for Echo {
    fn default() -> Echo {
        Echo {
            capacity: b'A',
            iso: b'N',
            cross_type: b'N',
            customer_type: b' ',
            clordid: [b' '; 14],
        }
    }
}

/// A new order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewOrder {
    /// Client reference: under `RefRule::Ouch` above every reference the owner used
    /// before; under `RefRule::Keys` any key not live among the owner's orders.
    pub user_ref: UserRef,
    /// Side.
    pub side: Side,
    /// Total shares; > 0, a multiple of the lot, at most the instrument's `max_qty`.
    pub qty: Qty,
    /// Instrument.
    pub symbol: Symbol,
    /// Limit price, or `None` for a market order (trades up to the price band, then the
    /// rest is canceled).
    pub price: Option<Price>,
    /// Day, IOC, GTX, GTT or after hours.
    pub tif: TimeInForce,
    /// Non-displayed: never on the feed, ranks behind displayed orders at its price.
    pub hidden: bool,
    /// Rejected if it would take liquidity on entry.
    pub post_only: bool,
    /// Minimum quantity that must execute on entry (0 = none); see [`crate::book`] docs.
    pub min_qty: Qty,
    /// Reserve order: shares displayed at a time (0 = not a reserve order).
    pub max_floor: Qty,
    /// Firm, for self-trade prevention.
    pub firm: Firm,
    /// Echoed fields.
    pub echo: Echo,
}

/// A replace: cancel an order and enter a new one atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplaceOrder {
    /// The order to replace.
    pub orig_user_ref: UserRef,
    /// The new order's reference (same rules as a new order's).
    pub user_ref: UserRef,
    /// New total shares for the whole chain: executed shares count against it.
    pub qty: Qty,
    /// New limit price.
    pub price: Price,
    /// Time in force of the new order.
    pub tif: TimeInForce,
    /// Hidden.
    pub hidden: bool,
    /// Post only.
    pub post_only: bool,
    /// Minimum quantity on entry.
    pub min_qty: Qty,
    /// Reserve display size.
    pub max_floor: Qty,
    /// Intermarket sweep byte and ClOrdID of the new order (capacity, cross type and
    /// customer type are kept from the original).
    pub echo: Echo,
}

/// Why a request was rejected. Each check has its own reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RejectReason {
    /// The owner is not a configured user.
    UnknownOwner,
    /// Under `RefRule::Ouch`, the reference is not above the owner's last one (a resend);
    /// under `RefRule::Keys`, the key is live among the owner's orders: nothing happened.
    DuplicateUserRef,
    /// No such instrument.
    UnknownInstrument,
    /// Quantity is zero; for a replace, one that leaves nothing open (not above what
    /// the chain has executed).
    ZeroQty,
    /// Quantity is not a multiple of the lot size.
    QtyOffLot,
    /// Quantity is above the instrument's `max_qty`.
    QtyAboveMax,
    /// Price is not a multiple of the tick size.
    PriceOffTick,
    /// Price is below `min_price` or above `max_price`.
    PriceOutOfRange,
    /// Limit price outside the fat-finger range around the configured `ref_price` (the
    /// price band, around the last trade, refuses no price: it limits where orders trade).
    PriceOutsideBand,
    /// Min quantity above the order quantity, or not a multiple of the round lot.
    InvalidMinQty,
    /// Max floor off lot, or on a hidden order.
    InvalidMaxFloor,
    /// Post only on an order that cannot rest (IOC or market).
    PostOnlyCannotRest,
    /// Post-only order would take liquidity.
    PostOnlyWouldTake,
    /// The order pool is full.
    OrderPoolFull,
    /// The price-level pool is full.
    LevelPoolFull,
    /// No order with this reference was ever entered by this owner: under the OUCH rule,
    /// a reference above the owner's last one; under `RefRule::Keys`, any key not live
    /// (the core keeps no record of keys whose orders are done).
    UnknownOrder,
    /// The order was the owner's but is no longer live (filled or canceled); under the OUCH
    /// rule, any reference at or below the owner's last one not live (one it skipped too).
    OrderNotLive,
    /// A side change other than among the sell variants.
    InvalidSide,
    /// Mass cancel names a firm that is not the owner's.
    FirmNotAuthorized,
    /// The session's new-order throttle is exhausted (set by the gateway).
    Throttled,
    /// In journals of format 3 and before: the gateway's refusal of a value not offered
    /// or outside its OUCH type, sent as OUCH `0x0014` then, and still (so a session's
    /// messages rebuilt from such a journal are the ones sent). Not set since format 4,
    /// which names these refusals (the five reasons at the end of this list).
    Unsupported,
    /// The instrument is halted or paused, or (quotation only) the order would execute.
    Halted,
    /// The order's time in force is not accepted in this phase of the day.
    Closed,
    /// A good-till-time order's expire time is 0 or a day or more (the matcher), or an
    /// ExpireTime option missing on a good-till-time order or above 86,399 seconds on any
    /// (the gateway).
    InvalidExpireTime,
    /// A display code not offered (set by the gateway; journal format 4 on).
    InvalidDisplay,
    /// A pegged order: a price type OUCH lists as a peg (`P M R Q m`), a discretion price
    /// type `P M R`, or a peg offset (set by the gateway; journal format 4 on).
    PeggingNotAllowed,
    /// A cross order: a cross type OUCH lists other than continuous (`O C H S R E A`), or
    /// a handling instruction for a cross (imbalance only, extended life, direct listing:
    /// `I B D`) (set by the gateway; journal format 4 on).
    InvalidCrossOrder,
    /// A retail handling instruction (set by the gateway; journal format 4 on).
    RetailNotAllowed,
    /// A field value ironmatch does not offer, or outside its OUCH type, that no other
    /// reason names (set by the gateway; OUCH's "other"; journal format 4 on).
    NotOffered,
}

/// Why shares were canceled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CancelReason {
    /// The owner asked (cancel, modify, mass cancel).
    UserRequested,
    /// Unexecuted remainder of an IOC or market order.
    Ioc,
    /// A min-quantity order that could not meet its minimum and would cross the book.
    CannotExecute,
    /// The owner's session disconnected with cancel-on-disconnect on.
    Disconnect,
    /// A replace that failed validation canceled the original order (OUCH behaviour).
    ReplaceFailed,
    /// The end of the hours its time in force allows (OUCH `E`, closed).
    Closed,
    /// A good-till-time order reached its expire time (OUCH `T`, timeout).
    Expired,
    /// The operator halted the instrument and canceled its orders (OUCH `H`, halted).
    Halted,
    /// The operator canceled the user's or the instrument's orders (OUCH `S`, supervisory).
    Supervisory,
    /// The rest of a limit order could trade only outside the price band, and the
    /// instrument cancels such remainders (OUCH `D`, regulatory restriction, as venues
    /// report orders a limit up-limit down band keeps from trading).
    PriceBand,
    /// The order's next trade would have tripped the circuit breaker: the instrument is
    /// paused and the rest of the order canceled (OUCH `H`, halted).
    CircuitBreaker,
}

/// Who provided and who took liquidity in an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Liquidity {
    /// Resting displayed order (OUCH `A`).
    Added,
    /// Resting non-displayed order (OUCH `J`).
    AddedHidden,
    /// Incoming order (OUCH `R`).
    Removed,
}

/// What an order looks like once accepted or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderAck {
    /// Client reference.
    pub user_ref: UserRef,
    /// Venue order reference.
    pub order_id: OrderId,
    /// Instrument.
    pub instrument: InstrumentId,
    /// Side.
    pub side: Side,
    /// Open shares.
    pub qty: Qty,
    /// Limit price; `Price(0)` for a market order.
    pub price: Price,
    /// Time in force.
    pub tif: TimeInForce,
    /// Hidden.
    pub hidden: bool,
    /// Post only.
    pub post_only: bool,
    /// Minimum quantity.
    pub min_qty: Qty,
    /// Reserve display size.
    pub max_floor: Qty,
    /// Firm.
    pub firm: Firm,
    /// Echoed fields.
    pub echo: Echo,
}

impl OrderAck {
    /// The acknowledgement of a new order given `order_id`, on `instrument`.
    #[inline]
    pub fn of_new(order: &NewOrder, order_id: OrderId, instrument: InstrumentId) -> OrderAck {
        OrderAck {
            user_ref: order.user_ref,
            order_id,
            instrument,
            side: order.side,
            qty: order.qty,
            price: order.price.unwrap_or(Price(0)),
            tif: order.tif,
            hidden: order.hidden,
            post_only: order.post_only,
            min_qty: order.min_qty,
            max_floor: order.max_floor,
            firm: order.firm,
            echo: order.echo,
        }
    }

    /// The feed's add of this order when it goes to the book as accepted: displayed, in
    /// full, at its limit (its reserve shows `max_floor`). What the matcher writes right
    /// after the [`Accepted`](EventBody::Accepted) of an order that does not cross.
    #[inline]
    pub fn md_add(&self) -> EventBody {
        EventBody::MdAdd {
            instrument: self.instrument,
            md_ref: self.order_id,
            side: self.side.book_side(),
            qty: if self.max_floor.0 == 0 {
                self.qty
            } else {
                Qty(self.max_floor.0.min(self.qty.0))
            },
            price: self.price,
            firm: self.firm,
        }
    }
}

/// One output of the matcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// The timestamp of the command that caused it.
    pub ts: Timestamp,
    /// What happened.
    pub body: EventBody,
}

/// What happened. Order events go to their owner; `Md*` events feed market data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventBody {
    /// A new order was accepted.
    Accepted {
        /// Owner.
        owner: OwnerId,
        /// The order.
        order: OrderAck,
    },
    /// A request was rejected; nothing changed (except a failed replace, see
    /// [`CancelReason::ReplaceFailed`]).
    Rejected {
        /// Owner.
        owner: OwnerId,
        /// Reference of the rejected request.
        user_ref: UserRef,
        /// Why.
        reason: RejectReason,
        /// Echoed ClOrdID (spaces for requests that carry none).
        clordid: [u8; 14],
    },
    /// An order was replaced by a new one.
    Replaced {
        /// Owner.
        owner: OwnerId,
        /// The replaced order's reference.
        orig_user_ref: UserRef,
        /// The new order.
        order: OrderAck,
    },
    /// Shares were canceled.
    Canceled {
        /// Owner.
        owner: OwnerId,
        /// The order's reference.
        user_ref: UserRef,
        /// The order.
        order_id: OrderId,
        /// Shares removed by this cancel.
        qty: Qty,
        /// Shares still open.
        leaves: Qty,
        /// Why.
        reason: CancelReason,
    },
    /// Self-trade prevention canceled shares (OUCH AIQ Canceled).
    AiqCanceled {
        /// Owner.
        owner: OwnerId,
        /// The order's reference.
        user_ref: UserRef,
        /// The order.
        order_id: OrderId,
        /// Shares removed.
        qty: Qty,
        /// Shares that would have traded: the smaller of the incoming order's remaining
        /// shares and the resting order's open shares (a reserve order's undisplayed
        /// reserve included).
        prevented: Qty,
        /// Price at which they would have traded.
        price: Price,
        /// Role this order would have had.
        liquidity: Liquidity,
    },
    /// An order was (partly) filled.
    Executed {
        /// Owner.
        owner: OwnerId,
        /// The order's reference.
        user_ref: UserRef,
        /// The order.
        order_id: OrderId,
        /// Shares filled.
        qty: Qty,
        /// Execution price (the resting order's).
        price: Price,
        /// Role.
        liquidity: Liquidity,
        /// Match number, shared with the other side.
        match_id: MatchId,
        /// Shares still open.
        leaves: Qty,
    },
    /// A modify took effect.
    Modified {
        /// Owner.
        owner: OwnerId,
        /// The order's reference.
        user_ref: UserRef,
        /// Side now in force.
        side: Side,
        /// Open shares now.
        qty: Qty,
    },
    /// A cancel asked for no reduction; the order is unchanged. (A Modify that reduces
    /// nothing and keeps the side is answered `Modified`, as OUCH answers it.)
    CancelRejected {
        /// Owner.
        owner: OwnerId,
        /// The order's reference.
        user_ref: UserRef,
    },
    /// A reserve order's display was refreshed from its reserve (new feed reference).
    Restated {
        /// Owner.
        owner: OwnerId,
        /// The order's reference.
        user_ref: UserRef,
        /// Shares now displayed.
        display_qty: Qty,
        /// The feed reference of the new displayed part.
        md_ref: OrderId,
    },
    /// The price band kept a limit order from trading further, and its remainder rests at
    /// the band edge instead of its limit (OUCH Order Restated `P`, update of displayed
    /// price, with the Display Price).
    Repriced {
        /// Owner.
        owner: OwnerId,
        /// The order's reference.
        user_ref: UserRef,
        /// The price it rests at.
        price: Price,
    },
    /// Answer to an account query.
    AccountQueried {
        /// Owner.
        owner: OwnerId,
        /// The next reference the owner may use.
        next_user_ref: UserRef,
    },
    /// A mass cancel was done.
    MassCanceled {
        /// Owner.
        owner: OwnerId,
        /// The request's reference.
        user_ref: UserRef,
        /// Firm from the request.
        firm: Firm,
        /// Symbol from the request.
        symbol: Symbol,
        /// Orders canceled.
        count: u32,
    },
    /// Feed: a displayed order (or reserve slice) was added.
    MdAdd {
        /// Instrument.
        instrument: InstrumentId,
        /// Feed reference.
        md_ref: OrderId,
        /// Side.
        side: BookSide,
        /// Displayed shares.
        qty: Qty,
        /// Price.
        price: Price,
        /// Owner's firm, for attribution.
        firm: Firm,
    },
    /// Feed: a displayed order executed.
    MdExecute {
        /// Instrument.
        instrument: InstrumentId,
        /// Feed reference.
        md_ref: OrderId,
        /// Shares executed.
        qty: Qty,
        /// Price.
        price: Price,
        /// Match number.
        match_id: MatchId,
    },
    /// Feed: a displayed order lost shares without leaving the book.
    MdCancel {
        /// Instrument.
        instrument: InstrumentId,
        /// Feed reference.
        md_ref: OrderId,
        /// Shares removed.
        qty: Qty,
    },
    /// Feed: a displayed order left the book.
    MdDelete {
        /// Instrument.
        instrument: InstrumentId,
        /// Feed reference.
        md_ref: OrderId,
    },
    /// Feed: a displayed order was replaced by another at the back of its new price.
    MdReplace {
        /// Instrument.
        instrument: InstrumentId,
        /// Old feed reference.
        old_md_ref: OrderId,
        /// New feed reference.
        new_md_ref: OrderId,
        /// Displayed shares.
        qty: Qty,
        /// New price.
        price: Price,
    },
    /// Feed: an execution against a non-displayed order.
    MdTrade {
        /// Instrument.
        instrument: InstrumentId,
        /// Side of the resting order.
        side: BookSide,
        /// Shares.
        qty: Qty,
        /// Price.
        price: Price,
        /// Match number.
        match_id: MatchId,
    },
    /// The trading day reached a transition (ITCH System Event; OUCH System Event to every
    /// user for the start and end of the day).
    SystemEvent {
        /// Which.
        event: DayEvent,
    },
    /// An instrument's trading state changed or was restated (ITCH Stock Trading Action).
    TradingAction {
        /// Instrument.
        instrument: InstrumentId,
        /// The state now in force (the venue halt counts).
        state: TradingState,
        /// ITCH reason code, spaces if none.
        reason: [u8; 4],
    },
    /// An operator's action was done (for the control plane; not on the feed).
    OperatorDone {
        /// The request's number.
        request: u64,
        /// What came of it.
        outcome: OperatorOutcome,
    },
    /// A mass cancel limited to one side was done: [`EventBody::MassCanceled`] with the
    /// request's side, which Mass Cancel Response echoes (journal format 5; before it, such
    /// a mass cancel was journaled as `MassCanceled`, which replay still takes for it).
    MassCanceledSide {
        /// Owner.
        owner: OwnerId,
        /// The request's reference.
        user_ref: UserRef,
        /// Firm from the request.
        firm: Firm,
        /// Symbol from the request.
        symbol: Symbol,
        /// Side from the request.
        side: Side,
        /// Orders canceled.
        count: u32,
    },
}

impl EventBody {
    /// A mass cancel's last event: [`EventBody::MassCanceled`], or
    /// [`EventBody::MassCanceledSide`] when the request named a side.
    pub fn mass_canceled(
        owner: OwnerId,
        user_ref: UserRef,
        firm: Firm,
        symbol: Symbol,
        side: Option<Side>,
        count: u32,
    ) -> EventBody {
        match side {
            None => EventBody::MassCanceled {
                owner,
                user_ref,
                firm,
                symbol,
                count,
            },
            Some(side) => EventBody::MassCanceledSide {
                owner,
                user_ref,
                firm,
                symbol,
                side,
                count,
            },
        }
    }

    /// The user an order-entry event is for; `None` for market-data events.
    pub fn owner(&self) -> Option<OwnerId> {
        match self {
            EventBody::Accepted { owner, .. }
            | EventBody::Rejected { owner, .. }
            | EventBody::Replaced { owner, .. }
            | EventBody::Canceled { owner, .. }
            | EventBody::AiqCanceled { owner, .. }
            | EventBody::Executed { owner, .. }
            | EventBody::Modified { owner, .. }
            | EventBody::CancelRejected { owner, .. }
            | EventBody::Restated { owner, .. }
            | EventBody::Repriced { owner, .. }
            | EventBody::AccountQueried { owner, .. }
            | EventBody::MassCanceled { owner, .. }
            | EventBody::MassCanceledSide { owner, .. } => Some(*owner),
            EventBody::MdAdd { .. }
            | EventBody::MdExecute { .. }
            | EventBody::MdCancel { .. }
            | EventBody::MdDelete { .. }
            | EventBody::MdReplace { .. }
            | EventBody::MdTrade { .. }
            | EventBody::SystemEvent { .. }
            | EventBody::TradingAction { .. }
            | EventBody::OperatorDone { .. } => None,
        }
    }
}

/// One match, in one record: the three events it stands for (in this order, the ones
/// the matcher journals and sends) are the resting order's
/// [`Executed`](EventBody::Executed), the incoming order's, and the feed's
/// [`MdExecute`](EventBody::MdExecute) (a displayed resting order) or
/// [`MdTrade`](EventBody::MdTrade) (a hidden one). The matcher hands a match to its sink
/// this way ([`EventSink::fill`]); the pipeline carries it to the journal writer as one
/// record and expands it there, so the journal, the acknowledgements and the feed are the
/// same as if the matcher had written the three events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The timestamp of the command that caused it.
    pub ts: Timestamp,
    /// Execution price (the resting order's).
    pub price: Price,
    /// Match number.
    pub match_id: MatchId,
    /// The resting order's reference, venue order id and feed reference.
    pub resting_user_ref: UserRef,
    /// The resting order's venue order id.
    pub resting_id: OrderId,
    /// The resting order's feed reference (unused when it is hidden).
    pub resting_md_ref: OrderId,
    /// The incoming order's reference.
    pub incoming_user_ref: UserRef,
    /// The incoming order's venue order id.
    pub incoming_id: OrderId,
    /// Shares matched.
    pub qty: Qty,
    /// Shares of the resting order still open.
    pub resting_leaves: Qty,
    /// Shares of the incoming order still open.
    pub incoming_leaves: Qty,
    /// The resting order's owner.
    pub resting_owner: OwnerId,
    /// The incoming order's owner.
    pub incoming_owner: OwnerId,
    /// Instrument.
    pub instrument: InstrumentId,
    /// The resting order's side of the book.
    pub resting_side: BookSide,
    /// Whether the resting order is hidden (its liquidity is `AddedHidden` and the feed
    /// prints an anonymous trade).
    pub resting_hidden: bool,
}

/// A new order that went to the book as accepted: displayed, in full (a reserve shows its
/// floor), at its limit, crossing nothing ([`EventSink::rested`]). Everything its two
/// events say but the venue's order id and the instrument is in the command, so this is
/// all the matcher hands on: the pipeline carries it to the journal writer as one small
/// record and the writer builds the [`Accepted`](EventBody::Accepted) and the feed's
/// [`MdAdd`](EventBody::MdAdd) from the command before it ([`Rested::events_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rested {
    /// The venue order id given to the order (its feed reference too).
    pub order_id: OrderId,
    /// The instrument the order's symbol names.
    pub instrument: InstrumentId,
}

impl Rested {
    /// The order's acknowledgement, as the [`Accepted`](EventBody::Accepted) event carries it.
    #[inline]
    pub fn ack(&self, order: &NewOrder) -> OrderAck {
        OrderAck::of_new(order, self.order_id, self.instrument)
    }

    /// The two events of `order`, entered by `owner` at `ts`: its `Accepted`, then the
    /// feed's add.
    #[inline]
    pub fn events(&self, ts: Timestamp, owner: OwnerId, order: &NewOrder) -> [Event; 2] {
        let ack = self.ack(order);
        [
            Event {
                ts,
                body: EventBody::Accepted { owner, order: ack },
            },
            Event {
                ts,
                body: ack.md_add(),
            },
        ]
    }

    /// The two events for the command that caused them: `None` if `command` is not a new
    /// order (a record out of its place).
    #[inline]
    pub fn events_after(&self, command: &Command) -> Option<[Event; 2]> {
        match &command.body {
            CommandBody::New(order) => Some(self.events(command.ts, command.owner, order)),
            _ => None,
        }
    }
}

/// A displayed order canceled in full, in one record: the owner's
/// [`Canceled`](EventBody::Canceled) (no shares left) then the feed's
/// [`MdDelete`](EventBody::MdDelete) ([`EventSink::removed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The timestamp of the command that caused it.
    pub ts: Timestamp,
    /// The order's reference.
    pub user_ref: UserRef,
    /// The order.
    pub order_id: OrderId,
    /// Its feed reference.
    pub md_ref: OrderId,
    /// Shares removed (all it had open).
    pub qty: Qty,
    /// Owner.
    pub owner: OwnerId,
    /// Instrument.
    pub instrument: InstrumentId,
    /// Why.
    pub reason: CancelReason,
}

impl Removal {
    /// The two events this removal stands for, in order.
    #[inline]
    pub fn events(&self) -> [Event; 2] {
        [
            Event {
                ts: self.ts,
                body: EventBody::Canceled {
                    owner: self.owner,
                    user_ref: self.user_ref,
                    order_id: self.order_id,
                    qty: self.qty,
                    leaves: Qty(0),
                    reason: self.reason,
                },
            },
            Event {
                ts: self.ts,
                body: EventBody::MdDelete {
                    instrument: self.instrument,
                    md_ref: self.md_ref,
                },
            },
        ]
    }
}

impl Fill {
    /// The three events this match stands for, in order.
    #[inline]
    pub fn events(&self) -> [Event; 3] {
        let ts = self.ts;
        [
            Event {
                ts,
                body: EventBody::Executed {
                    owner: self.resting_owner,
                    user_ref: self.resting_user_ref,
                    order_id: self.resting_id,
                    qty: self.qty,
                    price: self.price,
                    liquidity: if self.resting_hidden {
                        Liquidity::AddedHidden
                    } else {
                        Liquidity::Added
                    },
                    match_id: self.match_id,
                    leaves: self.resting_leaves,
                },
            },
            Event {
                ts,
                body: EventBody::Executed {
                    owner: self.incoming_owner,
                    user_ref: self.incoming_user_ref,
                    order_id: self.incoming_id,
                    qty: self.qty,
                    price: self.price,
                    liquidity: Liquidity::Removed,
                    match_id: self.match_id,
                    leaves: self.incoming_leaves,
                },
            },
            Event {
                ts,
                body: if self.resting_hidden {
                    EventBody::MdTrade {
                        instrument: self.instrument,
                        side: self.resting_side,
                        qty: self.qty,
                        price: self.price,
                        match_id: self.match_id,
                    }
                } else {
                    EventBody::MdExecute {
                        instrument: self.instrument,
                        md_ref: self.resting_md_ref,
                        qty: self.qty,
                        price: self.price,
                        match_id: self.match_id,
                    }
                },
            },
        ]
    }
}

/// Where the matcher writes events. A `Vec` works; the pipeline writes into its ring.
pub trait EventSink {
    /// Takes one event.
    fn push(&mut self, event: Event);

    /// Takes one match: by default its three events ([`Fill::events`]), one by one. A sink
    /// that carries events further (the pipeline's ring) may keep the match as one record
    /// and expand it later, as long as what it finally hands on is those events in that
    /// order.
    #[inline]
    fn fill(&mut self, fill: Fill) {
        for event in fill.events() {
            self.push(event);
        }
    }

    /// Takes a displayed order canceled in full: by default its two events
    /// ([`Removal::events`]), one by one; a sink that carries events further may keep
    /// them as one record and expand it later.
    #[inline]
    fn removed(&mut self, removal: Removal) {
        for event in removal.events() {
            self.push(event);
        }
    }

    /// Takes a new order that went to the book as accepted, displayed and crossing
    /// nothing: `order` is the command's, entered by `owner` at `ts`. By default its two
    /// events ([`Rested::events`]: the `Accepted`, then the feed's add), one by one. A sink
    /// that carries events further may keep only `rested` and build the events later from
    /// the command, in that order.
    #[inline]
    fn rested(&mut self, ts: Timestamp, owner: OwnerId, order: &NewOrder, rested: Rested) {
        for event in rested.events(ts, owner, order) {
            self.push(event);
        }
    }
}

impl EventSink for Vec<Event> {
    #[inline]
    fn push(&mut self, event: Event) {
        Vec::push(self, event);
    }
}

/// A sink that only counts, for benchmarks.
#[derive(Debug, Default)]
pub struct CountingSink {
    /// Events seen.
    pub count: u64,
}

impl EventSink for CountingSink {
    #[inline]
    fn push(&mut self, event: Event) {
        std::hint::black_box(&event);
        self.count += 1;
    }
}

// Records travel through rings by value; keep them small enough to copy cheaply.
const _: () = assert!(std::mem::size_of::<Command>() <= 96);
const _: () = assert!(std::mem::size_of::<Event>() <= 96);

impl std::fmt::Display for Event {
    /// One line per event, for people reading demos, logs and journal audits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ", self.ts)?;
        match &self.body {
            EventBody::Accepted { owner, order: o }
            | EventBody::Replaced {
                owner, order: o, ..
            } => {
                let verb = if matches!(self.body, EventBody::Accepted { .. }) {
                    "accepted"
                } else {
                    "replaced"
                };
                write!(
                    f,
                    "user {} ref {} {verb}: order {} {:?} {} @ {} {:?}{}{}",
                    owner.0,
                    o.user_ref,
                    o.order_id.0,
                    o.side,
                    o.qty.0,
                    o.price,
                    o.tif,
                    if o.hidden { " hidden" } else { "" },
                    if o.max_floor.0 > 0 { " reserve" } else { "" },
                )?;
                if let EventBody::Replaced { orig_user_ref, .. } = self.body {
                    write!(f, " (was ref {})", orig_user_ref)?;
                }
                Ok(())
            }
            EventBody::Rejected {
                owner,
                user_ref,
                reason,
                ..
            } => {
                write!(f, "user {} ref {} rejected: {reason:?}", owner.0, user_ref)
            }
            EventBody::Canceled {
                owner,
                user_ref,
                qty,
                leaves,
                reason,
                ..
            } => write!(
                f,
                "user {} ref {} canceled {} ({reason:?}), {} left",
                owner.0, user_ref, qty.0, leaves.0
            ),
            EventBody::AiqCanceled {
                owner,
                user_ref,
                qty,
                prevented,
                price,
                ..
            } => write!(
                f,
                "user {} ref {} self-trade prevented: {} canceled, {} would have traded @ {price}",
                owner.0, user_ref, qty.0, prevented.0
            ),
            EventBody::Executed {
                owner,
                user_ref,
                qty,
                price,
                liquidity,
                match_id,
                leaves,
                ..
            } => write!(
                f,
                "user {} ref {} executed {} @ {price} ({liquidity:?}) match {}, {} left",
                owner.0, user_ref, qty.0, match_id.0, leaves.0
            ),
            EventBody::Modified {
                owner,
                user_ref,
                side,
                qty,
            } => {
                write!(
                    f,
                    "user {} ref {} modified: {side:?} {} open",
                    owner.0, user_ref, qty.0
                )
            }
            EventBody::CancelRejected { owner, user_ref } => {
                write!(
                    f,
                    "user {} ref {} cancel rejected: not a reduction",
                    owner.0, user_ref
                )
            }
            EventBody::Restated {
                owner,
                user_ref,
                display_qty,
                md_ref,
            } => write!(
                f,
                "user {} ref {} reserve refilled: {} shown as feed ref {}",
                owner.0, user_ref, display_qty.0, md_ref.0
            ),
            EventBody::Repriced {
                owner,
                user_ref,
                price,
            } => write!(
                f,
                "user {} ref {} repriced to the band edge: rests @ {price}",
                owner.0, user_ref
            ),
            EventBody::AccountQueried {
                owner,
                next_user_ref,
            } => write!(
                f,
                "user {} account query: next ref {}",
                owner.0, next_user_ref
            ),
            EventBody::MassCanceled {
                owner,
                user_ref,
                count,
                ..
            } => {
                write!(
                    f,
                    "user {} ref {} mass cancel: {count} orders",
                    owner.0, user_ref
                )
            }
            EventBody::MassCanceledSide {
                owner,
                user_ref,
                side,
                count,
                ..
            } => {
                write!(
                    f,
                    "user {} ref {} mass cancel ({side:?} side): {count} orders",
                    owner.0, user_ref
                )
            }
            EventBody::MdAdd {
                instrument,
                md_ref,
                side,
                qty,
                price,
                ..
            } => {
                write!(
                    f,
                    "  feed {}: add {} {side:?} {} @ {price}",
                    instrument.0, md_ref.0, qty.0
                )
            }
            EventBody::MdExecute {
                instrument,
                md_ref,
                qty,
                match_id,
                ..
            } => {
                write!(
                    f,
                    "  feed {}: execute {} {} match {}",
                    instrument.0, md_ref.0, qty.0, match_id.0
                )
            }
            EventBody::MdCancel {
                instrument,
                md_ref,
                qty,
            } => {
                write!(f, "  feed {}: cancel {} {}", instrument.0, md_ref.0, qty.0)
            }
            EventBody::MdDelete { instrument, md_ref } => {
                write!(f, "  feed {}: delete {}", instrument.0, md_ref.0)
            }
            EventBody::MdReplace {
                instrument,
                old_md_ref,
                new_md_ref,
                qty,
                price,
            } => write!(
                f,
                "  feed {}: replace {} by {} {} @ {price}",
                instrument.0, old_md_ref.0, new_md_ref.0, qty.0
            ),
            EventBody::MdTrade {
                instrument,
                side,
                qty,
                price,
                match_id,
            } => write!(
                f,
                "  feed {}: hidden trade {side:?} {} @ {price} match {}",
                instrument.0, qty.0, match_id.0
            ),
            EventBody::SystemEvent { event } => {
                write!(f, "venue: {event:?} ({})", char::from(event.code()))
            }
            EventBody::TradingAction {
                instrument,
                state,
                reason,
            } => write!(
                f,
                "  feed {}: trading state {state:?} reason {:?}",
                instrument.0,
                String::from_utf8_lossy(reason).trim_end()
            ),
            EventBody::OperatorDone { request, outcome } => {
                write!(f, "operator request {request}: {outcome:?}")
            }
        }
    }
}
