//! OUCH 5.0 messages: zero-copy views of every inbound message the engine acts on and every
//! outbound message it sends, with the optional TLV appendage.
//!
//! Layouts follow `shared/protocol/ouch-5.0.md`; offsets count from the message type byte.
//! Integers are big-endian (`zerocopy::big_endian`), text fields are space-padded bytes.
//! Decoding borrows from the input and never allocates; any input gives a message or a
//! [`DecodeError`], never a panic.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::DecodeError;

/// Inbound message types.
pub mod inbound {
    /// Enter Order.
    pub const ENTER: u8 = b'O';
    /// Replace Order.
    pub const REPLACE: u8 = b'U';
    /// Cancel Order.
    pub const CANCEL: u8 = b'X';
    /// Modify Order.
    pub const MODIFY: u8 = b'M';
    /// Account Query.
    pub const ACCOUNT_QUERY: u8 = b'Q';
    /// Mass Cancel Request.
    pub const MASS_CANCEL: u8 = b'C';
}

/// Outbound message types.
pub mod outbound {
    /// System Event.
    pub const SYSTEM_EVENT: u8 = b'S';
    /// Order Accepted.
    pub const ACCEPTED: u8 = b'A';
    /// Order Replaced.
    pub const REPLACED: u8 = b'U';
    /// Order Canceled.
    pub const CANCELED: u8 = b'C';
    /// AIQ Canceled.
    pub const AIQ_CANCELED: u8 = b'D';
    /// Order Executed.
    pub const EXECUTED: u8 = b'E';
    /// Rejected.
    pub const REJECTED: u8 = b'J';
    /// Cancel Reject.
    pub const CANCEL_REJECT: u8 = b'I';
    /// Order Modified.
    pub const MODIFIED: u8 = b'M';
    /// Order Restated.
    pub const RESTATED: u8 = b'R';
    /// Account Query Response.
    pub const ACCOUNT_QUERY_RESPONSE: u8 = b'Q';
    /// Mass Cancel Response.
    pub const MASS_CANCEL_RESPONSE: u8 = b'X';
}

/// Whether a field holds OUCH `alpha` text: printable ASCII (0x20 to 0x7E), space-padded.
/// Decoding does not check it (a view borrows the bytes as they came); the gateway does,
/// before any field reaches the matcher or an outbound message.
pub fn is_alpha(field: &[u8]) -> bool {
    field.iter().all(|b| (0x20..=0x7E).contains(b))
}

/// Appendage bytes at most in a message this codec writes; the gateway also caps inbound.
pub const APPENDAGE_MAX: usize = 128;

macro_rules! wire_struct {
    ($(#[$doc:meta])* $name:ident, $len:expr, { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
        #[repr(C)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        const _: () = assert!(size_of::<$name>() == $len, "layout size must match the OUCH 5.0 table");
    };
}

wire_struct!(/// Enter Order `O`, fixed 47 bytes.
EnterOrder, 47, {
    /// `O`
    msg_type: u8, /// UserRefNum
    user_ref: U32, /// `B` `S` `T` `E`
    side: u8, /// Shares
    qty: U32, /// Symbol, space-padded
    symbol: [u8; 8], /// Price, 4 implied decimals
    price: U64, /// Time in force
    tif: u8, /// Display
    display: u8, /// Capacity
    capacity: u8, /// Intermarket sweep eligibility
    iso: u8, /// Cross type
    cross_type: u8, /// Client order id
    clordid: [u8; 14], /// Bytes of options that follow
    appendage_len: U16,
});

impl EnterOrder {
    /// An Enter Order with the fields order-entry tools rarely vary filled in: principal
    /// capacity, not an intermarket sweep, no cross, blank ClOrdID, no options (set any of
    /// them afterwards).
    pub fn new(
        user_ref: u32,
        side: u8,
        qty: u32,
        symbol: [u8; 8],
        price: u64,
        tif: u8,
        display: u8,
    ) -> EnterOrder {
        EnterOrder {
            msg_type: inbound::ENTER,
            user_ref: U32::new(user_ref),
            side,
            qty: U32::new(qty),
            symbol,
            price: U64::new(price),
            tif,
            display,
            capacity: b'P',
            iso: b'N',
            cross_type: b'N',
            clordid: [b' '; 14],
            appendage_len: U16::ZERO,
        }
    }
}

wire_struct!(/// Replace Order `U`, fixed 40 bytes.
ReplaceOrder, 40, {
    /// `U`
    msg_type: u8, /// Order to replace
    orig_user_ref: U32, /// New UserRefNum
    user_ref: U32, /// New total shares for the chain
    qty: U32, /// Price
    price: U64, /// Time in force
    tif: u8, /// Display
    display: u8, /// Intermarket sweep eligibility
    iso: u8, /// Client order id
    clordid: [u8; 14], /// Bytes of options that follow
    appendage_len: U16,
});

wire_struct!(/// Cancel Order `X`, 9 bytes.
CancelOrder, 9, {
    /// `X`
    msg_type: u8, /// Order
    user_ref: U32, /// New intended size; 0 cancels all
    qty: U32,
});

wire_struct!(/// Modify Order `M`, 10 bytes.
ModifyOrder, 10, {
    /// `M`
    msg_type: u8, /// Order
    user_ref: U32, /// New side
    side: u8, /// New intended size
    qty: U32,
});

wire_struct!(/// Mass Cancel Request `C`, fixed 19 bytes.
MassCancelRequest, 19, {
    /// `C`
    msg_type: u8, /// New UserRefNum
    user_ref: U32, /// Firm
    firm: [u8; 4], /// Symbol, all spaces for every symbol
    symbol: [u8; 8], /// Bytes of options that follow
    appendage_len: U16,
});

wire_struct!(/// System Event `S`, 10 bytes.
SystemEvent, 10, {
    /// `S`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// `S` start of day, `E` end of day
    event_code: u8,
});

wire_struct!(/// Order Accepted `A`, fixed 64 bytes.
OrderAccepted, 64, {
    /// `A`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum
    user_ref: U32, /// Side
    side: u8, /// Shares
    qty: U32, /// Symbol
    symbol: [u8; 8], /// Price
    price: U64, /// Time in force
    tif: u8, /// Display
    display: u8, /// Venue order reference
    order_ref: U64, /// Capacity
    capacity: u8, /// Intermarket sweep eligibility
    iso: u8, /// Cross type
    cross_type: u8, /// `L` live, `D` dead
    order_state: u8, /// Client order id
    clordid: [u8; 14], /// Bytes of options that follow
    appendage_len: U16,
});

wire_struct!(/// Order Replaced `U`, fixed 68 bytes.
OrderReplaced, 68, {
    /// `U`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// The replaced order
    orig_user_ref: U32, /// The new order
    user_ref: U32, /// Side
    side: u8, /// Shares
    qty: U32, /// Symbol
    symbol: [u8; 8], /// Price
    price: U64, /// Time in force
    tif: u8, /// Display
    display: u8, /// Venue order reference
    order_ref: U64, /// Capacity
    capacity: u8, /// Intermarket sweep eligibility
    iso: u8, /// Cross type
    cross_type: u8, /// `L` live, `D` dead
    order_state: u8, /// Client order id
    clordid: [u8; 14], /// Bytes of options that follow
    appendage_len: U16,
});

wire_struct!(/// Order Canceled `C`, 18 bytes.
OrderCanceled, 18, {
    /// `C`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum
    user_ref: U32, /// Shares removed by this cancel
    qty: U32, /// Reason
    reason: u8,
});

wire_struct!(/// AIQ Canceled `D`, 31 bytes.
AiqCanceled, 31, {
    /// `D`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum
    user_ref: U32, /// Shares removed
    decrement: U32, /// Reason (`Q`)
    reason: u8, /// Shares that would have traded
    prevented: U32, /// Price they would have traded at
    price: U64, /// Liquidity flag
    liquidity: u8,
});

wire_struct!(/// Order Executed `E`, fixed 36 bytes.
OrderExecuted, 36, {
    /// `E`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum
    user_ref: U32, /// Shares executed
    qty: U32, /// Execution price
    price: U64, /// Liquidity flag
    liquidity: u8, /// Match number
    match_number: U64, /// Bytes of options that follow
    appendage_len: U16,
});

wire_struct!(/// Rejected `J`, 29 bytes.
Rejected, 29, {
    /// `J`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum of the request
    user_ref: U32, /// Reason code
    reason: U16, /// Client order id
    clordid: [u8; 14],
});

wire_struct!(/// Cancel Reject `I`, 13 bytes.
CancelReject, 13, {
    /// `I`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum
    user_ref: U32,
});

wire_struct!(/// Order Modified `M`, 18 bytes.
OrderModified, 18, {
    /// `M`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum
    user_ref: U32, /// Side in force
    side: u8, /// Shares in force
    qty: U32,
});

wire_struct!(/// Order Restated `R`, fixed 16 bytes.
OrderRestated, 16, {
    /// `R`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum
    user_ref: U32, /// `R` refresh of display, `P` new displayed price
    reason: u8, /// Bytes of options that follow
    appendage_len: U16,
});

wire_struct!(/// Account Query Response `Q`, 13 bytes.
AccountQueryResponse, 13, {
    /// `Q`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// Next UserRefNum expected
    next_user_ref: U32,
});

wire_struct!(/// Mass Cancel Response `X`, fixed 27 bytes.
MassCancelResponse, 27, {
    /// `X`
    msg_type: u8, /// ns since midnight
    timestamp: U64, /// UserRefNum of the request
    user_ref: U32, /// Firm
    firm: [u8; 4], /// Symbol or spaces
    symbol: [u8; 8], /// Bytes of options that follow
    appendage_len: U16,
});

/// The optional appendage, decoded. Tags not listed here are skipped by their length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Tag 1: alternative order reference used on market data.
    pub secondary_ord_ref: Option<u64>,
    /// Tag 2: firm.
    pub firm: Option<[u8; 4]>,
    /// Tag 3: minimum quantity.
    pub min_qty: Option<u32>,
    /// Tag 4: customer type.
    pub customer_type: Option<u8>,
    /// Tag 5: reserve display size.
    pub max_floor: Option<u32>,
    /// Tag 6: price type (`L` limit; pegs are not offered).
    pub price_type: Option<u8>,
    /// Tag 7: peg offset.
    pub peg_offset: Option<i32>,
    /// Tag 9: discretion price (0: no discretion).
    pub discretion_price: Option<u64>,
    /// Tag 10: discretion price type (`L` limit; pegs are not offered).
    pub discretion_price_type: Option<u8>,
    /// Tag 11: discretion peg offset.
    pub discretion_peg_offset: Option<i32>,
    /// Tag 12: post only (`P`) or not (`N`).
    pub post_only: Option<u8>,
    /// Tag 13: random reserve shares (0: none).
    pub random_reserves: Option<u32>,
    /// Tag 15: expire time in seconds.
    pub expire_time: Option<u32>,
    /// Tag 16: trade now.
    pub trade_now: Option<u8>,
    /// Tag 17: handling instruction.
    pub handle_inst: Option<u8>,
    /// Tag 18: BBO weight indicator.
    pub bbo_weight: Option<u8>,
    /// Tag 19: reference price.
    pub reference_price: Option<u64>,
    /// Tag 20: reference price type.
    pub reference_price_type: Option<u8>,
    /// Tag 22: displayed quantity.
    pub display_qty: Option<u32>,
    /// Tag 23: displayed price.
    pub display_price: Option<u64>,
    /// Tag 24: group id.
    pub group_id: Option<u16>,
    /// Tag 27: side criterion (mass cancel).
    pub side: Option<u8>,
    /// Tag 28: UserRefNum channel.
    pub user_ref_idx: Option<u8>,
}

fn array<const N: usize>(tag: u8, value: &[u8]) -> Result<[u8; N], DecodeError> {
    value.try_into().map_err(|_| DecodeError::OptionLength {
        tag,
        len: value.len(),
    })
}

impl Options {
    /// Walks an appendage. Tags not read here (Route, Shares Located, Locate Broker, tags
    /// no source defines) are skipped; a known tag of the wrong size, a
    /// zero option length or an option running past the end is an error.
    pub fn parse(appendage: &[u8]) -> Result<Options, DecodeError> {
        let mut o = Options::default();
        let mut rest = appendage;
        while let [len, tail @ ..] = rest {
            let len = usize::from(*len);
            if len == 0 {
                return Err(DecodeError::OptionLengthZero);
            }
            let Some(option) = tail.get(..len) else {
                return Err(DecodeError::OptionOverrun);
            };
            let (tag, v) = (option[0], &option[1..]);
            match tag {
                1 => o.secondary_ord_ref = Some(u64::from_be_bytes(array(tag, v)?)),
                2 => o.firm = Some(array(tag, v)?),
                3 => o.min_qty = Some(u32::from_be_bytes(array(tag, v)?)),
                4 => o.customer_type = Some(array::<1>(tag, v)?[0]),
                5 => o.max_floor = Some(u32::from_be_bytes(array(tag, v)?)),
                6 => o.price_type = Some(array::<1>(tag, v)?[0]),
                7 => o.peg_offset = Some(i32::from_be_bytes(array(tag, v)?)),
                9 => o.discretion_price = Some(u64::from_be_bytes(array(tag, v)?)),
                10 => o.discretion_price_type = Some(array::<1>(tag, v)?[0]),
                11 => o.discretion_peg_offset = Some(i32::from_be_bytes(array(tag, v)?)),
                12 => o.post_only = Some(array::<1>(tag, v)?[0]),
                13 => o.random_reserves = Some(u32::from_be_bytes(array(tag, v)?)),
                15 => o.expire_time = Some(u32::from_be_bytes(array(tag, v)?)),
                16 => o.trade_now = Some(array::<1>(tag, v)?[0]),
                17 => o.handle_inst = Some(array::<1>(tag, v)?[0]),
                18 => o.bbo_weight = Some(array::<1>(tag, v)?[0]),
                19 => o.reference_price = Some(u64::from_be_bytes(array(tag, v)?)),
                20 => o.reference_price_type = Some(array::<1>(tag, v)?[0]),
                22 => o.display_qty = Some(u32::from_be_bytes(array(tag, v)?)),
                23 => o.display_price = Some(u64::from_be_bytes(array(tag, v)?)),
                24 => o.group_id = Some(u16::from_be_bytes(array(tag, v)?)),
                27 => o.side = Some(array::<1>(tag, v)?[0]),
                28 => o.user_ref_idx = Some(array::<1>(tag, v)?[0]),
                _ => {}
            }
            rest = &tail[len..];
        }
        Ok(o)
    }

    /// Appends the options that are set, in tag order.
    pub fn write(&self, out: &mut Vec<u8>) {
        fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
            out.push(1 + value.len() as u8);
            out.push(tag);
            out.extend_from_slice(value);
        }
        if let Some(v) = self.secondary_ord_ref {
            put(out, 1, &v.to_be_bytes());
        }
        if let Some(v) = self.firm {
            put(out, 2, &v);
        }
        if let Some(v) = self.min_qty {
            put(out, 3, &v.to_be_bytes());
        }
        if let Some(v) = self.customer_type {
            put(out, 4, &[v]);
        }
        if let Some(v) = self.max_floor {
            put(out, 5, &v.to_be_bytes());
        }
        if let Some(v) = self.price_type {
            put(out, 6, &[v]);
        }
        if let Some(v) = self.peg_offset {
            put(out, 7, &v.to_be_bytes());
        }
        if let Some(v) = self.discretion_price {
            put(out, 9, &v.to_be_bytes());
        }
        if let Some(v) = self.discretion_price_type {
            put(out, 10, &[v]);
        }
        if let Some(v) = self.discretion_peg_offset {
            put(out, 11, &v.to_be_bytes());
        }
        if let Some(v) = self.post_only {
            put(out, 12, &[v]);
        }
        if let Some(v) = self.random_reserves {
            put(out, 13, &v.to_be_bytes());
        }
        if let Some(v) = self.expire_time {
            put(out, 15, &v.to_be_bytes());
        }
        if let Some(v) = self.trade_now {
            put(out, 16, &[v]);
        }
        if let Some(v) = self.handle_inst {
            put(out, 17, &[v]);
        }
        if let Some(v) = self.bbo_weight {
            put(out, 18, &[v]);
        }
        if let Some(v) = self.reference_price {
            put(out, 19, &v.to_be_bytes());
        }
        if let Some(v) = self.reference_price_type {
            put(out, 20, &[v]);
        }
        if let Some(v) = self.display_qty {
            put(out, 22, &v.to_be_bytes());
        }
        if let Some(v) = self.display_price {
            put(out, 23, &v.to_be_bytes());
        }
        if let Some(v) = self.group_id {
            put(out, 24, &v.to_be_bytes());
        }
        if let Some(v) = self.side {
            put(out, 27, &[v]);
        }
        if let Some(v) = self.user_ref_idx {
            put(out, 28, &[v]);
        }
    }
}

/// A decoded inbound message: a view into the packet plus its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Enter Order.
    Enter(&'a EnterOrder, Options),
    /// Replace Order.
    Replace(&'a ReplaceOrder, Options),
    /// Cancel Order.
    Cancel(&'a CancelOrder, Options),
    /// Modify Order.
    Modify(&'a ModifyOrder, Options),
    /// Account Query.
    AccountQuery(Options),
    /// Mass Cancel Request.
    MassCancel(&'a MassCancelRequest, Options),
}

/// A decoded outbound message (for clients, tools and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// System Event.
    SystemEvent(&'a SystemEvent),
    /// Order Accepted.
    Accepted(&'a OrderAccepted, Options),
    /// Order Replaced.
    Replaced(&'a OrderReplaced, Options),
    /// Order Canceled.
    Canceled(&'a OrderCanceled),
    /// AIQ Canceled.
    AiqCanceled(&'a AiqCanceled),
    /// Order Executed.
    Executed(&'a OrderExecuted, Options),
    /// Rejected.
    Rejected(&'a Rejected),
    /// Cancel Reject.
    CancelReject(&'a CancelReject),
    /// Order Modified.
    Modified(&'a OrderModified),
    /// Order Restated.
    Restated(&'a OrderRestated, Options),
    /// Account Query Response.
    AccountQueryResponse(&'a AccountQueryResponse),
    /// Mass Cancel Response.
    MassCancelResponse(&'a MassCancelResponse, Options),
}

/// A fixed-size message with no appendage: exactly `size_of::<T>()` bytes.
fn fixed<T: FromBytes + KnownLayout + Immutable>(msg: &[u8]) -> Result<&T, DecodeError> {
    T::ref_from_bytes(msg).map_err(|_| DecodeError::WrongLength {
        kind: msg[0],
        expected: size_of::<T>(),
        got: msg.len(),
    })
}

/// A fixed part ending in a 2-byte appendage length, then exactly that many option bytes.
fn with_appendage<T: FromBytes + KnownLayout + Immutable>(
    msg: &[u8],
) -> Result<(&T, Options), DecodeError> {
    let n = size_of::<T>();
    let Some(head) = msg.get(..n) else {
        return Err(DecodeError::WrongLength {
            kind: msg[0],
            expected: n,
            got: msg.len(),
        });
    };
    let appendage_len = usize::from(u16::from_be_bytes([head[n - 2], head[n - 1]]));
    let appendage = &msg[n..];
    if appendage.len() != appendage_len {
        return Err(DecodeError::AppendageLength {
            declared: appendage_len,
            present: appendage.len(),
        });
    }
    let view = T::ref_from_bytes(head).map_err(|_| DecodeError::EmptyPacket)?;
    Ok((view, Options::parse(appendage)?))
}

/// Cancel and Modify: fixed length; two or more extra bytes are an appendage length and
/// options (OUCH revisions differ; see the protocol notes). Never sent by us.
fn fixed_maybe_appendage<T: FromBytes + KnownLayout + Immutable>(
    msg: &[u8],
) -> Result<(&T, Options), DecodeError> {
    let n = size_of::<T>();
    if msg.len() == n {
        return fixed(msg).map(|v| (v, Options::default()));
    }
    if msg.len() < n + 2 {
        return Err(DecodeError::WrongLength {
            kind: msg[0],
            expected: n,
            got: msg.len(),
        });
    }
    let appendage_len = usize::from(u16::from_be_bytes([msg[n], msg[n + 1]]));
    if msg.len() != n + 2 + appendage_len {
        return Err(DecodeError::AppendageLength {
            declared: appendage_len,
            present: msg.len() - n - 2,
        });
    }
    let view = fixed::<T>(&msg[..n])?;
    Ok((view, Options::parse(&msg[n + 2..])?))
}

/// Decodes one inbound message (the payload of a SoupBinTCP Unsequenced Data packet).
pub fn decode_inbound(msg: &[u8]) -> Result<Inbound<'_>, DecodeError> {
    let Some(&msg_type) = msg.first() else {
        return Err(DecodeError::EmptyMessage);
    };
    match msg_type {
        inbound::ENTER => with_appendage(msg).map(|(m, o)| Inbound::Enter(m, o)),
        inbound::REPLACE => with_appendage(msg).map(|(m, o)| Inbound::Replace(m, o)),
        inbound::CANCEL => fixed_maybe_appendage(msg).map(|(m, o)| Inbound::Cancel(m, o)),
        inbound::MODIFY => fixed_maybe_appendage(msg).map(|(m, o)| Inbound::Modify(m, o)),
        inbound::MASS_CANCEL => with_appendage(msg).map(|(m, o)| Inbound::MassCancel(m, o)),
        inbound::ACCOUNT_QUERY => match msg.len() {
            1 => Ok(Inbound::AccountQuery(Options::default())),
            2 => Err(DecodeError::WrongLength {
                kind: msg_type,
                expected: 1,
                got: 2,
            }),
            _ => {
                let appendage_len = usize::from(u16::from_be_bytes([msg[1], msg[2]]));
                if msg.len() != 3 + appendage_len {
                    return Err(DecodeError::AppendageLength {
                        declared: appendage_len,
                        present: msg.len() - 3,
                    });
                }
                Options::parse(&msg[3..]).map(Inbound::AccountQuery)
            }
        },
        other => Err(DecodeError::UnknownMessageType(other)),
    }
}

/// Decodes one outbound message (the payload of a Sequenced Data packet).
pub fn decode_outbound(msg: &[u8]) -> Result<Outbound<'_>, DecodeError> {
    let Some(&msg_type) = msg.first() else {
        return Err(DecodeError::EmptyMessage);
    };
    match msg_type {
        outbound::SYSTEM_EVENT => fixed(msg).map(Outbound::SystemEvent),
        outbound::ACCEPTED => with_appendage(msg).map(|(m, o)| Outbound::Accepted(m, o)),
        outbound::REPLACED => with_appendage(msg).map(|(m, o)| Outbound::Replaced(m, o)),
        outbound::CANCELED => fixed(msg).map(Outbound::Canceled),
        outbound::AIQ_CANCELED => fixed(msg).map(Outbound::AiqCanceled),
        outbound::EXECUTED => with_appendage(msg).map(|(m, o)| Outbound::Executed(m, o)),
        outbound::REJECTED => fixed(msg).map(Outbound::Rejected),
        outbound::CANCEL_REJECT => fixed(msg).map(Outbound::CancelReject),
        outbound::MODIFIED => fixed(msg).map(Outbound::Modified),
        outbound::RESTATED => with_appendage(msg).map(|(m, o)| Outbound::Restated(m, o)),
        outbound::ACCOUNT_QUERY_RESPONSE => fixed(msg).map(Outbound::AccountQueryResponse),
        outbound::MASS_CANCEL_RESPONSE => {
            with_appendage(msg).map(|(m, o)| Outbound::MassCancelResponse(m, o))
        }
        other => Err(DecodeError::UnknownMessageType(other)),
    }
}

/// Appends a message: its fixed part with the appendage length filled in, then `options`.
/// `fixed` must end with the 2-byte appendage length field.
pub fn write_with_options<T: IntoBytes + Immutable>(
    out: &mut Vec<u8>,
    fixed: &T,
    options: &Options,
) {
    out.extend_from_slice(fixed.as_bytes());
    let appendage_start = out.len();
    options.write(out);
    let appendage_len = u16::try_from(out.len() - appendage_start).expect("options fit in a u16");
    out[appendage_start - 2..appendage_start].copy_from_slice(&appendage_len.to_be_bytes());
}

/// Appends a message without an appendage.
pub fn write_fixed<T: IntoBytes + Immutable>(out: &mut Vec<u8>, fixed: &T) {
    out.extend_from_slice(fixed.as_bytes());
}

impl Inbound<'_> {
    /// Re-encodes the message (used by clients and by round-trip tests).
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Inbound::Enter(m, o) => write_with_options(out, *m, o),
            Inbound::Replace(m, o) => write_with_options(out, *m, o),
            Inbound::MassCancel(m, o) => write_with_options(out, *m, o),
            Inbound::Cancel(m, o) => write_fixed_or_appendage(out, m.as_bytes(), o),
            Inbound::Modify(m, o) => write_fixed_or_appendage(out, m.as_bytes(), o),
            Inbound::AccountQuery(o) => write_fixed_or_appendage(out, &[inbound::ACCOUNT_QUERY], o),
        }
    }
}

/// Messages whose appendage is optional: the fixed part alone when there are no options,
/// otherwise an appendage length and the options after it.
fn write_fixed_or_appendage(out: &mut Vec<u8>, fixed: &[u8], options: &Options) {
    out.extend_from_slice(fixed);
    if *options == Options::default() {
        return;
    }
    out.extend_from_slice(&[0, 0]);
    let start = out.len();
    options.write(out);
    let len = u16::try_from(out.len() - start).expect("options fit in a u16");
    out[start - 2..start].copy_from_slice(&len.to_be_bytes());
}
