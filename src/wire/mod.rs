//! Wire formats: SoupBinTCP 3.0 framing and OUCH 5.0 messages (order entry), ITCH 5.0
//! messages and MoldUDP64 framing (market data).
//!
//! Pure functions over byte slices, used by the gateway and feed threads and by clients
//! (the load generator, `ironmatch feed`, tests). Decoders take untrusted bytes and return a view or a
//! [`DecodeError`] with the reason; they never panic and never allocate.

pub mod itch;
pub mod moldudp64;
pub mod ouch;
pub mod soupbin;

/// Why bytes could not be decoded. The gateway logs it and ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A SoupBinTCP packet length of zero.
    #[error("packet length 0")]
    EmptyPacket,
    /// A SoupBinTCP packet longer than the configured limit.
    #[error("packet length {len} above the limit {max}")]
    PacketTooLong {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// An unknown SoupBinTCP packet type.
    #[error("unknown packet type {0:#04x}")]
    UnknownPacketType(u8),
    /// A packet or message of the wrong size for its type.
    #[error("type {kind:#04x}: {got} bytes, expected {expected}")]
    WrongLength {
        /// Packet or message type.
        kind: u8,
        /// Size its layout has.
        expected: usize,
        /// Size received.
        got: usize,
    },
    /// An Unsequenced Data packet with no message.
    #[error("empty message")]
    EmptyMessage,
    /// An unknown OUCH message type.
    #[error("unknown message type {0:#04x}")]
    UnknownMessageType(u8),
    /// The appendage length disagrees with the bytes present.
    #[error("appendage length {declared} but {present} bytes follow")]
    AppendageLength {
        /// Announced.
        declared: usize,
        /// Present.
        present: usize,
    },
    /// An option with length 0.
    #[error("option length 0")]
    OptionLengthZero,
    /// An option running past the end of the appendage.
    #[error("option runs past the appendage")]
    OptionOverrun,
    /// A known option tag with a value of the wrong size.
    #[error("option tag {tag}: value of {len} bytes")]
    OptionLength {
        /// Tag.
        tag: u8,
        /// Value length received.
        len: usize,
    },
    /// A numeric ASCII field that is not a number.
    #[error("not a number")]
    BadNumber,
    /// A field with a value outside its set.
    #[error("{field}: bad value {value:#x}")]
    BadField {
        /// Field name.
        field: &'static str,
        /// Value received.
        value: u64,
    },
}
