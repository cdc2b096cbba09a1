//! Core events to OUCH 5.0 outbound messages (gateway thread, egress).
//!
//! Pure mapping: each order event becomes one OUCH message for its owner, written into a
//! buffer; market-data events are not order-entry messages and give `None`.

use zerocopy::big_endian::{U16, U32, U64};

use crate::book::{
    CancelReason, DayEvent, Event, EventBody, Liquidity, OrderAck, RejectReason, TimeInForce,
};
use crate::types::{Firm, OwnerId, Side, Symbol, UserRef};
use crate::wire::ouch::{self, Options, outbound, write_fixed, write_with_options};

/// The OUCH Rejected code for a reject reason. OUCH's code set is fixed, so several of
/// ironmatch's reasons share a code; the journal keeps the exact reason.
pub fn reject_code(reason: RejectReason) -> u16 {
    match reason {
        RejectReason::UnknownInstrument => 0x0017,
        RejectReason::ZeroQty | RejectReason::QtyOffLot => 0x0013,
        RejectReason::QtyAboveMax => 0x001E,
        RejectReason::PriceOffTick | RejectReason::PriceOutOfRange => 0x001D,
        RejectReason::PriceOutsideBand => 0x0006,
        RejectReason::InvalidMinQty => 0x000D,
        RejectReason::InvalidMaxFloor => 0x0004,
        RejectReason::PostOnlyCannotRest => 0x0003,
        RejectReason::PostOnlyWouldTake => 0x0012,
        RejectReason::UnknownOrder | RejectReason::OrderNotLive => 0x0010,
        RejectReason::InvalidSide => 0x0009,
        RejectReason::FirmNotAuthorized => 0x000C,
        RejectReason::InvalidDisplay => 0x0003,
        RejectReason::PeggingNotAllowed => 0x0011,
        RejectReason::InvalidCrossOrder | RejectReason::Unsupported => 0x0014,
        RejectReason::RetailNotAllowed => 0x001A,
        RejectReason::UnknownOwner | RejectReason::OrderPoolFull | RejectReason::LevelPoolFull => {
            0x000A
        }
        RejectReason::DuplicateUserRef
        | RejectReason::Throttled
        | RejectReason::InvalidExpireTime
        | RejectReason::NotOffered => 0x000F,
        RejectReason::Halted => 0x0007,
        RejectReason::Closed => 0x0002,
    }
}

/// The OUCH cancel reason byte.
pub fn cancel_code(reason: CancelReason) -> u8 {
    match reason {
        CancelReason::UserRequested => b'U',
        CancelReason::Ioc => b'I',
        CancelReason::CannotExecute => b'K',
        CancelReason::Disconnect | CancelReason::ReplaceFailed => b'Z',
        CancelReason::Closed => b'E',
        CancelReason::Expired => b'T',
        CancelReason::Halted => b'H',
        CancelReason::Supervisory => b'S',
        CancelReason::PriceBand => b'D',
        CancelReason::CircuitBreaker => b'H',
    }
}

/// The OUCH liquidity flag.
pub fn liquidity_code(liquidity: Liquidity) -> u8 {
    match liquidity {
        Liquidity::Added => b'A',
        Liquidity::AddedHidden => b'J',
        Liquidity::Removed => b'R',
    }
}

fn tif_code(tif: TimeInForce) -> u8 {
    match tif {
        TimeInForce::Day => b'0',
        TimeInForce::Ioc => b'3',
        TimeInForce::Gtx => b'5',
        TimeInForce::Gtt { .. } => b'6',
        TimeInForce::AfterHours => b'E',
    }
}

/// The OUCH System Event code for a transition of the day, if OUCH has one: `S` start of
/// day at the start of system hours, `E` end of day at their end.
pub fn ouch_system_event(event: DayEvent) -> Option<u8> {
    match event {
        DayEvent::StartOfSystemHours => Some(b'S'),
        DayEvent::EndOfSystemHours => Some(b'E'),
        _ => None,
    }
}

/// Writes an OUCH System Event.
pub fn encode_system_event(ts: u64, code: u8, out: &mut Vec<u8>) {
    let m = ouch::SystemEvent {
        msg_type: outbound::SYSTEM_EVENT,
        timestamp: U64::new(ts),
        event_code: code,
    };
    write_fixed(out, &m);
}

/// OUCH's Order State on Accepted and Replaced: `D` (dead: accepted but already out) for an
/// IOC or market order, which never rests (it trades what it can on arrival, the rest is
/// canceled), else `L` (live). A limit order that lives the day but is filled or canceled
/// in full on arrival is still `L`: the event is written before the order trades, and
/// nothing in it says how its arrival ends.
fn order_state(order: &OrderAck) -> u8 {
    // A market order is acknowledged with price 0 (`OrderAck::price`).
    if matches!(order.tif, TimeInForce::Ioc) || order.price.0 == 0 {
        b'D'
    } else {
        b'L'
    }
}

fn display_code(order: &OrderAck) -> u8 {
    match (order.hidden, order.post_only) {
        (true, _) => b'N',
        (false, true) => b'P',
        (false, false) => b'Y',
    }
}

/// The options echoed on Accepted and Replaced (OUCH carries CustomerType on Enter and
/// Accepted only: `replaced` leaves it out).
fn ack_options(order: &OrderAck, replaced: bool) -> Options {
    Options {
        firm: Some(order.firm.0),
        min_qty: (order.min_qty.0 > 0).then_some(order.min_qty.0),
        max_floor: (order.max_floor.0 > 0).then_some(order.max_floor.0),
        customer_type: (!replaced && order.echo.customer_type != b' ')
            .then_some(order.echo.customer_type),
        post_only: order.post_only.then_some(b'P'),
        expire_time: match order.tif {
            TimeInForce::Gtt { expire_secs } => Some(expire_secs),
            _ => None,
        },
        ..Options::default()
    }
}

/// Mass Cancel Response: the request's fields echoed, its Side option (tag 27) among them
/// when it had one.
fn write_mass_cancel_response(
    out: &mut Vec<u8>,
    ts: U64,
    user_ref: UserRef,
    firm: Firm,
    symbol: Symbol,
    side: Option<Side>,
) {
    let m = ouch::MassCancelResponse {
        msg_type: outbound::MASS_CANCEL_RESPONSE,
        timestamp: ts,
        user_ref: U32::new(user_ref.to_ouch()),
        firm: firm.0,
        symbol: symbol.0,
        appendage_len: U16::ZERO,
    };
    let options = Options {
        side: side.map(Side::to_byte),
        ..Options::default()
    };
    write_with_options(out, &m, &options);
}

/// Writes the OUCH message for `event` into `out` and returns its owner, or `None` (and
/// writes nothing) for market-data and venue events (a System Event for every user is
/// written by the gateway with `encode_system_event`). `symbols[i]` is instrument `i`'s symbol.
pub fn encode_event(event: &Event, symbols: &[Symbol], out: &mut Vec<u8>) -> Option<OwnerId> {
    let ts = U64::new(event.ts.0);
    match event.body {
        EventBody::Accepted { owner, order } => {
            let m = ouch::OrderAccepted {
                msg_type: outbound::ACCEPTED,
                timestamp: ts,
                user_ref: U32::new(order.user_ref.to_ouch()),
                side: order.side.to_byte(),
                qty: U32::new(order.qty.0),
                symbol: symbols[usize::from(order.instrument.0)].0,
                price: U64::new(order.price.0),
                tif: tif_code(order.tif),
                display: display_code(&order),
                order_ref: U64::new(order.order_id.0),
                capacity: order.echo.capacity,
                iso: order.echo.iso,
                cross_type: order.echo.cross_type,
                order_state: order_state(&order),
                clordid: order.echo.clordid,
                appendage_len: U16::ZERO,
            };
            write_with_options(out, &m, &ack_options(&order, false));
            Some(owner)
        }
        EventBody::Replaced {
            owner,
            orig_user_ref,
            order,
        } => {
            let m = ouch::OrderReplaced {
                msg_type: outbound::REPLACED,
                timestamp: ts,
                orig_user_ref: U32::new(orig_user_ref.to_ouch()),
                user_ref: U32::new(order.user_ref.to_ouch()),
                side: order.side.to_byte(),
                qty: U32::new(order.qty.0),
                symbol: symbols[usize::from(order.instrument.0)].0,
                price: U64::new(order.price.0),
                tif: tif_code(order.tif),
                display: display_code(&order),
                order_ref: U64::new(order.order_id.0),
                capacity: order.echo.capacity,
                iso: order.echo.iso,
                cross_type: order.echo.cross_type,
                order_state: order_state(&order),
                clordid: order.echo.clordid,
                appendage_len: U16::ZERO,
            };
            write_with_options(out, &m, &ack_options(&order, true));
            Some(owner)
        }
        EventBody::Rejected {
            owner,
            user_ref,
            reason,
            clordid,
        } => {
            let m = ouch::Rejected {
                msg_type: outbound::REJECTED,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
                reason: U16::new(reject_code(reason)),
                clordid,
            };
            write_fixed(out, &m);
            Some(owner)
        }
        EventBody::Canceled {
            owner,
            user_ref,
            qty,
            reason,
            ..
        } => {
            let m = ouch::OrderCanceled {
                msg_type: outbound::CANCELED,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
                qty: U32::new(qty.0),
                reason: cancel_code(reason),
            };
            write_fixed(out, &m);
            Some(owner)
        }
        EventBody::AiqCanceled {
            owner,
            user_ref,
            qty,
            prevented,
            price,
            liquidity,
            ..
        } => {
            let m = ouch::AiqCanceled {
                msg_type: outbound::AIQ_CANCELED,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
                decrement: U32::new(qty.0),
                reason: b'Q',
                prevented: U32::new(prevented.0),
                price: U64::new(price.0),
                liquidity: liquidity_code(liquidity),
            };
            write_fixed(out, &m);
            Some(owner)
        }
        EventBody::Executed {
            owner,
            user_ref,
            qty,
            price,
            liquidity,
            match_id,
            ..
        } => {
            let m = ouch::OrderExecuted {
                msg_type: outbound::EXECUTED,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
                qty: U32::new(qty.0),
                price: U64::new(price.0),
                liquidity: liquidity_code(liquidity),
                match_number: U64::new(match_id.0),
                appendage_len: U16::ZERO,
            };
            write_with_options(out, &m, &Options::default());
            Some(owner)
        }
        EventBody::Modified {
            owner,
            user_ref,
            side,
            qty,
        } => {
            let m = ouch::OrderModified {
                msg_type: outbound::MODIFIED,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
                side: side.to_byte(),
                qty: U32::new(qty.0),
            };
            write_fixed(out, &m);
            Some(owner)
        }
        EventBody::CancelRejected { owner, user_ref } => {
            let m = ouch::CancelReject {
                msg_type: outbound::CANCEL_REJECT,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
            };
            write_fixed(out, &m);
            Some(owner)
        }
        EventBody::Restated {
            owner,
            user_ref,
            display_qty,
            md_ref,
        } => {
            let m = ouch::OrderRestated {
                msg_type: outbound::RESTATED,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
                reason: b'R',
                appendage_len: U16::ZERO,
            };
            let options = Options {
                display_qty: Some(display_qty.0),
                secondary_ord_ref: Some(md_ref.0),
                ..Options::default()
            };
            write_with_options(out, &m, &options);
            Some(owner)
        }
        EventBody::Repriced {
            owner,
            user_ref,
            price,
        } => {
            let m = ouch::OrderRestated {
                msg_type: outbound::RESTATED,
                timestamp: ts,
                user_ref: U32::new(user_ref.to_ouch()),
                reason: b'P',
                appendage_len: U16::ZERO,
            };
            let options = Options {
                display_price: Some(price.0),
                ..Options::default()
            };
            write_with_options(out, &m, &options);
            Some(owner)
        }
        EventBody::AccountQueried {
            owner,
            next_user_ref,
        } => {
            let m = ouch::AccountQueryResponse {
                msg_type: outbound::ACCOUNT_QUERY_RESPONSE,
                timestamp: ts,
                next_user_ref: U32::new(next_user_ref.to_ouch()),
            };
            write_fixed(out, &m);
            Some(owner)
        }
        EventBody::MassCanceled {
            owner,
            user_ref,
            firm,
            symbol,
            ..
        } => {
            write_mass_cancel_response(out, ts, user_ref, firm, symbol, None);
            Some(owner)
        }
        EventBody::MassCanceledSide {
            owner,
            user_ref,
            firm,
            symbol,
            side,
            ..
        } => {
            write_mass_cancel_response(out, ts, user_ref, firm, symbol, Some(side));
            Some(owner)
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{MatchId, OrderId, Price, Qty, Timestamp, UserRef};
    use crate::wire::ouch::{Outbound, decode_outbound};

    /// The gateway's refusals carry OUCH's code for what was asked (5.8), "other" where
    /// OUCH has none; the one reason of journals of format 3 and before keeps the code it
    /// was sent with, so a session's messages rebuilt from such a journal are the same.
    #[test]
    fn the_gateways_refusals_have_ouchs_codes() {
        for (reason, code) in [
            (RejectReason::InvalidDisplay, 0x0003),
            (RejectReason::PeggingNotAllowed, 0x0011),
            (RejectReason::InvalidCrossOrder, 0x0014),
            (RejectReason::RetailNotAllowed, 0x001A),
            (RejectReason::NotOffered, 0x000F),
            (RejectReason::InvalidExpireTime, 0x000F),
            (RejectReason::Unsupported, 0x0014),
        ] {
            assert_eq!(reject_code(reason), code, "{reason:?}");
        }
    }

    #[test]
    fn execution_matches_the_protocol_vector_o3() {
        // O3 from the protocol notes: user ref 1, 40 @ 150.2500, added, match 5000001.
        let event = Event {
            ts: Timestamp(34_200_000_500_000),
            body: EventBody::Executed {
                owner: OwnerId(0),
                user_ref: UserRef(1),
                order_id: OrderId(7),
                qty: Qty(40),
                price: Price(1_502_500),
                liquidity: Liquidity::Added,
                match_id: MatchId(5_000_001),
                leaves: Qty(60),
            },
        };
        let mut out = Vec::new();
        assert_eq!(encode_event(&event, &[], &mut out), Some(OwnerId(0)));
        let expected = [
            0x45, 0x00, 0x00, 0x1f, 0x1a, 0xce, 0xe1, 0x91, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00,
            0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0xed, 0x24, 0x41, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x4c, 0x4b, 0x41, 0x00, 0x00,
        ];
        assert_eq!(out, expected);
        assert!(matches!(decode_outbound(&out), Ok(Outbound::Executed(..))));
    }

    #[test]
    fn a_repriced_order_is_order_restated_p_with_its_display_price() {
        let event = Event {
            ts: Timestamp(1),
            body: EventBody::Repriced {
                owner: OwnerId(2),
                user_ref: UserRef(9),
                price: Price(1_100_000),
            },
        };
        let mut out = Vec::new();
        assert_eq!(encode_event(&event, &[], &mut out), Some(OwnerId(2)));
        let Ok(Outbound::Restated(m, options)) = decode_outbound(&out) else {
            panic!("not an Order Restated: {out:?}");
        };
        assert_eq!((m.user_ref.get(), m.reason), (9, b'P'));
        assert_eq!(options.display_price, Some(1_100_000));
        assert_eq!(cancel_code(CancelReason::PriceBand), b'D');
        assert_eq!(cancel_code(CancelReason::CircuitBreaker), b'H');
    }

    /// The acknowledgement of a 100-share buy of instrument 0 (AAPL in [`encoded`]).
    fn ack(tif: TimeInForce, price: u64) -> OrderAck {
        OrderAck {
            user_ref: UserRef(3),
            order_id: OrderId(11),
            instrument: crate::types::InstrumentId(0),
            side: crate::types::Side::Buy,
            qty: Qty(100),
            price: Price(price),
            tif,
            hidden: false,
            post_only: false,
            min_qty: Qty(0),
            max_floor: Qty(0),
            firm: crate::types::Firm::from_str_padded("MMA").unwrap(),
            echo: crate::book::Echo::default(),
        }
    }

    /// `body`'s OUCH message, instrument 0 being AAPL.
    fn encoded(body: EventBody) -> Vec<u8> {
        let symbols = [crate::types::Symbol::from_str_padded("AAPL").unwrap()];
        let mut out = Vec::new();
        encode_event(
            &Event {
                ts: Timestamp(1),
                body,
            },
            &symbols,
            &mut out,
        );
        out
    }

    /// CustomerType (tag 4) is echoed on Order Accepted, and not on Order Replaced, which
    /// OUCH does not give it.
    #[test]
    fn customer_type_is_echoed_on_accepted_only() {
        let order = OrderAck {
            echo: crate::book::Echo {
                customer_type: b'R',
                ..crate::book::Echo::default()
            },
            ..ack(TimeInForce::Day, 1_000_000)
        };
        let accepted = encoded(EventBody::Accepted {
            owner: OwnerId(0),
            order,
        });
        let Ok(Outbound::Accepted(_, options)) = decode_outbound(&accepted) else {
            panic!("not an Order Accepted: {accepted:?}");
        };
        assert_eq!(options.customer_type, Some(b'R'));
        let replaced = encoded(EventBody::Replaced {
            owner: OwnerId(0),
            orig_user_ref: UserRef(2),
            order,
        });
        let Ok(Outbound::Replaced(_, options)) = decode_outbound(&replaced) else {
            panic!("not an Order Replaced: {replaced:?}");
        };
        assert_eq!(options.customer_type, None);
        assert!(options.firm.is_some(), "the firm still echoed");
    }

    /// Order State: `D` on the acknowledgement of an IOC or a market order (price 0), on
    /// Accepted and Replaced alike; `L` for every other time in force.
    #[test]
    fn ioc_and_market_orders_are_acknowledged_dead() {
        let states = |order: OrderAck| {
            let accepted = encoded(EventBody::Accepted {
                owner: OwnerId(0),
                order,
            });
            let replaced = encoded(EventBody::Replaced {
                owner: OwnerId(0),
                orig_user_ref: UserRef(2),
                order,
            });
            match (decode_outbound(&accepted), decode_outbound(&replaced)) {
                (Ok(Outbound::Accepted(a, _)), Ok(Outbound::Replaced(r, _))) => {
                    (a.order_state, r.order_state)
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(states(ack(TimeInForce::Ioc, 1_000_000)), (b'D', b'D'));
        assert_eq!(states(ack(TimeInForce::Day, 0)), (b'D', b'D'));
        for tif in [
            TimeInForce::Day,
            TimeInForce::Gtx,
            TimeInForce::Gtt { expire_secs: 60 },
            TimeInForce::AfterHours,
        ] {
            assert_eq!(states(ack(tif, 1_000_000)), (b'L', b'L'), "{tif:?}");
        }
    }

    /// Mass Cancel Response echoes the request's fields: its Side option (tag 27) as the
    /// request gave it (sell short is not sell), and none when the request named no side.
    #[test]
    fn a_mass_cancel_response_echoes_the_side() {
        let firm = crate::types::Firm::from_str_padded("MMA").unwrap();
        let symbol = crate::types::Symbol::from_str_padded("AAPL").unwrap();
        let response = |body: EventBody| {
            let out = encoded(body);
            let Ok(Outbound::MassCancelResponse(m, options)) = decode_outbound(&out) else {
                panic!("not a Mass Cancel Response: {out:?}");
            };
            assert_eq!((m.user_ref.get(), m.firm, m.symbol), (7, firm.0, symbol.0));
            (options.side, m.appendage_len.get(), out.len())
        };
        for (side, byte) in [
            (Side::Buy, b'B'),
            (Side::Sell, b'S'),
            (Side::SellShort, b'T'),
            (Side::SellShortExempt, b'E'),
        ] {
            let with_side = EventBody::MassCanceledSide {
                owner: OwnerId(2),
                user_ref: UserRef(7),
                firm,
                symbol,
                side,
                count: 3,
            };
            // The option: its length (1 tag + 1 value byte), tag 27, the side.
            assert_eq!(response(with_side), (Some(byte), 3, 27 + 3));
        }
        let without = EventBody::MassCanceled {
            owner: OwnerId(2),
            user_ref: UserRef(7),
            firm,
            symbol,
            count: 3,
        };
        assert_eq!(response(without), (None, 0, 27));
    }

    #[test]
    fn feed_events_are_not_order_entry_messages() {
        let event = Event {
            ts: Timestamp(1),
            body: EventBody::MdDelete {
                instrument: crate::types::InstrumentId(0),
                md_ref: OrderId(1),
            },
        };
        let mut out = Vec::new();
        assert_eq!(encode_event(&event, &[], &mut out), None);
        assert!(out.is_empty());
    }
}
