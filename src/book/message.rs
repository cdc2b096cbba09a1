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
//!   remainder rests displayed (nothing if it rests hidden).
//! - Self-trade prevention: `AiqCanceled` for the resting order (then `MdDelete` if it was
//!   displayed), and/or `AiqCanceled` for the incoming order.
//! - Cancel: `Canceled`, then `MdDelete` (all gone) or `MdCancel` (displayed part reduced).
//! - Replace: `Replaced`; then `MdReplace` if the old and new orders are displayed and the
//!   new one cannot trade on entry, otherwise `MdDelete` of the old order and the new one
//!   proceeds as a new order would.
//! - Mass cancel and disconnect: one cancel per order in the owner's order of entry, then
//!   (mass cancel only) `MassCanceled`.

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
        /// `None` for both sides.
        side: Option<BookSide>,
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
}

/// Time in force the core supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeInForce {
    /// Rests until canceled or the end of the day (OUCH `0`).
    Day,
    /// Immediate or cancel (OUCH `3`); FOK is IOC with `min_qty == qty`.
    Ioc,
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
    /// Client reference; must be above every reference the owner used before.
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
    /// Day or IOC.
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
    /// The reference is not above the owner's last one (a resend): nothing happened.
    DuplicateUserRef,
    /// No such instrument.
    UnknownInstrument,
    /// Quantity is zero.
    ZeroQty,
    /// Quantity is not a multiple of the lot size.
    QtyOffLot,
    /// Quantity is above the instrument's `max_qty`.
    QtyAboveMax,
    /// Price is not a multiple of the tick size.
    PriceOffTick,
    /// Price is below `min_price` or above `max_price`.
    PriceOutOfRange,
    /// Price is outside the band around the reference (last trade) price.
    PriceOutsideBand,
    /// Min quantity above the order quantity.
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
    /// No order with this reference was ever entered by this owner.
    UnknownOrder,
    /// The order was the owner's but is no longer live (filled or canceled).
    OrderNotLive,
    /// A side change other than among the sell variants.
    InvalidSide,
    /// Mass cancel names a firm that is not the owner's.
    FirmNotAuthorized,
    /// The session's new-order throttle is exhausted (set by the gateway).
    Throttled,
    /// A field value ironmatch does not offer, e.g. a pegged price type or GTT (set by the
    /// gateway).
    Unsupported,
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
        /// Shares that would have traded.
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
    /// A cancel or modify asked for no reduction; the order is unchanged.
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
}

impl EventBody {
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
            | EventBody::AccountQueried { owner, .. }
            | EventBody::MassCanceled { owner, .. } => Some(*owner),
            EventBody::MdAdd { .. }
            | EventBody::MdExecute { .. }
            | EventBody::MdCancel { .. }
            | EventBody::MdDelete { .. }
            | EventBody::MdReplace { .. }
            | EventBody::MdTrade { .. } => None,
        }
    }
}

/// Where the matcher writes events. A `Vec` works; the pipeline writes into its ring.
pub trait EventSink {
    /// Takes one event.
    fn push(&mut self, event: Event);
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
        let ts = self.ts.0;
        write!(
            f,
            "{:02}:{:02}:{:02}.{:09} ",
            ts / 3_600_000_000_000,
            ts / 60_000_000_000 % 60,
            ts / 1_000_000_000 % 60,
            ts % 1_000_000_000
        )?;
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
                    o.user_ref.0,
                    o.order_id.0,
                    o.side,
                    o.qty.0,
                    o.price,
                    o.tif,
                    if o.hidden { " hidden" } else { "" },
                    if o.max_floor.0 > 0 { " reserve" } else { "" },
                )?;
                if let EventBody::Replaced { orig_user_ref, .. } = self.body {
                    write!(f, " (was ref {})", orig_user_ref.0)?;
                }
                Ok(())
            }
            EventBody::Rejected {
                owner,
                user_ref,
                reason,
                ..
            } => {
                write!(
                    f,
                    "user {} ref {} rejected: {reason:?}",
                    owner.0, user_ref.0
                )
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
                owner.0, user_ref.0, qty.0, leaves.0
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
                owner.0, user_ref.0, qty.0, prevented.0
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
                owner.0, user_ref.0, qty.0, match_id.0, leaves.0
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
                    owner.0, user_ref.0, qty.0
                )
            }
            EventBody::CancelRejected { owner, user_ref } => {
                write!(
                    f,
                    "user {} ref {} cancel rejected: not a reduction",
                    owner.0, user_ref.0
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
                owner.0, user_ref.0, display_qty.0, md_ref.0
            ),
            EventBody::AccountQueried {
                owner,
                next_user_ref,
            } => write!(
                f,
                "user {} account query: next ref {}",
                owner.0, next_user_ref.0
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
                    owner.0, user_ref.0
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
        }
    }
}
