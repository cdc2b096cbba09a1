//! Newtypes shared by every stage: prices, quantities, identifiers, sides.
//!
//! Prices are integers with 4 implied decimals, exactly as OUCH and ITCH carry them
//! (`150.2500` is `Price(1_502_500)`), so no stage ever converts or rounds a price.

use std::fmt;

/// A price in units of 1/10 000 of the currency (4 implied decimals, as OUCH carries it).
///
/// Range: `0..=Price::MAX_LIMIT.0` for a limit price. OUCH treats any price at or above
/// $200,000.0000 as a market order; the gateway maps that to a market order (`NewOrder::price` `None`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Price(pub u64);

impl Price {
    /// Number of implied decimal places.
    pub const DECIMALS: u32 = 4;
    /// 10^DECIMALS.
    pub const SCALE: u64 = 10_000;
    /// Highest limit price OUCH accepts: $199,999.9900.
    pub const MAX_LIMIT: Price = Price(1_999_999_900);

    /// Parses a decimal such as `"150.25"` into a price. Errors name what is wrong.
    ///
    /// ```
    /// use ironmatch::types::Price;
    /// assert_eq!(Price::parse_decimal("150.25"), Ok(Price(1_502_500)));
    /// assert!(Price::parse_decimal("0.00001").is_err()); // more than 4 decimals
    /// ```
    pub fn parse_decimal(text: &str) -> Result<Price, String> {
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{text:?} is not a decimal number like \"150.25\""));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (text.contains('.') && frac.is_empty()) {
            return Err(format!("{text:?} is not a decimal number like \"150.25\""));
        }
        if frac.len() > Self::DECIMALS as usize {
            return Err(format!(
                "{text:?} has more than {} decimal places",
                Self::DECIMALS
            ));
        }
        let whole: u64 = whole
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        let mut frac_units: u64 = 0;
        for (i, digit) in frac.bytes().enumerate() {
            frac_units += u64::from(digit - b'0') * 10u64.pow(Self::DECIMALS - 1 - i as u32);
        }
        let units = whole
            .checked_mul(Self::SCALE)
            .and_then(|u| u.checked_add(frac_units))
            .filter(|u| *u <= Self::MAX_LIMIT.0)
            .ok_or_else(|| format!("{text:?} is above the highest OUCH price 199999.99"))?;
        Ok(Price(units))
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:04}", self.0 / Self::SCALE, self.0 % Self::SCALE)
    }
}

/// A quantity of shares. OUCH carries it as u32.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Qty(pub u32);

/// The venue's order reference number: day-unique, assigned by the matcher, never a
/// client's number. The same counter gives ITCH order references.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct OrderId(pub u64);

/// A match (trade) number, shared by both sides' executions and the ITCH feed.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct MatchId(pub u64);

/// A sequence number (journal records, session messages).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Seq(pub u64);

/// A user's reference of an order or request: OUCH's UserRefNum (32 bits, strictly
/// increasing per user) when the commands come from OUCH sessions, or any 64-bit key of the
/// caller's choosing when the core is embedded with [`RefRule::Keys`](crate::book::RefRule).
///
/// Stored with 4-byte alignment (`packed(4)`) so that the events and commands that carry
/// it stay within their 96 bytes; read it by value (`r.0`), never by reference. Its
/// postcard encoding is a varint, so a reference below 2^32 encodes exactly as the 32-bit
/// one of earlier journals did.
#[repr(C, packed(4))]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct UserRef(pub u64);

impl UserRef {
    /// The reference as OUCH carries it (UserRefNum, 32 bits). References of commands from
    /// OUCH sessions always fit; a wider embedder's key is never encoded as OUCH.
    #[inline]
    pub fn to_ouch(self) -> u32 {
        let value = self.0;
        debug_assert!(
            value <= u64::from(u32::MAX),
            "reference {value} is not an OUCH UserRefNum"
        );
        value as u32
    }
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = self.0;
        value.fmt(f)
    }
}

/// Index of a configured user (the owner of a session and of its orders).
/// Range: `0..users.len()` of the configuration.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct OwnerId(pub u16);

/// Index of a configured instrument. Range: `0..instruments.len()`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct InstrumentId(pub u16);

/// Nanoseconds since midnight, supplied by the gateway inside each command.
/// The matcher never reads a clock.
///
/// Shown as hours, minutes and seconds to the nanosecond (`09:30:00.000001000`), in
/// `Debug` too (`Timestamp(09:30:00.000001000)`): what an operator reads in an audit or a
/// test failure is a time of day, not 34,200,000,001,000 nanoseconds.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Timestamp(pub u64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:02}:{:02}:{:02}.{:09}",
            t / 3_600_000_000_000,
            t / 60_000_000_000 % 60,
            t / 1_000_000_000 % 60,
            t % 1_000_000_000
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl Timestamp {
    /// Nanoseconds in a day: timestamps count from midnight (UTC) and wrap here.
    pub const DAY_NS: u64 = 86_400_000_000_000;

    /// The wall clock now, as nanoseconds since midnight UTC. The gateway stamps commands
    /// with it and feed listeners measure lag with it; the matcher never calls it.
    pub fn now() -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp((since_epoch.as_nanos() % u128::from(Timestamp::DAY_NS)) as u64)
    }
}

/// An instrument symbol: up to 8 ASCII characters, right-padded with spaces (OUCH alpha(8)).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Symbol(pub [u8; 8]);

impl Symbol {
    /// All spaces: "no symbol" where OUCH allows that (mass cancel).
    pub const BLANK: Symbol = Symbol(*b"        ");

    /// Builds a symbol from text; `None` if it is empty, longer than 8 bytes, or not
    /// printable ASCII without spaces.
    pub fn from_str_padded(text: &str) -> Option<Symbol> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > 8 || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut out = [b' '; 8];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(Symbol(out))
    }

    /// The symbol without its padding.
    pub fn as_str(&self) -> &str {
        let end = self.0.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
        std::str::from_utf8(&self.0[..end]).unwrap_or("?")
    }

    /// The 8 bytes as one integer, for hashing.
    pub fn key(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({:?})", self.as_str())
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A firm (OUCH alpha(4)); orders of the same firm never trade with each other.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Firm(pub [u8; 4]);

impl Firm {
    /// Builds a firm from 1 to 4 upper-case ASCII letters or digits (as OUCH writes firms),
    /// right-padded with spaces.
    pub fn from_str_padded(text: &str) -> Option<Firm> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > 4 || !bytes.iter().copied().all(Firm::is_firm_byte) {
            return None;
        }
        let mut out = [b' '; 4];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(Firm(out))
    }

    /// Whether `bytes`, as an OUCH Firm field carries them, are upper-case letters, digits
    /// and padding spaces (all spaces: no firm named).
    pub fn is_well_formed(bytes: &[u8; 4]) -> bool {
        bytes.iter().all(|&b| b == b' ' || Firm::is_firm_byte(b))
    }

    fn is_firm_byte(b: u8) -> bool {
        b.is_ascii_uppercase() || b.is_ascii_digit()
    }
}

impl fmt::Debug for Firm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Firm({:?})", String::from_utf8_lossy(&self.0).trim_end())
    }
}

/// The side of an order as OUCH states it. Sell, sell short and sell short exempt all rest
/// on the sell side of the book; the distinction is carried for reporting.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Side {
    /// `B`
    #[default]
    Buy,
    /// `S`
    Sell,
    /// `T`
    SellShort,
    /// `E`
    SellShortExempt,
}

impl Side {
    /// The book side this order rests on.
    pub fn book_side(self) -> BookSide {
        match self {
            Side::Buy => BookSide::Bid,
            _ => BookSide::Ask,
        }
    }

    /// The OUCH/ITCH byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Side::Buy => b'B',
            Side::Sell => b'S',
            Side::SellShort => b'T',
            Side::SellShortExempt => b'E',
        }
    }

    /// Parses the OUCH byte.
    pub fn from_byte(byte: u8) -> Option<Side> {
        match byte {
            b'B' => Some(Side::Buy),
            b'S' => Some(Side::Sell),
            b'T' => Some(Side::SellShort),
            b'E' => Some(Side::SellShortExempt),
            _ => None,
        }
    }
}

/// One side of a book.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum BookSide {
    /// Buy orders, best = highest price.
    Bid,
    /// Sell orders, best = lowest price.
    Ask,
}

impl BookSide {
    /// The other side.
    pub fn opposite(self) -> BookSide {
        match self {
            BookSide::Bid => BookSide::Ask,
            BookSide::Ask => BookSide::Bid,
        }
    }

    /// Index 0 for bids, 1 for asks.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a resting order on this side at `resting` trades with an incoming order
    /// limited to `limit` (the incoming order is on the opposite side).
    pub fn crosses(self, resting: Price, limit: Price) -> bool {
        match self {
            BookSide::Bid => resting >= limit,
            BookSide::Ask => resting <= limit,
        }
    }

    /// Whether `a` is a better price than `b` for orders resting on this side.
    pub fn better(self, a: Price, b: Price) -> bool {
        match self {
            BookSide::Bid => a > b,
            BookSide::Ask => a < b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_parses_decimals_exactly() {
        assert_eq!(Price::parse_decimal("150.25"), Ok(Price(1_502_500)));
        assert_eq!(Price::parse_decimal("0.0001"), Ok(Price(1)));
        assert_eq!(Price::parse_decimal("7"), Ok(Price(70_000)));
        assert_eq!(Price::parse_decimal("199999.99"), Ok(Price::MAX_LIMIT));
        assert_eq!(Price(1_502_500).to_string(), "150.2500");
    }

    #[test]
    fn price_rejects_bad_text_with_a_reason() {
        for bad in [
            "", ".5", "1.", "-1", "1.00001", "abc", "1e3", "200000", "1.2.3",
        ] {
            assert!(
                Price::parse_decimal(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
        assert!(
            Price::parse_decimal("1.00001")
                .unwrap_err()
                .contains("decimal places")
        );
    }

    #[test]
    fn symbol_pads_and_trims() {
        let s = Symbol::from_str_padded("AAPL").unwrap();
        assert_eq!(&s.0, b"AAPL    ");
        assert_eq!(s.as_str(), "AAPL");
        assert!(Symbol::from_str_padded("TOOLONGSYM").is_none());
        assert!(Symbol::from_str_padded("A B").is_none());
        assert!(Symbol::from_str_padded("").is_none());
    }

    #[test]
    fn book_side_crossing() {
        assert!(BookSide::Ask.crosses(Price(100), Price(100)));
        assert!(!BookSide::Ask.crosses(Price(101), Price(100)));
        assert!(BookSide::Bid.crosses(Price(100), Price(99)));
        assert!(BookSide::Bid.better(Price(2), Price(1)));
        assert!(BookSide::Ask.better(Price(1), Price(2)));
    }
}
