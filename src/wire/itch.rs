//! ITCH 5.0 messages: the order-by-order market-data feed, both directions.
//!
//! Used by the feed publisher thread (encode), by `ironmatch feed` and `replay --itch`
//! (decode and encode), and by tests. Layouts: `shared/protocol/itch-5.0.md`. Every
//! message starts with the same 11 bytes (type, stock locate, tracking number, 48-bit
//! timestamp in ns since midnight); all integers are big-endian, prices carry 4 implied
//! decimals (`price4`).
//!
//! [`Message::encode`] writes into a caller's buffer and never allocates;
//! [`Message::decode`] takes untrusted bytes and returns a [`DecodeError`] with the reason
//! (wrong length for the type, bad enumeration value), never a panic. Message types this
//! build does not model decode as [`Body::Unknown`] so that a reader can skip them, as the
//! specification asks.

use super::DecodeError;

/// Message type bytes.
pub mod kind {
    /// System Event.
    pub const SYSTEM_EVENT: u8 = b'S';
    /// Stock Directory.
    pub const STOCK_DIRECTORY: u8 = b'R';
    /// Stock Trading Action.
    pub const TRADING_ACTION: u8 = b'H';
    /// Reg SHO Short Sale Price Test Restricted Indicator.
    pub const REG_SHO: u8 = b'Y';
    /// Market Participant Position.
    pub const PARTICIPANT_POSITION: u8 = b'L';
    /// Add Order (no attribution).
    pub const ADD_ORDER: u8 = b'A';
    /// Add Order with MPID Attribution.
    pub const ADD_ORDER_MPID: u8 = b'F';
    /// Order Executed.
    pub const ORDER_EXECUTED: u8 = b'E';
    /// Order Executed With Price.
    pub const ORDER_EXECUTED_PRICE: u8 = b'C';
    /// Order Cancel.
    pub const ORDER_CANCEL: u8 = b'X';
    /// Order Delete.
    pub const ORDER_DELETE: u8 = b'D';
    /// Order Replace.
    pub const ORDER_REPLACE: u8 = b'U';
    /// Trade (non-cross).
    pub const TRADE: u8 = b'P';
    /// Cross Trade.
    pub const CROSS_TRADE: u8 = b'Q';
    /// Broken Trade.
    pub const BROKEN_TRADE: u8 = b'B';
    /// Net Order Imbalance Indicator.
    pub const NOII: u8 = b'I';
}

/// Bytes of the header every message starts with.
pub const HEADER_LEN: usize = 11;
/// The longest message of the 2017 catalogue (NOII); a buffer this size holds any message
/// [`Message::encode`] writes.
pub const MESSAGE_LEN_MAX: usize = 50;

/// The length of a message of type `kind` (type byte included), if the type is in the
/// 2017 catalogue or its two later additions; `None` for others.
pub fn message_len(kind: u8) -> Option<usize> {
    Some(match kind {
        b'S' | b'W' => 12,
        b'R' => 39,
        b'H' => 25,
        b'Y' | b'N' => 20,
        b'L' => 26,
        b'V' | b'J' => 35,
        b'K' => 28,
        b'A' => 36,
        b'F' => 40,
        b'E' => 31,
        b'C' => 36,
        b'X' => 23,
        b'D' | b'B' => 19,
        b'U' => 35,
        b'P' => 44,
        b'Q' => 40,
        b'I' => 50,
        b'h' => 21,
        b'O' => 48,
        _ => return None,
    })
}

/// One ITCH message: the common header and a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Stock Locate: the instrument's day-specific code (0 for market-wide messages).
    pub locate: u16,
    /// Tracking Number (0 when unused, as ironmatch leaves it).
    pub tracking: u16,
    /// Nanoseconds since midnight (48 bits on the wire).
    pub ts: u64,
    /// The type-specific fields.
    pub body: Body,
}

/// Stock Directory fields (`R`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockDirectory {
    /// Symbol, alpha(8).
    pub stock: [u8; 8],
    /// Market Category (space: not available).
    pub market_category: u8,
    /// Financial Status Indicator (space: not available).
    pub financial_status: u8,
    /// Shares per round lot.
    pub round_lot_size: u32,
    /// `Y`: only round lots are accepted.
    pub round_lots_only: u8,
    /// Issue Classification.
    pub issue_classification: u8,
    /// Issue Sub-Type, alpha(2).
    pub issue_subtype: [u8; 2],
    /// `P` live/production, `T` test.
    pub authenticity: u8,
    /// Short Sale Threshold Indicator.
    pub short_sale_threshold: u8,
    /// IPO Flag.
    pub ipo_flag: u8,
    /// LULD Reference Price Tier.
    pub luld_tier: u8,
    /// ETP Flag.
    pub etp_flag: u8,
    /// ETP Leverage Factor.
    pub etp_leverage: u32,
    /// Inverse Indicator.
    pub inverse: u8,
}

/// Net Order Imbalance Indicator fields (`I`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imbalance {
    /// Paired Shares.
    pub paired: u64,
    /// Imbalance Shares.
    pub imbalance: u64,
    /// Imbalance Direction.
    pub direction: u8,
    /// Symbol.
    pub stock: [u8; 8],
    /// Far Price.
    pub far: u32,
    /// Near Price.
    pub near: u32,
    /// Current Reference Price.
    pub reference: u32,
    /// Cross Type.
    pub cross_type: u8,
    /// Price Variation Indicator.
    pub variation: u8,
}

/// The body of a message; prices are `price4` integers (4 implied decimals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `S`: event code `O`, `S`, `Q`, `M`, `E` or `C`.
    SystemEvent {
        /// Event Code.
        code: u8,
    },
    /// `R`: one per instrument before trading; defines its Stock Locate.
    StockDirectory(StockDirectory),
    /// `H`: trading state of an instrument.
    TradingAction {
        /// Symbol.
        stock: [u8; 8],
        /// `H` halted, `P` paused, `Q` quotation only, `T` trading.
        state: u8,
        /// Reserved byte.
        reserved: u8,
        /// Reason code, alpha(4).
        reason: [u8; 4],
    },
    /// `Y`: Reg SHO restriction.
    RegSho {
        /// Symbol.
        stock: [u8; 8],
        /// `0`, `1` or `2`.
        action: u8,
    },
    /// `L`: market participant position.
    ParticipantPosition {
        /// MPID.
        mpid: [u8; 4],
        /// Symbol.
        stock: [u8; 8],
        /// Primary Market Maker.
        primary: u8,
        /// Market Maker Mode.
        mode: u8,
        /// Market Participant State.
        state: u8,
    },
    /// `A` (or `F` with an attribution): a displayed order rests on the book.
    AddOrder {
        /// Order Reference Number.
        order_ref: u64,
        /// `B` or `S`.
        side: u8,
        /// Displayed shares.
        shares: u32,
        /// Symbol.
        stock: [u8; 8],
        /// Price.
        price: u32,
        /// MPID of the entering firm (`F`), or `None` (`A`).
        attribution: Option<[u8; 4]>,
    },
    /// `E`: a displayed order executed at its own price.
    OrderExecuted {
        /// Order Reference Number.
        order_ref: u64,
        /// Executed shares.
        shares: u32,
        /// Match Number.
        match_number: u64,
    },
    /// `C`: a displayed order executed at another price.
    OrderExecutedWithPrice {
        /// Order Reference Number.
        order_ref: u64,
        /// Executed shares.
        shares: u32,
        /// Match Number.
        match_number: u64,
        /// `Y` or `N`.
        printable: u8,
        /// Execution price.
        price: u32,
    },
    /// `X`: shares removed, the order stays.
    OrderCancel {
        /// Order Reference Number.
        order_ref: u64,
        /// Canceled shares.
        shares: u32,
    },
    /// `D`: the order left the book.
    OrderDelete {
        /// Order Reference Number.
        order_ref: u64,
    },
    /// `U`: the order was replaced by a new one at the back of its price.
    OrderReplace {
        /// Original Order Reference Number.
        old_ref: u64,
        /// New Order Reference Number.
        new_ref: u64,
        /// New displayed shares.
        shares: u32,
        /// New price.
        price: u32,
    },
    /// `P`: an execution against a non-displayed order.
    Trade {
        /// Order Reference Number (0: the resting order was never published).
        order_ref: u64,
        /// Side of the resting order.
        side: u8,
        /// Shares.
        shares: u32,
        /// Symbol.
        stock: [u8; 8],
        /// Price.
        price: u32,
        /// Match Number.
        match_number: u64,
    },
    /// `Q`: a cross.
    CrossTrade {
        /// Shares (8 bytes on the wire).
        shares: u64,
        /// Symbol.
        stock: [u8; 8],
        /// Cross price.
        price: u32,
        /// Match Number.
        match_number: u64,
        /// Cross Type.
        cross_type: u8,
    },
    /// `B`: an execution was broken.
    BrokenTrade {
        /// Match Number.
        match_number: u64,
    },
    /// `I`: net order imbalance.
    Imbalance(Imbalance),
    /// A type this build does not model (still length-checked when its length is known):
    /// readers skip it.
    Unknown {
        /// Message type.
        kind: u8,
    },
}

/// Big-endian writer over a fixed buffer; the caller sized it by the message's length.
struct Put<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Put<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
}

/// Big-endian reader over a slice whose length was checked against the type's.
struct Get<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Get<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
}

/// Checks that `value` is one of `allowed`.
fn one_of(field: &'static str, value: u8, allowed: &[u8]) -> Result<u8, DecodeError> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(DecodeError::BadField {
            field,
            value: u64::from(value),
        })
    }
}

impl Body {
    /// The message type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Body::SystemEvent { .. } => kind::SYSTEM_EVENT,
            Body::StockDirectory(_) => kind::STOCK_DIRECTORY,
            Body::TradingAction { .. } => kind::TRADING_ACTION,
            Body::RegSho { .. } => kind::REG_SHO,
            Body::ParticipantPosition { .. } => kind::PARTICIPANT_POSITION,
            Body::AddOrder {
                attribution: None, ..
            } => kind::ADD_ORDER,
            Body::AddOrder {
                attribution: Some(_),
                ..
            } => kind::ADD_ORDER_MPID,
            Body::OrderExecuted { .. } => kind::ORDER_EXECUTED,
            Body::OrderExecutedWithPrice { .. } => kind::ORDER_EXECUTED_PRICE,
            Body::OrderCancel { .. } => kind::ORDER_CANCEL,
            Body::OrderDelete { .. } => kind::ORDER_DELETE,
            Body::OrderReplace { .. } => kind::ORDER_REPLACE,
            Body::Trade { .. } => kind::TRADE,
            Body::CrossTrade { .. } => kind::CROSS_TRADE,
            Body::BrokenTrade { .. } => kind::BROKEN_TRADE,
            Body::Imbalance(_) => kind::NOII,
            Body::Unknown { kind } => *kind,
        }
    }
}

impl Message {
    /// The encoded length (type byte included): what [`Message::encode`] writes, so the
    /// header alone for [`Body::Unknown`] whatever the type's length in the protocol.
    pub fn len(&self) -> usize {
        match self.body {
            Body::Unknown { .. } => HEADER_LEN,
            _ => message_len(self.body.kind()).unwrap_or(HEADER_LEN),
        }
    }

    /// Never true: every message has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message at the start of `out` and returns its length. Panics if `out` is
    /// shorter than [`MESSAGE_LEN_MAX`] (a caller bug, never input-dependent); an
    /// [`Body::Unknown`] writes only the header.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let len = self.len();
        let mut p = Put {
            buf: &mut out[..len],
            at: 0,
        };
        p.u8(self.body.kind());
        p.u16(self.locate);
        p.u16(self.tracking);
        p.bytes(&self.ts.to_be_bytes()[2..]);
        match self.body {
            Body::SystemEvent { code } => p.u8(code),
            Body::StockDirectory(d) => {
                p.bytes(&d.stock);
                p.u8(d.market_category);
                p.u8(d.financial_status);
                p.u32(d.round_lot_size);
                p.u8(d.round_lots_only);
                p.u8(d.issue_classification);
                p.bytes(&d.issue_subtype);
                p.u8(d.authenticity);
                p.u8(d.short_sale_threshold);
                p.u8(d.ipo_flag);
                p.u8(d.luld_tier);
                p.u8(d.etp_flag);
                p.u32(d.etp_leverage);
                p.u8(d.inverse);
            }
            Body::TradingAction {
                stock,
                state,
                reserved,
                reason,
            } => {
                p.bytes(&stock);
                p.u8(state);
                p.u8(reserved);
                p.bytes(&reason);
            }
            Body::RegSho { stock, action } => {
                p.bytes(&stock);
                p.u8(action);
            }
            Body::ParticipantPosition {
                mpid,
                stock,
                primary,
                mode,
                state,
            } => {
                p.bytes(&mpid);
                p.bytes(&stock);
                p.bytes(&[primary, mode, state]);
            }
            Body::AddOrder {
                order_ref,
                side,
                shares,
                stock,
                price,
                attribution,
            } => {
                p.u64(order_ref);
                p.u8(side);
                p.u32(shares);
                p.bytes(&stock);
                p.u32(price);
                if let Some(mpid) = attribution {
                    p.bytes(&mpid);
                }
            }
            Body::OrderExecuted {
                order_ref,
                shares,
                match_number,
            } => {
                p.u64(order_ref);
                p.u32(shares);
                p.u64(match_number);
            }
            Body::OrderExecutedWithPrice {
                order_ref,
                shares,
                match_number,
                printable,
                price,
            } => {
                p.u64(order_ref);
                p.u32(shares);
                p.u64(match_number);
                p.u8(printable);
                p.u32(price);
            }
            Body::OrderCancel { order_ref, shares } => {
                p.u64(order_ref);
                p.u32(shares);
            }
            Body::OrderDelete { order_ref } => p.u64(order_ref),
            Body::OrderReplace {
                old_ref,
                new_ref,
                shares,
                price,
            } => {
                p.u64(old_ref);
                p.u64(new_ref);
                p.u32(shares);
                p.u32(price);
            }
            Body::Trade {
                order_ref,
                side,
                shares,
                stock,
                price,
                match_number,
            } => {
                p.u64(order_ref);
                p.u8(side);
                p.u32(shares);
                p.bytes(&stock);
                p.u32(price);
                p.u64(match_number);
            }
            Body::CrossTrade {
                shares,
                stock,
                price,
                match_number,
                cross_type,
            } => {
                p.u64(shares);
                p.bytes(&stock);
                p.u32(price);
                p.u64(match_number);
                p.u8(cross_type);
            }
            Body::BrokenTrade { match_number } => p.u64(match_number),
            Body::Imbalance(i) => {
                p.u64(i.paired);
                p.u64(i.imbalance);
                p.u8(i.direction);
                p.bytes(&i.stock);
                p.u32(i.far);
                p.u32(i.near);
                p.u32(i.reference);
                p.u8(i.cross_type);
                p.u8(i.variation);
            }
            Body::Unknown { .. } => return HEADER_LEN,
        }
        debug_assert_eq!(p.at, len, "encoder and length table disagree");
        len
    }

    /// Decodes one message (exactly `bytes`, as delimited by its MoldUDP64 block or file
    /// length prefix). Known types must have their exact length; unknown types give
    /// [`Body::Unknown`] if at least the header is present.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let Some(&kind) = bytes.first() else {
            return Err(DecodeError::EmptyMessage);
        };
        let (expected, length_ok) = match message_len(kind) {
            Some(n) => (n, bytes.len() == n),
            None => (HEADER_LEN, bytes.len() >= HEADER_LEN),
        };
        if !length_ok {
            return Err(DecodeError::WrongLength {
                kind,
                expected,
                got: bytes.len(),
            });
        }
        let mut g = Get { buf: bytes, at: 1 };
        let locate = u16::from_be_bytes(g.array());
        let tracking = u16::from_be_bytes(g.array());
        let ts_bytes: [u8; 6] = g.array();
        let mut ts = [0u8; 8];
        ts[2..].copy_from_slice(&ts_bytes);
        let body = Message::decode_body(kind, &mut g)?;
        Ok(Message {
            locate,
            tracking,
            ts: u64::from_be_bytes(ts),
            body,
        })
    }

    fn decode_body(kind: u8, g: &mut Get<'_>) -> Result<Body, DecodeError> {
        const SIDES: &[u8] = b"BS";
        const YN: &[u8] = b"YN";
        Ok(match kind {
            kind::SYSTEM_EVENT => Body::SystemEvent {
                code: one_of("event code", g.u8(), b"OSQMEC")?,
            },
            kind::STOCK_DIRECTORY => Body::StockDirectory(StockDirectory {
                stock: g.array(),
                market_category: g.u8(),
                financial_status: g.u8(),
                round_lot_size: g.u32(),
                round_lots_only: one_of("round lots only", g.u8(), YN)?,
                issue_classification: g.u8(),
                issue_subtype: g.array(),
                authenticity: one_of("authenticity", g.u8(), b"PT")?,
                short_sale_threshold: g.u8(),
                ipo_flag: g.u8(),
                luld_tier: g.u8(),
                etp_flag: g.u8(),
                etp_leverage: g.u32(),
                inverse: g.u8(),
            }),
            kind::TRADING_ACTION => Body::TradingAction {
                stock: g.array(),
                state: one_of("trading state", g.u8(), b"HPQT")?,
                reserved: g.u8(),
                reason: g.array(),
            },
            kind::REG_SHO => Body::RegSho {
                stock: g.array(),
                action: g.u8(),
            },
            kind::PARTICIPANT_POSITION => Body::ParticipantPosition {
                mpid: g.array(),
                stock: g.array(),
                primary: g.u8(),
                mode: g.u8(),
                state: g.u8(),
            },
            kind::ADD_ORDER | kind::ADD_ORDER_MPID => Body::AddOrder {
                order_ref: g.u64(),
                side: one_of("buy/sell indicator", g.u8(), SIDES)?,
                shares: g.u32(),
                stock: g.array(),
                price: g.u32(),
                attribution: (kind == kind::ADD_ORDER_MPID).then(|| g.array()),
            },
            kind::ORDER_EXECUTED => Body::OrderExecuted {
                order_ref: g.u64(),
                shares: g.u32(),
                match_number: g.u64(),
            },
            kind::ORDER_EXECUTED_PRICE => Body::OrderExecutedWithPrice {
                order_ref: g.u64(),
                shares: g.u32(),
                match_number: g.u64(),
                printable: one_of("printable", g.u8(), YN)?,
                price: g.u32(),
            },
            kind::ORDER_CANCEL => Body::OrderCancel {
                order_ref: g.u64(),
                shares: g.u32(),
            },
            kind::ORDER_DELETE => Body::OrderDelete { order_ref: g.u64() },
            kind::ORDER_REPLACE => Body::OrderReplace {
                old_ref: g.u64(),
                new_ref: g.u64(),
                shares: g.u32(),
                price: g.u32(),
            },
            kind::TRADE => Body::Trade {
                order_ref: g.u64(),
                side: one_of("buy/sell indicator", g.u8(), SIDES)?,
                shares: g.u32(),
                stock: g.array(),
                price: g.u32(),
                match_number: g.u64(),
            },
            kind::CROSS_TRADE => Body::CrossTrade {
                shares: g.u64(),
                stock: g.array(),
                price: g.u32(),
                match_number: g.u64(),
                cross_type: g.u8(),
            },
            kind::BROKEN_TRADE => Body::BrokenTrade {
                match_number: g.u64(),
            },
            kind::NOII => Body::Imbalance(Imbalance {
                paired: g.u64(),
                imbalance: g.u64(),
                direction: g.u8(),
                stock: g.array(),
                far: g.u32(),
                near: g.u32(),
                reference: g.u32(),
                cross_type: g.u8(),
                variation: g.u8(),
            }),
            other => Body::Unknown { kind: other },
        })
    }
}

/// Splits a plain ITCH 5.0 file (each message preceded by its 2-byte big-endian length,
/// the form Nasdaq distributes) into messages. Yields an error for a length prefix that
/// runs past the end (a truncated file) and then stops.
pub fn file_messages(bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], DecodeError>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= bytes.len() {
            return None;
        }
        let Some(prefix) = bytes.get(at..at + 2) else {
            failed = true;
            return Some(Err(DecodeError::WrongLength {
                kind: 0,
                expected: 2,
                got: bytes.len() - at,
            }));
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        let Some(message) = bytes.get(at + 2..at + 2 + len) else {
            failed = true;
            return Some(Err(DecodeError::WrongLength {
                kind: bytes.get(at + 2).copied().unwrap_or(0),
                expected: len,
                got: bytes.len() - at - 2,
            }));
        };
        at += 2 + len;
        Some(Ok(message))
    })
}
