//! Order books and matching: the single-threaded, deterministic core.
//!
//! Runs on the matcher thread. Takes [`Command`]s, changes the books, writes [`Event`]s to
//! an [`EventSink`]. It never reads a clock, never uses randomness and never iterates a hash
//! map, so the same commands always give the same events, byte for byte.
//!
//! # Order rules
//! - **Price-time priority.** Better price first; within a price, displayed orders in time
//!   order, then non-displayed (hidden) orders in time order. Trades happen at the resting
//!   order's price.
//! - **Cancel / modify** to a smaller quantity keeps the order's place. A **replace** always
//!   gives a new order (new venue reference) at the back of its price.
//! - **Reserve orders** (`max_floor > 0`) display `min(max_floor, open)`; when the displayed
//!   part is used up it is refilled from the reserve and goes to the back of the displayed
//!   queue with a new feed reference. The undisplayed reserve trades only through refills.
//! - **Min quantity** applies on entry only: if less than `min_qty` can execute at once, the
//!   order does not trade; an IOC or market order is then canceled, a Day order is canceled
//!   if it would cross the book and otherwise rests (the minimum no longer applies).
//! - **Market orders** trade up to the edge of the price band (with the band off, of the
//!   fat-finger range, or of the price range if that is off too), then the rest is
//!   canceled as an IOC remainder.
//! - **Post only** is rejected if its limit crosses the best opposite price, whatever rests
//!   there (a hidden order included) and whether or not it could trade with it (beyond
//!   the band's edge, or its own firm's under self-trade prevention).
//! - **Self-trade prevention** between orders of the same firm, mode from configuration:
//!   cancel the resting order (and keep matching), cancel the incoming order, both, or
//!   none (they trade). The incoming order's owner decides: its own mode if it has one,
//!   else the venue's.
//! - **Price band** (`band_bps`, 0 = off) guards what can execute: a trade prints only
//!   within `band_bps` of the instrument's last trade price (`ref_price` before any), taken
//!   when the order arrives and held for all of its trades. It refuses no price: a limit
//!   order anywhere in the fat-finger range is accepted and, if it does not cross, rests at
//!   its limit. A marketable order stops at the first price outside the band: beyond its
//!   far edge (a buy above the upper one), or beyond its near edge (a buy facing an offer
//!   that rests below the lower one: by price priority nothing behind that offer may trade
//!   either). An IOC or market remainder is then canceled as usual. A remainder that would
//!   still cross the book is canceled with reason price band when `band_remainder` is
//!   `Cancel`; with `Rest` it rests at the band edge (rounded to a tick inside the band,
//!   reported by [`EventBody::Repriced`]), since at its own limit it would cross the orders
//!   beyond the band, unless even the edge would cross (the near-edge case): then it is
//!   canceled. An order the band may reprice needs, to be accepted with the level pool
//!   full, a level at both its limit and its band edge.
//! - **Fat-finger range** (`fat_finger_bps`, 0 = off): a limit price further than
//!   `fat_finger_bps` from the configured `ref_price` is rejected (`PriceOutsideBand`). It
//!   is centred on `ref_price`, not on the last trade: fixed for the day, known to members
//!   in advance, and a runaway market cannot drag it along (the band and the breaker follow
//!   the market). Off, only `min_price` and `max_price` apply.
//! - **Circuit breaker** (`breaker_bps`, 0 = off; `breaker_window_secs` N,
//!   `breaker_pause_secs` M): a trade in second S (the command's timestamp in whole
//!   seconds, never earlier than the instrument's last trade's) is checked against the
//!   breaker reference price: the mean, rounded down, of the prices of the instrument's
//!   trades in seconds S - N to S - 1 (each execution counts once, whatever its size); if
//!   there were none, its last trade price before second S; before any trade, `ref_price`.
//!   A trade more than `breaker_bps` from it does not happen: the instrument is paused
//!   (trading action paused, reason `LUDP`), the incoming order's remainder is canceled
//!   (reason circuit breaker) and the resting order stays. While paused, new orders and
//!   replaces are rejected as halted; cancels are taken. M seconds after the trip the first
//!   command at or past that time (any command, or a [`VenueCommand::Timer`]) resumes it
//!   before it is applied (trading action trading, reason spaces);
//!   [`Matcher::next_deadline`] says when. An operator's state for the instrument overrides
//!   the pause: it holds, and no resume follows. A pause that ends under the venue halt
//!   changes the instrument's own state silently; lifting the halt reports it.
//! - **References** follow [`BookConfig::refs`]. Under OUCH's rule ([`RefRule::Ouch`], what
//!   the pipeline runs) each owner's [`UserRef`](crate::types::UserRef)s of new orders,
//!   replaces and mass cancels must strictly increase; a repeated or lower one is rejected
//!   with no effect. A failed replace does not consume its reference (OUCH behaviour).
//!   With caller keys ([`RefRule::Keys`], for embedders) a reference is any 64-bit key
//!   unique among its owner's live orders: a live one is rejected with no effect, and a
//!   key is free again once its order has left the book.
//! - **Time in force and the day**: each [`TimeInForce`] is accepted only in the phases of
//!   the day [`TimeInForce::accepted_in`] allows (else [`RejectReason::Closed`]); the end of
//!   market hours cancels Day orders, the end of system hours every resting order (reason
//!   [`CancelReason::Closed`]); a good-till-time order is canceled
//!   ([`CancelReason::Expired`]) before the first command stamped at or after its expire
//!   time. Without a schedule ([`BookConfig::scheduled`] off) every time in force is accepted
//!   at any time.
//! - **Trading states**: halted or paused, new orders and replaces are rejected
//!   ([`RejectReason::Halted`]; a replace's original stays) and nothing executes; quotation
//!   only rejects what would cross. The venue halt applies over every instrument's state.
//! - **Capacity**: an order that could rest (Day limit) is rejected up front when the order
//!   pool is full, or when its price level does not exist and the level pool is full.
//!
//! [`Matcher`] is the fast book; [`reference::ReferenceMatcher`] is the simple model it is
//! tested against.

mod breaker;
mod divisor;
pub mod flow;
mod ladder;
mod matcher;
pub mod message;
mod owners;
mod pool;
mod prefetch;
mod ref_index;
pub mod reference;
mod symbols;

pub use breaker::{Bucket, WindowState};
pub use matcher::{BookState, LevelView, Matcher, PREFETCH_ORDERS_MIN, RestingState};
pub use message::*;

use crate::types::{Firm, Price, Symbol};

/// Ticks between an instrument's lowest and highest price at most: each side's ladder
/// indexes every tick (4 bytes of address space per tick and side, resident only where
/// prices are used), so a range of 2^26 ticks reserves 256 MiB per side.
pub const LADDER_TICKS_MAX: u64 = 1 << 26;

/// [`BookConfig::orders_max`] at most: the reference index keeps a 32-bit home per
/// entry in a table of twice the order pool ([`Matcher::new`] panics above it).
pub const ORDERS_MAX: u32 = 1 << 31;

/// One tradable instrument and its pre-trade limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstrumentSpec {
    /// Symbol, unique.
    pub symbol: Symbol,
    /// Prices must be multiples of this; > 0.
    pub tick: Price,
    /// Quantities must be multiples of this; > 0.
    pub lot: u32,
    /// Lowest limit price accepted.
    pub min_price: Price,
    /// Highest limit price accepted.
    pub max_price: Price,
    /// Largest order quantity accepted.
    pub max_qty: u32,
    /// Reference price at start of day: the centre of the fat-finger range all day, and of
    /// the band and the circuit breaker until the first trade.
    pub ref_price: Price,
    /// Price band half-width in basis points of the last trade price (0 = off, at most
    /// 10 000): an order trades only at prices within it. See the module docs.
    pub band_bps: u32,
    /// What becomes of a limit order's remainder that the band kept from trading.
    pub band_remainder: BandRemainder,
    /// Fat-finger range half-width in basis points of `ref_price` (0 = off, at most
    /// 100 000): limit prices outside it are rejected.
    pub fat_finger_bps: u32,
    /// Circuit breaker half-width in basis points of the breaker reference price (0 = off,
    /// at most 10 000): a trade outside it pauses the instrument instead.
    pub breaker_bps: u32,
    /// Seconds of trades the breaker reference price is the mean of (1..=3 600 when the
    /// breaker is on).
    pub breaker_window_secs: u32,
    /// Seconds a breaker pause lasts (1..=86 400 when the breaker is on).
    pub breaker_pause_secs: u32,
}

/// What becomes of the rest of a limit order that could trade further, but only outside
/// the price band.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum BandRemainder {
    /// Canceled ([`CancelReason::PriceBand`], OUCH `D`).
    Cancel,
    /// Rests at the band edge, the furthest price it could trade at ([`EventBody::Repriced`],
    /// OUCH Order Restated `P`): at its own limit it would cross the orders beyond the band.
    Rest,
}

/// A configured user as the matcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OwnerSpec {
    /// The user's firm.
    pub firm: Firm,
    /// Cancel the user's orders when its session disconnects.
    pub cancel_on_disconnect: bool,
    /// Self-trade prevention for this user's incoming orders; `None` takes the venue's
    /// [`BookConfig::stp`]. Left out of the serialized form when `None`, so the journal
    /// fingerprint of a configuration without overrides is what it always was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stp: Option<StpMode>,
}

/// What self-trade prevention does when two orders of the same firm would trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum StpMode {
    /// Cancel the resting order, keep matching the incoming one.
    CancelResting,
    /// Cancel the rest of the incoming order.
    CancelIncoming,
    /// Cancel both.
    CancelBoth,
    /// No prevention: orders of the same firm trade with each other like any others.
    None,
}

/// Everything the matcher needs at start-up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BookConfig {
    /// Instruments; index = [`InstrumentId`](crate::types::InstrumentId).
    pub instruments: Vec<InstrumentSpec>,
    /// Users; index = [`OwnerId`](crate::types::OwnerId).
    pub owners: Vec<OwnerSpec>,
    /// Resting orders at most, all instruments together; at most [`ORDERS_MAX`].
    pub orders_max: u32,
    /// Price levels at most, all instruments and sides together.
    pub levels_max: u32,
    /// Self-trade prevention mode of owners without one of their own.
    pub stp: StpMode,
    /// The venue runs a trading day (`[venue]` in the configuration): the matcher starts
    /// closed and follows [`VenueCommand::SystemEvent`]s. Without it every time in force is
    /// accepted at any time. Left out of the serialized form when off, so the journal
    /// fingerprint of an unscheduled configuration is what it always was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub scheduled: bool,
    /// How users' references behave: OUCH's rule (the pipeline) or a caller's own keys
    /// (an embedded core). Left out of the serialized form for OUCH, so the journal
    /// fingerprint of every configuration the pipeline runs is what it always was.
    #[serde(skip_serializing_if = "RefRule::is_ouch")]
    pub refs: RefRule,
}

/// What a user's reference ([`UserRef`](crate::types::UserRef)) of an order is, and which
/// rule the matcher applies to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum RefRule {
    /// OUCH's UserRefNum: each owner's references of new orders, replaces and mass cancels
    /// must strictly increase; a repeated or lower one is rejected
    /// ([`RejectReason::DuplicateUserRef`]), a failed replace does not consume its
    /// reference, a cancel of a reference used before but no longer live is
    /// [`RejectReason::OrderNotLive`], and an account query answers the next reference.
    /// What the pipeline runs: OUCH sessions number their messages this way.
    #[default]
    Ouch,
    /// The caller's own 64-bit keys, in any order: a key must be unique among the owner's
    /// live orders (a new order or replace with a live key is rejected as
    /// [`RejectReason::DuplicateUserRef`]; a replace may keep its order's key), and is
    /// free again once its order has left the book. No history is kept: a cancel of a key
    /// that is not live is [`RejectReason::UnknownOrder`], mass cancels take any key, and
    /// an account query answers 1. For embedding the core with the caller's order ids:
    /// they go through the matcher's own index, no second table needed.
    Keys,
}

impl RefRule {
    /// Whether this is [`RefRule::Ouch`].
    pub fn is_ouch(&self) -> bool {
        *self == RefRule::Ouch
    }
}

impl BookConfig {
    /// The self-trade prevention mode that applies to `owner`'s incoming orders.
    pub fn stp_of(&self, owner: usize) -> StpMode {
        self.owners[owner].stp.unwrap_or(self.stp)
    }
}

impl InstrumentSpec {
    /// Ticks from `min_price` to `max_price`, both included.
    pub fn ticks(&self) -> u64 {
        (self.max_price.0 - self.min_price.0) / self.tick.0 + 1
    }

    /// The band edges around `reference` (the last trade): `(low, high)`, inclusive;
    /// `None` when the band is off.
    pub fn band(&self, reference: Price) -> Option<(Price, Price)> {
        (self.band_bps > 0).then(|| edges(reference, self.band_bps))
    }

    /// The fat-finger range: `(low, high)`, inclusive, around `ref_price`; the whole price
    /// range (`min_price..=max_price`) when it is off.
    pub fn fat_finger(&self) -> (Price, Price) {
        if self.fat_finger_bps == 0 {
            (self.min_price, self.max_price)
        } else {
            edges(self.ref_price, self.fat_finger_bps)
        }
    }

    /// The circuit breaker's edges around its reference price `mean`: `(low, high)`,
    /// inclusive (a trade at an edge happens); `None` when the breaker is off.
    pub fn breaker(&self, mean: Price) -> Option<(Price, Price)> {
        (self.breaker_bps > 0).then(|| edges(mean, self.breaker_bps))
    }
}

/// `centre` plus and minus `bps` basis points of it (the low edge stops at 0).
/// `Matcher::new` checks that `max_price` times `10_000 + bps` fits in 64 bits, and every
/// centre is at most `max_price` (a reference price, the last trade's or the breaker's mean
/// of trades), so neither the product nor the high edge overflows.
fn edges(centre: Price, bps: u32) -> (Price, Price) {
    let half = centre.0 * u64::from(bps) / 10_000;
    (Price(centre.0.saturating_sub(half)), Price(centre.0 + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edges around the largest centre `Matcher::new` admits for a `bps` do not overflow.
    #[test]
    fn edges_of_the_largest_admitted_price_do_not_overflow() {
        assert_eq!(edges(Price(10_000), 1_000), (Price(9_000), Price(11_000)));
        assert_eq!(edges(Price(100), 20_000), (Price(0), Price(300)));
        for bps in [1, 1_000, 10_000, 100_000] {
            let max = u64::MAX / (10_000 + u64::from(bps));
            let half = u128::from(max) * u128::from(bps) / 10_000;
            let exact = (
                Price(u64::try_from(u128::from(max).saturating_sub(half)).unwrap()),
                Price(u64::try_from(u128::from(max) + half).unwrap()),
            );
            assert_eq!(edges(Price(max), bps), exact, "{bps}");
        }
    }
}
