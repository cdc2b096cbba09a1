//! Synthetic order flow decoded from arbitrary bytes, for property tests and fuzzing.
//!
//! Any byte string decodes to a valid command stream over [`test_config`]: several
//! instruments, owners sharing firms (so self-trade prevention fires), small pools (so
//! capacity rejects happen), prices clustered around the reference (so orders cross), and
//! every order feature, plus a share of bad requests (unknown symbols, off-tick prices,
//! repeated references, unknown orders). The same bytes always give the same commands.

use super::message::*;
use super::{BandRemainder, BookConfig, InstrumentSpec, OwnerSpec, RefRule, StpMode};
use crate::types::*;

/// Instruments, owners and deliberately small pools for model checking.
///
/// Price protection differs by instrument so that every rule fires: `AAA` has a band of 3
/// ticks that cancels what it stops, a fat-finger range of 20% and a circuit breaker
/// (4 ticks around the mean of 2 seconds, pauses of 1 second); `BBB` a band of 3 ticks
/// whose remainders rest at its edge and the same fat-finger range, no breaker; `CCC` no
/// band and no fat-finger range (market orders sweep the whole book) and a breaker of 4
/// ticks around the mean of 3 seconds, pauses of 2 seconds.
pub fn test_config(stp: StpMode) -> BookConfig {
    let instrument = |sym: &str, tick: u64, lot: u32, reference: u64| InstrumentSpec {
        symbol: Symbol::from_str_padded(sym).expect("valid test symbol"),
        tick: Price(tick),
        lot,
        min_price: Price(tick),
        max_price: Price(reference * 2),
        max_qty: lot * 50,
        ref_price: Price(reference),
        band_bps: 0,
        band_remainder: BandRemainder::Cancel,
        fat_finger_bps: 0,
        breaker_bps: 0,
        breaker_window_secs: 0,
        breaker_pause_secs: 0,
    };
    let aaa = InstrumentSpec {
        band_bps: 3,
        fat_finger_bps: 2_000,
        breaker_bps: 4,
        breaker_window_secs: 2,
        breaker_pause_secs: 1,
        ..instrument("AAA", 100, 1, 1_000_000)
    };
    let bbb = InstrumentSpec {
        band_bps: 6,
        band_remainder: BandRemainder::Rest,
        fat_finger_bps: 2_000,
        ..instrument("BBB", 100, 100, 500_000)
    };
    let ccc = InstrumentSpec {
        breaker_bps: 10,
        breaker_window_secs: 3,
        breaker_pause_secs: 2,
        ..instrument("CCC", 5, 10, 20_000)
    };
    let owner = |firm: &str, cod: bool| OwnerSpec {
        firm: Firm::from_str_padded(firm).expect("valid test firm"),
        cancel_on_disconnect: cod,
        stp: None,
    };
    BookConfig {
        instruments: vec![aaa, bbb, ccc],
        owners: vec![
            owner("F1", true),
            owner("F1", false),
            owner("F2", true),
            owner("F3", false),
        ],
        orders_max: 30,
        levels_max: 22,
        stp,
        scheduled: false,
        refs: RefRule::Ouch,
    }
}

/// Setups for model checking, numbered `0..STP_SETUPS`: five self-trade prevention
/// setups under OUCH's reference rule, then the same five with caller keys
/// ([`RefRule::Keys`]), then two with a larger order pool (see [`stp_test_config`]).
pub const STP_SETUPS: usize = 12;

/// Order slots in the large-pool setups: several of the 64-slot chunks the matcher
/// tracks each owner's orders by, so mass cancels, disconnects and the close gather an
/// owner's orders across chunks (the small pool fits in one).
pub const LARGE_POOL: u32 = 200;

/// [`test_config`] with setup `setup % STP_SETUPS`: the four venue-wide self-trade
/// prevention modes, then a venue of `CancelBoth` whose owners 0 and 1 (one firm) have
/// modes of their own (none, and cancel resting), so each side of a same-firm cross
/// applies the incoming owner's mode; setups 5 to 9 are those five with caller keys
/// instead of OUCH references (the decoder then numbers orders with 64-bit keys, and
/// reuses keys, live or not). Setups 10 and 11 are setups 0 and 9 with an order pool of
/// [`LARGE_POOL`] slots and room for more levels: capacity rejects get rare, an owner's
/// orders spread over slots far apart.
pub fn stp_test_config(setup: usize) -> BookConfig {
    let setup = setup % STP_SETUPS;
    if setup >= 10 {
        let mut config = stp_test_config(if setup == 10 { 0 } else { 9 });
        config.orders_max = LARGE_POOL;
        config.levels_max = 64;
        return config;
    }
    let modes = [
        StpMode::CancelResting,
        StpMode::CancelIncoming,
        StpMode::CancelBoth,
        StpMode::None,
    ];
    let mut config = match modes.get(setup % 5) {
        Some(&mode) => test_config(mode),
        None => {
            let mut config = test_config(StpMode::CancelBoth);
            config.owners[0].stp = Some(StpMode::None);
            config.owners[1].stp = Some(StpMode::CancelResting);
            config
        }
    };
    if setup >= 5 {
        config.refs = RefRule::Keys;
    }
    config
}

/// Reads bytes one at a time; zeros once exhausted.
#[derive(Debug)]
pub struct ByteSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteSource<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> ByteSource<'a> {
        ByteSource { data, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A value in `0..n`.
    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    /// True with probability about `1/n`.
    fn one_in(&mut self, n: u8) -> bool {
        self.below(n) == 0
    }
}

/// A reason the gateway refuses a request with (the matcher only carries it into its
/// event): `Unsupported` (journals of format 3 and before) or one of format 4's, chosen by
/// the request's reference, so that no input byte is read for it (the streams the benches
/// draw stay the ones they drew before these reasons).
fn gateway_reason(user_ref: UserRef) -> RejectReason {
    match user_ref.0 % 6 {
        0 => RejectReason::Unsupported,
        1 => RejectReason::InvalidDisplay,
        2 => RejectReason::PeggingNotAllowed,
        3 => RejectReason::InvalidCrossOrder,
        4 => RejectReason::RetailNotAllowed,
        _ => RejectReason::NotOffered,
    }
}

/// Turns bytes into commands, remembering references so cancels hit live orders.
#[derive(Debug)]
pub struct FlowDecoder {
    config: BookConfig,
    next_ref: Vec<u64>,
    /// Recent references per owner with their instrument and side, for cancels,
    /// replaces and modifies.
    recent: Vec<[(u64, usize, Side); 8]>,
    ts: u64,
    /// A large-pool setup's config (exactly [`LARGE_POOL`] order slots): the flow adds
    /// more than it removes. Other configs, however large, get the usual flow.
    large_pool: bool,
}

impl FlowDecoder {
    /// A decoder for commands over `config` (normally [`test_config`]).
    pub fn new(config: &BookConfig) -> FlowDecoder {
        FlowDecoder {
            config: config.clone(),
            next_ref: vec![1; config.owners.len()],
            recent: vec![[(0, 0, Side::Buy); 8]; config.owners.len()],
            ts: 34_200_000_000_000,
            large_pool: config.orders_max == LARGE_POOL,
        }
    }

    /// The next command, or `None` once the bytes are used up.
    pub fn next(&mut self, src: &mut ByteSource<'_>) -> Option<Command> {
        if src.is_empty() {
            return None;
        }
        self.ts += u64::from(src.byte()) * 1_000;
        // Now and then seconds pass, so that good-till-time orders expire and breaker
        // pauses end; rarely the clock steps back a little (the gateway's clock may), and
        // the breaker's window must not.
        match src.below(128) {
            0 | 1 => self.ts += u64::from(src.below(4)) * 1_000_000_000,
            2 => self.ts -= u64::from(src.below(3)) * 700_000_000,
            _ => {}
        }
        let mut owner = src.below(self.config.owners.len() as u8);
        // Now and then, an owner the matcher does not know.
        if src.one_in(251) {
            owner = self.config.owners.len() as u8;
        }
        let o = usize::from(owner).min(self.config.owners.len() - 1);
        let body = match src.below(32) {
            0..=15 => CommandBody::New(self.new_order(src, o)),
            // In the large-pool setups two thirds of the cancels' and mass cancels'
            // share go to new orders, so that the book grows past one chunk of slots
            // before something clears it.
            16..=21 | 29..=30 if self.large_pool && !src.one_in(3) => {
                CommandBody::New(self.new_order(src, o))
            }
            16..=21 => {
                let (user_ref, instrument, _) = self.known_ref(src, o);
                let qty = if src.one_in(2) {
                    0
                } else {
                    self.lot_qty(src, instrument)
                };
                CommandBody::Cancel {
                    user_ref,
                    qty: Qty(qty),
                }
            }
            22..=26 => CommandBody::Replace(self.replace(src, o)),
            27..=28 => {
                let (user_ref, instrument, _) = self.known_ref(src, o);
                CommandBody::Modify {
                    user_ref,
                    side: Side::from_byte(b"BSTE"[usize::from(src.below(4))]).unwrap_or(Side::Buy),
                    qty: Qty(self.lot_qty(src, instrument)),
                }
            }
            29..=30 => CommandBody::MassCancel {
                user_ref: self.fresh_ref(src, o, None),
                firm: if src.one_in(8) {
                    Firm(*b"ZZZZ")
                } else {
                    self.config.owners[o].firm
                },
                symbol: if src.one_in(2) {
                    Symbol::BLANK
                } else {
                    self.symbol(src)
                },
                side: match src.below(6) {
                    0 | 1 => None,
                    2 => Some(Side::Buy),
                    3 => Some(Side::Sell),
                    4 => Some(Side::SellShort),
                    _ => Some(Side::SellShortExempt),
                },
            },
            _ => match src.below(8) {
                4 => CommandBody::Venue(VenueCommand::SystemEvent(match src.below(8) {
                    0..=3 => DayEvent::StartOfMarketHours,
                    4 => DayEvent::StartOfSystemHours,
                    5 => DayEvent::EndOfMarketHours,
                    6 => DayEvent::EndOfSystemHours,
                    _ => DayEvent::StartOfMessages,
                })),
                5 => CommandBody::Venue(VenueCommand::Operator {
                    request: self.ts,
                    action: OperatorAction::SetState {
                        symbol: self.symbol(src),
                        state: match src.below(6) {
                            0..=2 => TradingState::Trading,
                            3 => TradingState::Halted,
                            4 => TradingState::Paused,
                            _ => TradingState::QuotationOnly,
                        },
                        reason: *b"T1  ",
                        cancel_resting: src.one_in(4),
                    },
                }),
                6 => CommandBody::Venue(VenueCommand::Operator {
                    request: self.ts,
                    action: match src.below(4) {
                        0 => OperatorAction::VenueHalt(src.one_in(2)),
                        1 => OperatorAction::VenueHalt(false),
                        2 => OperatorAction::CancelUser(OwnerId(u16::from(
                            src.below(self.config.owners.len() as u8 + 1),
                        ))),
                        _ => OperatorAction::CancelInstrument(self.symbol(src)),
                    },
                }),
                7 => CommandBody::Venue(VenueCommand::Timer),
                0 => CommandBody::AccountQuery,
                1 => CommandBody::GatewayReject {
                    user_ref: UserRef(self.next_ref[o]),
                    reason: if src.one_in(2) {
                        RejectReason::Throttled
                    } else {
                        gateway_reason(UserRef(self.next_ref[o]))
                    },
                    clordid: *b"FLOW-REJECT   ",
                },
                3 => {
                    // A replace the gateway refused: its new reference never names an
                    // order, so it is not kept among the recent ones.
                    let recent = self.recent[o];
                    let r = self.replace(src, o);
                    self.recent[o] = recent;
                    CommandBody::InvalidReplace {
                        orig_user_ref: r.orig_user_ref,
                        user_ref: r.user_ref,
                        reason: gateway_reason(r.user_ref),
                        clordid: *b"FLOW-REFUSED  ",
                    }
                }
                _ => CommandBody::Disconnect,
            },
        };
        Some(Command {
            ts: Timestamp(self.ts),
            owner: OwnerId(u16::from(owner)),
            body,
        })
    }

    fn fresh_ref(
        &mut self,
        src: &mut ByteSource<'_>,
        o: usize,
        order: Option<(usize, Side)>,
    ) -> UserRef {
        // One in 16 repeats an old reference, which must be rejected with no effect (with
        // caller keys: a recent key, rejected if its order is live, else taken anew).
        if src.one_in(16) {
            return match self.config.refs {
                RefRule::Ouch => UserRef(self.next_ref[o].saturating_sub(u64::from(src.below(3)))),
                RefRule::Keys => UserRef(self.recent[o][usize::from(src.below(8))].0),
            };
        }
        let r = self.key_of(self.next_ref[o]);
        self.next_ref[o] += 1 + u64::from(src.one_in(8));
        if let Some((instrument, side)) = order {
            let slot = usize::from(src.below(8));
            self.recent[o][slot] = (r, instrument, side);
        }
        UserRef(r)
    }

    /// A reference to cancel or replace, with the instrument and side it was entered on.
    fn known_ref(&mut self, src: &mut ByteSource<'_>, o: usize) -> (UserRef, usize, Side) {
        let (r, instrument, side) = self.recent[o][usize::from(src.below(8))];
        match src.below(16) {
            0 => (UserRef(self.key_of(self.next_ref[o] + 5)), instrument, side),
            1 => (UserRef(0), instrument, side),
            _ => (UserRef(r), instrument, side),
        }
    }

    /// The key of the owner's `n`th reference: `n` itself under OUCH's rule; with caller
    /// keys, small and sequential for some, spread over all 64 bits for the rest (never 0,
    /// distinct for distinct `n` below 2^30).
    fn key_of(&self, n: u64) -> u64 {
        match self.config.refs {
            RefRule::Ouch => n,
            RefRule::Keys => match n % 4 {
                0 => n,
                1 => n << 33 | 1,
                2 => u64::MAX - n,
                _ => n << 32 | 7,
            },
        }
    }

    /// Mostly Day; IOC one in `ioc_one_in`; now and then GTX, GTT (seconds, some invalid)
    /// or after hours.
    fn tif(&self, src: &mut ByteSource<'_>, ioc_one_in: u8) -> TimeInForce {
        if src.one_in(ioc_one_in) {
            return TimeInForce::Ioc;
        }
        match src.below(16) {
            0 => TimeInForce::Gtx,
            1 | 2 => TimeInForce::Gtt {
                expire_secs: match src.below(16) {
                    0 => 0,
                    1 => 86_400,
                    n => u32::from(n % 4) + 1,
                },
            },
            3 => TimeInForce::AfterHours,
            _ => TimeInForce::Day,
        }
    }

    fn instrument(&self, src: &mut ByteSource<'_>) -> usize {
        usize::from(src.below(self.config.instruments.len() as u8))
    }

    fn symbol(&self, src: &mut ByteSource<'_>) -> Symbol {
        if src.one_in(64) {
            return Symbol(*b"NOPE    ");
        }
        self.config.instruments[self.instrument(src)].symbol
    }

    fn lot_qty(&self, src: &mut ByteSource<'_>, instrument: usize) -> u32 {
        let spec = &self.config.instruments[instrument];
        match src.below(32) {
            0 => 0,
            1 => spec.lot * 3 + u32::from(spec.lot > 1),
            2 => spec.max_qty + spec.lot,
            n => spec.lot * (1 + u32::from(n % 12)),
        }
    }

    fn price(&self, src: &mut ByteSource<'_>, instrument: usize, side: Side) -> Price {
        let spec = &self.config.instruments[instrument];
        let tick = spec.tick.0;
        match src.below(64) {
            0 => Price(spec.ref_price.0 + tick / 2 + 1),
            1 => Price(spec.ref_price.0 * 3 / 2),
            2 => Price(spec.max_price.0 + tick),
            _ => {
                // Clustered around the reference, leaning to the order's own side so that
                // books build depth and some orders cross.
                let offset = i64::from(src.below(9)) - 5;
                let offset = if side == Side::Buy { offset } else { -offset };
                Price((spec.ref_price.0 as i64 + offset * tick as i64) as u64)
            }
        }
    }

    fn new_order(&mut self, src: &mut ByteSource<'_>, o: usize) -> NewOrder {
        let instrument = self.instrument(src);
        let side = Side::from_byte(b"BSBSBSTE"[usize::from(src.below(8))]).unwrap_or(Side::Buy);
        let qty = self.lot_qty(src, instrument);
        let price = if src.one_in(24) {
            None
        } else {
            Some(self.price(src, instrument, side))
        };
        let lot = self.config.instruments[instrument].lot;
        let symbol = if src.one_in(64) {
            Symbol(*b"NOPE    ")
        } else {
            self.config.instruments[instrument].symbol
        };
        NewOrder {
            user_ref: self.fresh_ref(src, o, Some((instrument, side))),
            side,
            qty: Qty(qty),
            symbol,
            price,
            tif: self.tif(src, 5),
            hidden: src.one_in(7),
            post_only: src.one_in(9),
            // One minimum in eight a lot short of 7 by one share (off the lot, rejected,
            // where the lot is above one); the bytes read are as before the rule.
            min_qty: Qty(if src.one_in(8) {
                match src.below(8) {
                    7 => lot * 7 - 1,
                    k => lot * u32::from(k),
                }
            } else {
                0
            }),
            max_floor: Qty(if src.one_in(6) {
                lot * u32::from(1 + src.below(3))
            } else {
                0
            }),
            firm: if src.one_in(16) {
                Firm(*b"F9  ")
            } else {
                self.config.owners[o].firm
            },
            echo: Echo {
                clordid: *b"FLOW          ",
                ..Echo::default()
            },
        }
    }

    fn replace(&mut self, src: &mut ByteSource<'_>, o: usize) -> ReplaceOrder {
        let (orig, instrument, side) = self.known_ref(src, o);
        let lot = self.config.instruments[instrument].lot;
        ReplaceOrder {
            orig_user_ref: orig,
            user_ref: self.fresh_ref(src, o, Some((instrument, side))),
            qty: Qty(self.lot_qty(src, instrument)),
            price: self.price(src, instrument, side),
            tif: self.tif(src, 8),
            hidden: src.one_in(7),
            post_only: src.one_in(9),
            min_qty: Qty(if src.one_in(10) {
                lot * u32::from(src.below(4))
            } else {
                0
            }),
            max_floor: Qty(if src.one_in(6) {
                lot * u32::from(1 + src.below(3))
            } else {
                0
            }),
            echo: Echo {
                clordid: *b"FLOW-REPLACE  ",
                ..Echo::default()
            },
        }
    }
}
