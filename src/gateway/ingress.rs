//! OUCH 5.0 inbound messages to matcher commands (gateway thread, ingress).
//!
//! Pure mapping. A message that decodes but asks for something ironmatch does not offer
//! (a pegged price, GTT, a cross) becomes a [`CommandBody::GatewayReject`] with the
//! client's reference, so the refusal is sequenced and journaled like any other reply.

use crate::book::{CommandBody, Echo, NewOrder, RejectReason, ReplaceOrder, TimeInForce};
use crate::types::{BookSide, Firm, Price, Qty, Side, Symbol, UserRef};
use crate::wire::ouch::{Inbound, Options};

/// OUCH treats a price at or above $200,000.0000 as a market order.
pub const MARKET_PRICE_MIN: u64 = 2_000_000_000;

/// Whether the message counts against the new-order throttle (cancels are exempt).
pub fn is_throttled(msg: &Inbound<'_>) -> bool {
    matches!(msg, Inbound::Enter(..) | Inbound::Replace(..))
}

/// The reference and ClOrdID to reject a message with.
pub fn reject_target(msg: &Inbound<'_>) -> (UserRef, [u8; 14]) {
    match msg {
        Inbound::Enter(m, _) => (UserRef(m.user_ref.get()), m.clordid),
        Inbound::Replace(m, _) => (UserRef(m.user_ref.get()), m.clordid),
        Inbound::Cancel(m, _) => (UserRef(m.user_ref.get()), [b' '; 14]),
        Inbound::Modify(m, _) => (UserRef(m.user_ref.get()), [b' '; 14]),
        Inbound::MassCancel(m, _) => (UserRef(m.user_ref.get()), [b' '; 14]),
        Inbound::AccountQuery(_) => (UserRef(0), [b' '; 14]),
    }
}

fn tif(code: u8) -> Option<TimeInForce> {
    match code {
        b'0' => Some(TimeInForce::Day),
        b'3' => Some(TimeInForce::Ioc),
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

/// Options that ask for something not offered.
fn unsupported_options(options: &Options) -> bool {
    options.price_type.is_some_and(|t| t != b'L')
        || options.peg_offset.is_some_and(|o| o != 0)
        || options.post_only.is_some_and(|p| p != b'P' && p != b'N')
}

/// Maps a decoded message from a user of firm `user_firm` to a matcher command.
pub fn to_command(msg: &Inbound<'_>, user_firm: Firm) -> CommandBody {
    let reject = |reason| {
        let (user_ref, clordid) = reject_target(msg);
        CommandBody::GatewayReject {
            user_ref,
            reason,
            clordid,
        }
    };
    match msg {
        Inbound::Enter(m, o) => {
            let Some(side) = Side::from_byte(m.side) else {
                return reject(RejectReason::InvalidSide);
            };
            let (Some(tif), Some((hidden, post_only))) = (tif(m.tif), display(m.display, o)) else {
                return reject(RejectReason::Unsupported);
            };
            if m.cross_type != b'N' || unsupported_options(o) {
                return reject(RejectReason::Unsupported);
            }
            let price = m.price.get();
            CommandBody::New(NewOrder {
                user_ref: UserRef(m.user_ref.get()),
                side,
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
            let (Some(tif), Some((hidden, post_only))) = (tif(m.tif), display(m.display, o)) else {
                return reject(RejectReason::Unsupported);
            };
            if unsupported_options(o) || m.price.get() >= MARKET_PRICE_MIN {
                return reject(RejectReason::Unsupported);
            }
            CommandBody::Replace(ReplaceOrder {
                orig_user_ref: UserRef(m.orig_user_ref.get()),
                user_ref: UserRef(m.user_ref.get()),
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
            user_ref: UserRef(m.user_ref.get()),
            qty: Qty(m.qty.get()),
        },
        Inbound::Modify(m, _) => match Side::from_byte(m.side) {
            Some(side) => CommandBody::Modify {
                user_ref: UserRef(m.user_ref.get()),
                side,
                qty: Qty(m.qty.get()),
            },
            None => reject(RejectReason::InvalidSide),
        },
        Inbound::MassCancel(m, o) => {
            let side = match o.side {
                None => None,
                Some(code) => match Side::from_byte(code) {
                    Some(s) => Some(s.book_side()),
                    None => return reject(RejectReason::InvalidSide),
                },
            };
            CommandBody::MassCancel {
                user_ref: UserRef(m.user_ref.get()),
                firm: Firm(m.firm),
                symbol: Symbol(m.symbol),
                side: side.map(|s: BookSide| s),
            }
        }
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
    fn what_is_not_offered_is_rejected_with_the_clients_reference() {
        for bytes in [
            enter(b'Y', b'6', 100, &[]),
            enter(b'M', b'0', 100, &[]),
            enter(b'Y', b'0', 100, &[2, 6, b'M']),
        ] {
            let cmd = to_command(&decode_inbound(&bytes).unwrap(), firm());
            assert_eq!(
                cmd,
                CommandBody::GatewayReject {
                    user_ref: UserRef(9),
                    reason: RejectReason::Unsupported,
                    clordid: *b"MYORDER-1     "
                }
            );
        }
    }
}
