//! OUCH 5.0 inbound messages to matcher commands (gateway thread, ingress).
//!
//! Pure mapping. Every field is first checked against its OUCH type ([`validate`]): alpha
//! fields are printable ASCII, enumerations hold one of their values, numbers lie in the
//! protocol's range, and what ironmatch does not offer (a pegged price, a cross) is
//! refused. A message that fails becomes a [`CommandBody::GatewayReject`] with the
//! client's reference, so the refusal is sequenced and journaled like any other reply; its
//! fields never reach a book, and a ClOrdID that is not alpha is answered as spaces, so no
//! byte outside printable ASCII reaches an outbound message. A gateway reject changes
//! nothing and consumes no UserRefNum (the README's "UserRefNum" rule), but a refused
//! Replace becomes a [`CommandBody::InvalidReplace`]: as OUCH has it, its live original is
//! canceled (unless the Replace names another reference channel, whose orders are not
//! channel 0's: it is refused as any message on another channel, touching nothing).

use crate::book::{CommandBody, Echo, NewOrder, RejectReason, ReplaceOrder, TimeInForce};
use crate::types::{Firm, Price, Qty, Side, Symbol, UserRef};
use crate::wire::ouch::{Inbound, Options, is_alpha};

/// OUCH treats a price at or above $200,000.0000 as a market order.
pub const MARKET_PRICE_MIN: u64 = 2_000_000_000;
/// The highest limit price OUCH accepts, $199,999.9900; prices between it and
/// [`MARKET_PRICE_MIN`] are neither limit nor market.
pub const LIMIT_PRICE_MAX: u64 = 1_999_999_900;
/// OUCH quantities (shares, MinQty, MaxFloor) are below 1,000,000.
pub const QTY_MAX: u32 = 999_999;
/// ExpireTime (tag 15) is in seconds and below a day.
pub const EXPIRE_TIME_MAX: u32 = 86_399;

/// Why a message is refused at the gateway: the reject reason and the field at fault (for
/// the log).
pub type Invalid = (RejectReason, &'static str);

/// Whether the message counts against the new-order throttle (cancels are exempt).
pub fn is_throttled(msg: &Inbound<'_>) -> bool {
    matches!(msg, Inbound::Enter(..) | Inbound::Replace(..))
}

/// The reference and ClOrdID to reject a message with. A ClOrdID that is not alpha is
/// answered as spaces: bytes outside printable ASCII are never echoed.
pub fn reject_target(msg: &Inbound<'_>) -> (UserRef, [u8; 14]) {
    let (user_ref, clordid) = match msg {
        Inbound::Enter(m, _) => (m.user_ref.get(), m.clordid),
        Inbound::Replace(m, _) => (m.user_ref.get(), m.clordid),
        Inbound::Cancel(m, _) => (m.user_ref.get(), [b' '; 14]),
        Inbound::Modify(m, _) => (m.user_ref.get(), [b' '; 14]),
        Inbound::MassCancel(m, _) => (m.user_ref.get(), [b' '; 14]),
        Inbound::AccountQuery(_) => (0, [b' '; 14]),
    };
    let clordid = if is_alpha(&clordid) {
        clordid
    } else {
        [b' '; 14]
    };
    (UserRef(u64::from(user_ref)), clordid)
}

/// The time in force of a code; GTT takes its seconds from the ExpireTime option (tag 15).
fn tif(code: u8, options: &Options) -> Option<TimeInForce> {
    match code {
        b'0' => Some(TimeInForce::Day),
        b'3' => Some(TimeInForce::Ioc),
        b'5' => Some(TimeInForce::Gtx),
        b'6' => options
            .expire_time
            .map(|expire_secs| TimeInForce::Gtt { expire_secs }),
        b'E' => Some(TimeInForce::AfterHours),
        _ => None,
    }
}

/// (hidden, post only) for a Display code ironmatch offers.
fn display(code: u8, options: &Options) -> Option<(bool, bool)> {
    let post_only_option = options.post_only == Some(b'P');
    match code {
        b'Y' | b'A' => Some((false, post_only_option)),
        b'N' => Some((true, post_only_option)),
        b'P' | b'L' => Some((false, true)),
        _ => None,
    }
}

fn check(ok: bool, reason: RejectReason, field: &'static str) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err((reason, field)) }
}

/// [`check`] with the reason found only for a refusal (it depends on the value refused).
fn check_by(
    ok: bool,
    reason: impl FnOnce() -> RejectReason,
    field: &'static str,
) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err((reason(), field)) }
}

fn check_side(code: u8, field: &'static str) -> Result<(), Invalid> {
    check(
        Side::from_byte(code).is_some(),
        RejectReason::InvalidSide,
        field,
    )
}

/// The order fields Enter and Replace share: time in force, display, intermarket sweep.
fn check_order_fields(tif_code: u8, display_code: u8, iso: u8, o: &Options) -> Result<(), Invalid> {
    use RejectReason::NotOffered;
    check(
        tif_code != b'6' || o.expire_time.is_some(),
        RejectReason::InvalidExpireTime,
        "expire time (tag 15) missing on a GTT order",
    )?;
    check(tif(tif_code, o).is_some(), NotOffered, "time in force")?;
    check(
        display(display_code, o).is_some(),
        RejectReason::InvalidDisplay,
        "display",
    )?;
    check(matches!(iso, b'Y' | b'N'), NotOffered, "intermarket sweep")
}

/// The options of an Enter or Replace: types, ranges, and what is offered.
fn check_options(o: &Options) -> Result<(), Invalid> {
    use RejectReason::NotOffered;
    if let Some(firm) = o.firm {
        check(
            Firm::is_well_formed(&firm),
            RejectReason::FirmNotAuthorized,
            "firm option",
        )?;
    }
    let qty_ok = |q: Option<u32>| q.is_none_or(|q| q <= QTY_MAX);
    check(qty_ok(o.min_qty), RejectReason::InvalidMinQty, "min qty")?;
    check(
        qty_ok(o.max_floor),
        RejectReason::InvalidMaxFloor,
        "max floor",
    )?;
    let one_of = |v: Option<u8>, set: &[u8]| v.is_none_or(|v| set.contains(&v));
    check(one_of(o.customer_type, b"RN "), NotOffered, "customer type")?;
    // A peg OUCH lists for the field is not allowed; a byte it does not list is no peg at
    // all (§7: price type `P M R Q m`, discretion price type `P M R`).
    let pegged = |v: Option<u8>, pegs: &[u8]| {
        if v.is_some_and(|v| pegs.contains(&v)) {
            RejectReason::PeggingNotAllowed
        } else {
            NotOffered
        }
    };
    check_by(
        one_of(o.price_type, b"L"),
        || pegged(o.price_type, b"PMRQm"),
        "price type",
    )?;
    check(
        o.peg_offset.is_none_or(|p| p == 0),
        RejectReason::PeggingNotAllowed,
        "peg offset",
    )?;
    check(one_of(o.post_only, b"PN"), NotOffered, "post only")?;
    // Discretion, random reserves and handling instructions (imbalance-only, retail and
    // other crosses) are not offered: taking such an order as a plain one would trade it
    // where and when its member did not ask. Their values meaning "none" are taken (a
    // discretion price type of space too: the filler of an option not set).
    check_by(
        one_of(o.discretion_price_type, b"L "),
        || pegged(o.discretion_price_type, b"PMR"),
        "discretion price type",
    )?;
    check(
        o.discretion_price.is_none_or(|p| p == 0) && o.discretion_peg_offset.is_none_or(|p| p == 0),
        NotOffered,
        "discretion",
    )?;
    check(
        o.random_reserves.is_none_or(|r| r == 0),
        NotOffered,
        "random reserves",
    )?;
    // No instruction: the option left out, as the specification's connectors do. A space
    // or `N` is taken as none too, a leniency (neither is an instruction the document
    // lists, nor asks for anything the continuous book does not do).
    // A retail instruction, a cross's (imbalance only, extended life, direct listing) or
    // any other: each with OUCH's code for it.
    let handling = || match o.handle_inst {
        Some(b'O' | b'T' | b'Q' | b'R') => RejectReason::RetailNotAllowed,
        Some(b'I' | b'B' | b'D') => RejectReason::InvalidCrossOrder,
        _ => NotOffered,
    };
    check_by(one_of(o.handle_inst, b" N"), handling, "handle inst")?;
    check(one_of(o.trade_now, b"YN "), NotOffered, "trade now")?;
    check(
        o.expire_time.is_none_or(|t| t <= EXPIRE_TIME_MAX),
        RejectReason::InvalidExpireTime,
        "expire time",
    )?;
    let alpha = |v: Option<u8>| v.is_none_or(|v| is_alpha(&[v]));
    check(
        alpha(o.bbo_weight) && alpha(o.reference_price_type),
        NotOffered,
        "alpha option",
    )
}

/// ironmatch keeps one UserRefNum sequence per user: a message naming another order-flow
/// channel (UserRefIdx other than 0, OUCH's tag 28) is refused rather than numbered, or
/// answered, as if it were channel 0's.
fn one_channel(o: &Options) -> Result<(), Invalid> {
    check(
        o.user_ref_idx.is_none_or(|i| i == 0),
        RejectReason::NotOffered,
        "user ref idx",
    )
}

/// Checks every field of a decoded message against its OUCH type and what ironmatch
/// offers. The ClOrdID is checked first, so any later refusal can echo it.
pub fn validate(msg: &Inbound<'_>) -> Result<(), Invalid> {
    use RejectReason::{NotOffered, PriceOutOfRange, QtyAboveMax, UnknownInstrument};
    match msg {
        Inbound::Enter(m, o) => {
            check(is_alpha(&m.clordid), NotOffered, "ClOrdID")?;
            check_side(m.side, "side")?;
            check(m.qty.get() <= QTY_MAX, QtyAboveMax, "quantity")?;
            check(is_alpha(&m.symbol), UnknownInstrument, "symbol")?;
            let price = m.price.get();
            let price_ok = price <= LIMIT_PRICE_MAX || price >= MARKET_PRICE_MIN;
            check(price_ok, PriceOutOfRange, "price")?;
            check_order_fields(m.tif, m.display, m.iso, o)?;
            check(
                matches!(m.capacity, b'A' | b'P' | b'R' | b'O'),
                NotOffered,
                "capacity",
            )?;
            // A cross OUCH lists (§5.5) is OUCH's "invalid cross order"; any other byte is
            // no cross at all.
            check_by(
                m.cross_type == b'N',
                || {
                    if b"OCHSREA".contains(&m.cross_type) {
                        RejectReason::InvalidCrossOrder
                    } else {
                        NotOffered
                    }
                },
                "cross type",
            )?;
            check_options(o)?;
            one_channel(o)
        }
        Inbound::Replace(m, o) => {
            check(is_alpha(&m.clordid), NotOffered, "ClOrdID")?;
            check(m.qty.get() <= QTY_MAX, QtyAboveMax, "quantity")?;
            // A market replace is not offered (OUCH's "invalid price"); between the two
            // ranges is no price at all.
            check(
                m.price.get() < MARKET_PRICE_MIN,
                PriceOutOfRange,
                "market price",
            )?;
            check(m.price.get() <= LIMIT_PRICE_MAX, PriceOutOfRange, "price")?;
            check_order_fields(m.tif, m.display, m.iso, o)?;
            check_options(o)?;
            one_channel(o)
        }
        Inbound::Cancel(_, o) | Inbound::AccountQuery(o) => one_channel(o),
        Inbound::Modify(m, o) => {
            check_side(m.side, "side")?;
            one_channel(o)
        }
        Inbound::MassCancel(m, o) => {
            check(
                Firm::is_well_formed(&m.firm),
                RejectReason::FirmNotAuthorized,
                "firm",
            )?;
            check(is_alpha(&m.symbol), UnknownInstrument, "symbol")?;
            // ironmatch keeps no customer group and one reference sequence per user, so
            // it cannot apply these criteria: refused, rather than canceling more than
            // was asked (0 means none, as the option's absence).
            check(
                o.group_id.is_none_or(|g| g == 0),
                NotOffered,
                "group id criterion",
            )?;
            one_channel(o)?;
            o.side.map_or(Ok(()), |s| check_side(s, "side option"))
        }
    }
}

/// An Enter or Replace names, in its Firm option, the user's own firm or none (blank is
/// the user's too). Another firm's would take that firm's self-trade prevention (cancel its
/// quotes without a trade) and, on an attributed feed, its name: not authorized. (The core
/// trusts the firm its caller gives an order; here the caller is the member's session.)
fn authorized(msg: &Inbound<'_>, user_firm: Firm) -> Result<(), Invalid> {
    let option = match msg {
        Inbound::Enter(_, o) | Inbound::Replace(_, o) => o.firm,
        _ => None,
    };
    check(
        option.is_none_or(|f| f == *b"    " || Firm(f) == user_firm),
        RejectReason::FirmNotAuthorized,
        "firm option (not the user's firm)",
    )
}

/// Maps a decoded message from a user of firm `user_firm` to a matcher command: a
/// [`CommandBody::GatewayReject`] if [`validate`] refuses it ([`CommandBody::InvalidReplace`]
/// for a Replace, whose original OUCH cancels, unless the Replace names another reference
/// channel: its original is not one of channel 0's orders, so none is touched).
pub fn to_command(msg: &Inbound<'_>, user_firm: Firm) -> CommandBody {
    if let Err((reason, _field)) = validate(msg).and_then(|()| authorized(msg, user_firm)) {
        let (user_ref, clordid) = reject_target(msg);
        // OUCH: a live order whose replace is invalid is canceled; the matcher does it.
        if let Inbound::Replace(m, o) = msg
            && one_channel(o).is_ok()
        {
            return CommandBody::InvalidReplace {
                orig_user_ref: UserRef(u64::from(m.orig_user_ref.get())),
                user_ref,
                reason,
                clordid,
            };
        }
        return CommandBody::GatewayReject {
            user_ref,
            reason,
            clordid,
        };
    }
    // Validated: every enumeration below holds a value that maps.
    let side_of = |code| Side::from_byte(code).expect("validated");
    match msg {
        Inbound::Enter(m, o) => {
            let tif = tif(m.tif, o).expect("validated");
            let (hidden, post_only) = display(m.display, o).expect("validated");
            let price = m.price.get();
            CommandBody::New(NewOrder {
                user_ref: UserRef(u64::from(m.user_ref.get())),
                side: side_of(m.side),
                qty: Qty(m.qty.get()),
                symbol: Symbol(m.symbol),
                price: (price < MARKET_PRICE_MIN).then_some(Price(price)),
                tif,
                hidden,
                post_only,
                min_qty: Qty(o.min_qty.unwrap_or(0)),
                max_floor: Qty(o.max_floor.unwrap_or(0)),
                // A blank firm option means the account's default firm.
                firm: o.firm.filter(|f| f != b"    ").map_or(user_firm, Firm),
                echo: Echo {
                    capacity: m.capacity,
                    iso: m.iso,
                    cross_type: m.cross_type,
                    customer_type: o.customer_type.unwrap_or(b' '),
                    clordid: m.clordid,
                },
            })
        }
        Inbound::Replace(m, o) => {
            let tif = tif(m.tif, o).expect("validated");
            let (hidden, post_only) = display(m.display, o).expect("validated");
            CommandBody::Replace(ReplaceOrder {
                orig_user_ref: UserRef(u64::from(m.orig_user_ref.get())),
                user_ref: UserRef(u64::from(m.user_ref.get())),
                qty: Qty(m.qty.get()),
                price: Price(m.price.get()),
                tif,
                hidden,
                post_only,
                min_qty: Qty(o.min_qty.unwrap_or(0)),
                max_floor: Qty(o.max_floor.unwrap_or(0)),
                echo: Echo {
                    iso: m.iso,
                    clordid: m.clordid,
                    ..Echo::default()
                },
            })
        }
        Inbound::Cancel(m, _) => CommandBody::Cancel {
            user_ref: UserRef(u64::from(m.user_ref.get())),
            qty: Qty(m.qty.get()),
        },
        Inbound::Modify(m, _) => CommandBody::Modify {
            user_ref: UserRef(u64::from(m.user_ref.get())),
            side: side_of(m.side),
            qty: Qty(m.qty.get()),
        },
        Inbound::MassCancel(m, o) => CommandBody::MassCancel {
            user_ref: UserRef(u64::from(m.user_ref.get())),
            // Blank means the account's firm, as on an Enter Order.
            firm: if m.firm == *b"    " {
                user_firm
            } else {
                Firm(m.firm)
            },
            symbol: Symbol(m.symbol),
            side: o.side.map(side_of),
        },
        Inbound::AccountQuery(_) => CommandBody::AccountQuery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ouch::decode_inbound;

    fn enter(display: u8, tif_code: u8, price: u64, options: &[u8]) -> Vec<u8> {
        let mut m = vec![b'O', 0, 0, 0, 9, b'B', 0, 0, 0, 100];
        m.extend_from_slice(b"AAPL    ");
        m.extend_from_slice(&price.to_be_bytes());
        m.extend_from_slice(&[tif_code, display, b'A', b'N', b'N']);
        m.extend_from_slice(b"MYORDER-1     ");
        m.extend_from_slice(&(options.len() as u16).to_be_bytes());
        m.extend_from_slice(options);
        m
    }

    fn firm() -> Firm {
        Firm::from_str_padded("MMA").unwrap()
    }

    #[test]
    fn enter_maps_every_field() {
        let bytes = enter(
            b'Y',
            b'0',
            1_502_500,
            &[5, 3, 0, 0, 0, 50, 5, 5, 0, 0, 0, 20],
        );
        let CommandBody::New(o) = to_command(&decode_inbound(&bytes).unwrap(), firm()) else {
            panic!()
        };
        assert_eq!(
            (o.user_ref, o.side, o.qty),
            (UserRef(9), Side::Buy, Qty(100))
        );
        assert_eq!(
            (o.price, o.tif, o.hidden, o.post_only),
            (Some(Price(1_502_500)), TimeInForce::Day, false, false)
        );
        assert_eq!((o.min_qty, o.max_floor, o.firm), (Qty(50), Qty(20), firm()));
        assert_eq!(&o.echo.clordid, b"MYORDER-1     ");
    }

    #[test]
    fn market_hidden_post_only_and_ioc() {
        let market = enter(b'Y', b'3', 2_147_483_647, &[]);
        let CommandBody::New(o) = to_command(&decode_inbound(&market).unwrap(), firm()) else {
            panic!()
        };
        assert_eq!((o.price, o.tif), (None, TimeInForce::Ioc));
        let hidden = enter(b'N', b'0', 100, &[]);
        let CommandBody::New(o) = to_command(&decode_inbound(&hidden).unwrap(), firm()) else {
            panic!()
        };
        assert!(o.hidden);
        let post = enter(b'P', b'0', 100, &[]);
        let CommandBody::New(o) = to_command(&decode_inbound(&post).unwrap(), firm()) else {
            panic!()
        };
        assert!(o.post_only);
    }

    #[test]
    fn every_time_in_force_maps_and_gtt_needs_its_expire_time() {
        for (code, options, tif) in [
            (b'0', &[][..], TimeInForce::Day),
            (b'3', &[], TimeInForce::Ioc),
            (b'5', &[], TimeInForce::Gtx),
            (
                b'6',
                &[5, 15, 0, 0, 0x0e, 0x10],
                TimeInForce::Gtt { expire_secs: 3600 },
            ),
            (b'E', &[], TimeInForce::AfterHours),
        ] {
            let bytes = enter(b'Y', code, 100, options);
            let CommandBody::New(o) = to_command(&decode_inbound(&bytes).unwrap(), firm()) else {
                panic!("{}", char::from(code))
            };
            assert_eq!(o.tif, tif);
        }
        let cmd = to_command(
            &decode_inbound(&enter(b'Y', b'6', 100, &[])).unwrap(),
            firm(),
        );
        assert!(matches!(
            cmd,
            CommandBody::GatewayReject {
                reason: RejectReason::InvalidExpireTime,
                ..
            }
        ));
    }

    /// Each with the reason OUCH has a code for, or OUCH's "other" where it has none.
    #[test]
    fn what_is_not_offered_is_rejected_with_the_clients_reference() {
        for (bytes, reason) in [
            (enter(b'Y', b'7', 100, &[]), RejectReason::NotOffered),
            (enter(b'M', b'0', 100, &[]), RejectReason::InvalidDisplay),
            (
                enter(b'Y', b'0', 100, &[2, 6, b'M']),
                RejectReason::PeggingNotAllowed,
            ),
            (
                enter(b'Y', b'0', 100, &[5, 7, 0, 0, 0, 1]),
                RejectReason::PeggingNotAllowed,
            ),
            (
                enter(b'Y', b'0', 100, &[5, 15, 0, 1, 0x51, 0x80]),
                RejectReason::InvalidExpireTime,
            ),
        ] {
            let cmd = to_command(&decode_inbound(&bytes).unwrap(), firm());
            assert_eq!(
                cmd,
                CommandBody::GatewayReject {
                    user_ref: UserRef(9),
                    reason,
                    clordid: *b"MYORDER-1     "
                }
            );
        }
    }

    /// Discretion, random reserves and handling instructions are not offered: an order
    /// asking for them is refused, not taken as a plain one; their "none" values pass.
    #[test]
    fn discretion_random_reserves_and_handling_instructions_are_refused() {
        use RejectReason::{InvalidCrossOrder, NotOffered, PeggingNotAllowed, RetailNotAllowed};
        for (what, options, reason) in [
            (
                "discretion price",
                &[9, 9, 0, 0, 0, 0, 0, 0, 0x27, 0x10][..],
                NotOffered,
            ),
            ("discretion peg", &[2, 10, b'M'], PeggingNotAllowed),
            ("discretion type not listed", &[2, 10, b'X'], NotOffered),
            ("price type not listed", &[2, 6, b'X'], NotOffered),
            ("market-maker peg", &[2, 6, b'Q'], PeggingNotAllowed),
            (
                "discretion type Q, not listed for it",
                &[2, 10, b'Q'],
                NotOffered,
            ),
            (
                "discretion type m, not listed for it",
                &[2, 10, b'm'],
                NotOffered,
            ),
            (
                "discretion peg offset",
                &[5, 11, 0xFF, 0xFF, 0xFF, 0x9C],
                NotOffered,
            ),
            ("random reserves", &[5, 13, 0, 0, 0, 100], NotOffered),
            ("imbalance only", &[2, 17, b'I'], InvalidCrossOrder),
            ("extended life", &[2, 17, b'B'], InvalidCrossOrder),
            ("direct listing", &[2, 17, b'D'], InvalidCrossOrder),
            ("retail type 1", &[2, 17, b'O'], RetailNotAllowed),
            ("retail type 2", &[2, 17, b'T'], RetailNotAllowed),
            ("retail price improvement", &[2, 17, b'Q'], RetailNotAllowed),
            ("retail RPI", &[2, 17, b'R'], RetailNotAllowed),
            ("no such instruction", &[2, 17, b'X'], NotOffered),
        ] {
            let bytes = enter(b'Y', b'0', 100, options);
            assert_eq!(rejected(&bytes), (reason, *b"MYORDER-1     "), "{what}");
        }
        for (what, options) in [
            ("no discretion", &[9, 9, 0, 0, 0, 0, 0, 0, 0, 0][..]),
            ("limit discretion type", &[2, 10, b'L']),
            ("blank discretion type", &[2, 10, b' ']),
            ("no discretion offset", &[5, 11, 0, 0, 0, 0]),
            ("no random reserves", &[5, 13, 0, 0, 0, 0]),
            ("no instruction", &[2, 17, b' ']),
            ("no instruction, N", &[2, 17, b'N']),
            ("route, not applied", &[5, 14, b'I', b'N', b'E', b'T']),
        ] {
            let bytes = enter(b'Y', b'0', 100, options);
            let cmd = to_command(&decode_inbound(&bytes).unwrap(), firm());
            assert!(matches!(cmd, CommandBody::New(_)), "{what}: {cmd:?}");
        }
    }

    /// A Replace the gateway refuses cancels its original, as OUCH has it; but one naming
    /// another reference channel is refused touching nothing: its original is that
    /// channel's order, not channel 0's order of the same number.
    #[test]
    fn a_refused_replace_cancels_its_original_unless_it_names_another_channel() {
        let replace = |options: &[u8]| {
            let mut m = vec![b'U', 0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 100];
            m.extend_from_slice(&100u64.to_be_bytes());
            m.extend_from_slice(b"0YNMYORDER-1     ");
            m.extend_from_slice(&u16::try_from(options.len()).unwrap().to_be_bytes());
            m.extend_from_slice(options);
            m
        };
        let command =
            |options: &[u8]| to_command(&decode_inbound(&replace(options)).unwrap(), firm());
        assert_eq!(
            command(&[2, 17, b'I']),
            CommandBody::InvalidReplace {
                orig_user_ref: UserRef(5),
                user_ref: UserRef(9),
                reason: RejectReason::InvalidCrossOrder,
                clordid: *b"MYORDER-1     ",
            }
        );
        // A market price on a Replace: OUCH's "invalid price".
        let mut market = replace(&[]);
        market[13..21].copy_from_slice(&MARKET_PRICE_MIN.to_be_bytes());
        assert_eq!(
            to_command(&decode_inbound(&market).unwrap(), firm()),
            CommandBody::InvalidReplace {
                orig_user_ref: UserRef(5),
                user_ref: UserRef(9),
                reason: RejectReason::PriceOutOfRange,
                clordid: *b"MYORDER-1     ",
            }
        );
        // The reason is the first check's that fails (the options before the channel).
        for (options, reason) in [
            (&[2, 28, 1][..], RejectReason::NotOffered),
            (&[2, 28, 1, 2, 17, b'I'], RejectReason::InvalidCrossOrder),
        ] {
            assert_eq!(
                command(options),
                CommandBody::GatewayReject {
                    user_ref: UserRef(9),
                    reason,
                    clordid: *b"MYORDER-1     ",
                },
                "{options:?}"
            );
        }
    }

    /// A UserRefIdx (tag 28) other than 0 on any message is refused; 0 is channel 0.
    #[test]
    fn another_reference_channel_is_refused_on_every_message() {
        let mut cancel = vec![b'X', 0, 0, 0, 9, 0, 0, 0, 0];
        let mut modify = vec![b'M', 0, 0, 0, 9, b'S', 0, 0, 0, 50];
        let mut query = vec![b'Q'];
        for m in [&mut cancel, &mut modify, &mut query] {
            m.extend_from_slice(&[0, 3, 2, 28, 0]);
        }
        let mut replace = vec![b'U', 0, 0, 0, 9, 0, 0, 0, 10, 0, 0, 0, 100];
        replace.extend_from_slice(&100u64.to_be_bytes());
        replace.extend_from_slice(b"0YNMYORDER-1     ");
        replace.extend_from_slice(&[0, 3, 2, 28, 0]);
        for (name, base) in [
            ("enter", enter(b'Y', b'0', 100, &[2, 28, 0])),
            ("replace", replace),
            ("cancel", cancel),
            ("modify", modify),
            ("account query", query),
        ] {
            for (idx, refused) in [(0u8, false), (1, true), (255, true)] {
                let mut bytes = base.clone();
                *bytes.last_mut().unwrap() = idx;
                let msg = decode_inbound(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
                let verdict = validate(&msg);
                if refused {
                    assert_eq!(
                        verdict,
                        Err((RejectReason::NotOffered, "user ref idx")),
                        "{name} on channel {idx}"
                    );
                } else {
                    assert_eq!(verdict, Ok(()), "{name} on channel 0");
                }
            }
        }
    }

    fn rejected(bytes: &[u8]) -> (RejectReason, [u8; 14]) {
        match to_command(&decode_inbound(bytes).unwrap(), firm()) {
            CommandBody::GatewayReject {
                user_ref,
                reason,
                clordid,
            } => {
                assert_eq!(user_ref, UserRef(9), "the client's reference is answered");
                (reason, clordid)
            }
            other => panic!("expected a gateway reject, got {other:?}"),
        }
    }

    #[test]
    fn fields_outside_their_ouch_type_are_rejected_and_never_echoed() {
        let mut bad_id = enter(b'Y', b'0', 100, &[]);
        bad_id[31] = 0x01;
        assert_eq!(
            rejected(&bad_id),
            (RejectReason::NotOffered, [b' '; 14]),
            "a ClOrdID outside printable ASCII is answered as spaces"
        );
        let mut high = enter(b'Y', b'0', 100, &[]);
        high[40] = 0xC3;
        assert_eq!(rejected(&high).1, [b' '; 14]);
        let mut symbol = enter(b'Y', b'0', 100, &[]);
        symbol[12] = 0x7F;
        assert_eq!(
            rejected(&symbol),
            (RejectReason::UnknownInstrument, *b"MYORDER-1     ")
        );
        let mut side = enter(b'Y', b'0', 100, &[]);
        side[5] = b'X';
        assert_eq!(rejected(&side).0, RejectReason::InvalidSide);
        let mut qty = enter(b'Y', b'0', 100, &[]);
        qty[6..10].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert_eq!(rejected(&qty).0, RejectReason::QtyAboveMax);
        let gap = enter(b'Y', b'0', LIMIT_PRICE_MAX + 1, &[]);
        assert_eq!(rejected(&gap).0, RejectReason::PriceOutOfRange);
        for (offset, value, reason) in [
            (28, b'Z', RejectReason::NotOffered),
            (29, b'?', RejectReason::NotOffered),
            (30, b'C', RejectReason::InvalidCrossOrder),
            (30, 0x01, RejectReason::NotOffered),
            (30, b'?', RejectReason::NotOffered),
            (30, b'Z', RejectReason::NotOffered),
        ] {
            let mut m = enter(b'Y', b'0', 100, &[]);
            m[offset] = value;
            assert_eq!(rejected(&m).0, reason, "offset {offset}");
        }
        let lower_firm = enter(b'Y', b'0', 100, &[5, 2, b'm', b'm', b'a', b' ']);
        assert_eq!(rejected(&lower_firm).0, RejectReason::FirmNotAuthorized);
        let min_qty = enter(b'Y', b'0', 100, &[5, 3, 0, 0x0F, 0x42, 0x40]);
        assert_eq!(rejected(&min_qty).0, RejectReason::InvalidMinQty);
        let customer = enter(b'Y', b'0', 100, &[2, 4, 0x80]);
        assert_eq!(rejected(&customer).0, RejectReason::NotOffered);
    }

    #[test]
    fn mass_cancel_and_modify_fields_are_checked() {
        let mut mass = vec![b'C', 0, 0, 0, 9];
        mass.extend_from_slice(b"MMA ");
        mass.extend_from_slice(b"AAPL    ");
        mass.extend_from_slice(&[0, 0]);
        mass[13] = 0xFF;
        assert_eq!(rejected(&mass).0, RejectReason::UnknownInstrument);
        mass[13] = b' ';
        mass[6] = 0x00;
        assert_eq!(rejected(&mass).0, RejectReason::FirmNotAuthorized);
        // Upper case only, as on an Enter Order's firm option.
        mass[5..9].copy_from_slice(b"mma ");
        assert_eq!(rejected(&mass).0, RejectReason::FirmNotAuthorized);
        mass[5..9].copy_from_slice(b"MMA ");
        // Criteria ironmatch cannot apply are refused, not widened to the whole account;
        // their value 0 (none) is taken.
        let with = |options: &[u8]| {
            let mut m = mass[..17].to_vec();
            m.extend_from_slice(&u16::try_from(options.len()).unwrap().to_be_bytes());
            m.extend_from_slice(options);
            m
        };
        for refused in [with(&[3, 24, 0, 7]), with(&[2, 28, 1])] {
            assert_eq!(rejected(&refused).0, RejectReason::NotOffered);
        }
        for taken in [
            with(&[3, 24, 0, 0]),
            with(&[2, 28, 0]),
            with(&[2, 27, b'S']),
        ] {
            let msg = decode_inbound(&taken).unwrap();
            assert_eq!(validate(&msg), Ok(()));
        }
        let modify = [b'M', 0, 0, 0, 9, b'Q', 0, 0, 0, 1];
        assert_eq!(rejected(&modify).0, RejectReason::InvalidSide);
    }

    #[test]
    fn an_enter_for_another_firm_is_refused() {
        let other = enter(b'Y', b'0', 100, &[5, 2, b'M', b'M', b'B', b' ']);
        assert_eq!(
            rejected(&other),
            (RejectReason::FirmNotAuthorized, *b"MYORDER-1     ")
        );
        let own = enter(b'Y', b'0', 100, &[5, 2, b'M', b'M', b'A', b' ']);
        let blank = enter(b'Y', b'0', 100, &[5, 2, b' ', b' ', b' ', b' ']);
        for m in [own, blank, enter(b'Y', b'0', 100, &[])] {
            match to_command(&decode_inbound(&m).unwrap(), firm()) {
                CommandBody::New(o) => assert_eq!(o.firm, firm()),
                other => panic!("expected a new order, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_blank_mass_cancel_firm_is_the_accounts() {
        let mut mass = vec![b'C', 0, 0, 0, 9];
        mass.extend_from_slice(b"    ");
        mass.extend_from_slice(b"AAPL    ");
        mass.extend_from_slice(&[0, 0]);
        let firm_of = |bytes: &[u8]| match to_command(&decode_inbound(bytes).unwrap(), firm()) {
            CommandBody::MassCancel { firm, .. } => firm,
            other => panic!("expected a mass cancel, got {other:?}"),
        };
        assert_eq!(firm_of(&mass), firm());
        mass[5..9].copy_from_slice(b"MMB ");
        assert_eq!(
            firm_of(&mass),
            Firm(*b"MMB "),
            "any other firm goes to the matcher"
        );
    }
}
