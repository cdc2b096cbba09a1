//! MoldUDP64 1.00 framing: downstream packets (data, heartbeat, end of session) and
//! retransmission request packets. Layouts: `shared/protocol/moldudp64.md`.
//!
//! Used by the feed publisher thread (build packets, answer requests) and by
//! `ironmatch feed` (parse packets, send requests). A message block is a 2-byte big-endian
//! length and the message: the same framing as a plain ITCH file, so a run of file bytes
//! is a run of blocks. Parsing takes untrusted bytes and returns a [`DecodeError`], never
//! panics.

use super::DecodeError;

/// Bytes of the downstream and request headers.
pub const HEADER_LEN: usize = 20;
/// Message Count of a heartbeat.
pub const COUNT_HEARTBEAT: u16 = 0;
/// Message Count of an End of Session packet.
pub const COUNT_END_OF_SESSION: u16 = 0xFFFF;
/// Most messages one data packet (or one request) may carry or ask for.
pub const COUNT_MAX: u16 = 0xFFFE;

/// A session name: alpha(10), padded on the right with spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Session(pub [u8; 10]);

impl Session {
    /// From 1 to 10 printable ASCII characters.
    pub fn from_str_padded(text: &str) -> Option<Session> {
        let b = text.as_bytes();
        if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        let mut out = [b' '; 10];
        out[..b.len()].copy_from_slice(b);
        Some(Session(out))
    }

    /// The name without its padding.
    pub fn as_str(&self) -> String {
        String::from_utf8_lossy(&self.0).trim_end().to_string()
    }
}

/// The 20 bytes every downstream packet and every request starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    /// Session.
    pub session: Session,
    /// Sequence number of the first message (data), the next one to come (heartbeat, end
    /// of session) or the first one wanted (request).
    pub seq: u64,
    /// Message count (data), 0 (heartbeat), 0xFFFF (end of session), or messages wanted
    /// (request).
    pub count: u16,
}

impl PacketHeader {
    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..10].copy_from_slice(&self.session.0);
        out[10..18].copy_from_slice(&self.seq.to_be_bytes());
        out[18..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    /// Reads the first 20 bytes.
    pub fn parse(bytes: &[u8]) -> Result<PacketHeader, DecodeError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(DecodeError::WrongLength {
                kind: 0,
                expected: HEADER_LEN,
                got: bytes.len(),
            });
        };
        let mut session = [0u8; 10];
        session.copy_from_slice(&h[..10]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&h[10..18]);
        Ok(PacketHeader {
            session: Session(session),
            seq: u64::from_be_bytes(seq),
            count: u16::from_be_bytes([h[18], h[19]]),
        })
    }
}

/// A parsed downstream packet: its header and its message blocks.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The header.
    pub header: PacketHeader,
    blocks: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses a whole datagram. Data packets must hold exactly `count` well-formed blocks;
    /// heartbeats and end-of-session packets must hold nothing after the header.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let header = PacketHeader::parse(bytes)?;
        let blocks = &bytes[HEADER_LEN..];
        let count = match header.count {
            COUNT_HEARTBEAT | COUNT_END_OF_SESSION => 0,
            n => usize::from(n),
        };
        // The number after the packet's last message fits in 64 bits, so numbers never wrap
        // inside a packet and a receiver's next expected number exists.
        if header.seq.checked_add(count as u64).is_none() {
            return Err(DecodeError::BadField {
                field: "sequence number (the number after its last message passes 2^64 - 1)",
                value: header.seq,
            });
        }
        let mut at = 0usize;
        for _ in 0..count {
            let Some(prefix) = blocks.get(at..at + 2) else {
                return Err(DecodeError::WrongLength {
                    kind: 0,
                    expected: at + 2,
                    got: blocks.len(),
                });
            };
            // A message of 0 bytes is allowed (`moldudp64.md` §4): it still takes its
            // sequence number.
            let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
            at += 2 + len;
        }
        if at != blocks.len() {
            return Err(DecodeError::WrongLength {
                kind: 0,
                expected: at,
                got: blocks.len(),
            });
        }
        Ok(Packet { header, blocks })
    }

    /// True for a heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        self.header.count == COUNT_HEARTBEAT
    }

    /// True for an End of Session packet.
    pub fn is_end_of_session(&self) -> bool {
        self.header.count == COUNT_END_OF_SESSION
    }

    /// Messages carried (0 for heartbeat and end of session).
    pub fn message_count(&self) -> u64 {
        match self.header.count {
            COUNT_HEARTBEAT | COUNT_END_OF_SESSION => 0,
            n => u64::from(n),
        }
    }

    /// The sequence number after this packet's last message.
    pub fn next_seq(&self) -> u64 {
        self.header.seq.saturating_add(self.message_count())
    }

    /// The messages with their sequence numbers, in order.
    pub fn messages(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let blocks = self.blocks;
        let first = self.header.seq;
        let mut at = 0usize;
        let mut i = 0u64;
        std::iter::from_fn(move || {
            // `parse` checked every length, so these slices are in bounds.
            let prefix = blocks.get(at..at + 2)?;
            let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
            let message = blocks.get(at + 2..at + 2 + len)?;
            at += 2 + len;
            i += 1;
            // `parse` checked that `first + count` fits; a header changed since parsing
            // ends the messages rather than wrap their numbers.
            Some((first.checked_add(i - 1)?, message))
        })
    }
}

/// Builds data packets of at most `bytes_max` bytes in a buffer allocated once.
#[derive(Debug)]
pub struct PacketBuilder {
    session: Session,
    buf: Vec<u8>,
    bytes_max: usize,
    count: u16,
}

impl PacketBuilder {
    /// A builder for packets of `session`, each at most `bytes_max` bytes (header
    /// included).
    pub fn new(session: Session, bytes_max: usize) -> PacketBuilder {
        let mut buf = Vec::with_capacity(bytes_max);
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        PacketBuilder {
            session,
            buf,
            bytes_max,
            count: 0,
        }
    }

    /// Messages in the packet being built.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Appends one block (2-byte length and message, already framed) if it fits; returns
    /// false if the packet is full (send it, then add the block to the next one).
    pub fn try_add_block(&mut self, block: &[u8]) -> bool {
        if self.buf.len() + block.len() > self.bytes_max || self.count == COUNT_MAX {
            return false;
        }
        self.buf.extend_from_slice(block);
        self.count += 1;
        true
    }

    /// The packet whose first message is `first_seq`; the builder is then empty again
    /// once [`PacketBuilder::clear`] is called.
    pub fn finish(&mut self, first_seq: u64) -> &[u8] {
        let header = PacketHeader {
            session: self.session,
            seq: first_seq,
            count: self.count,
        };
        self.buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        &self.buf
    }

    /// Empties the packet.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.count = 0;
    }
}

/// A heartbeat (`end_of_session` false) or End of Session packet announcing `next_seq`.
pub fn status_packet(session: Session, next_seq: u64, end_of_session: bool) -> [u8; HEADER_LEN] {
    PacketHeader {
        session,
        seq: next_seq,
        count: if end_of_session {
            COUNT_END_OF_SESSION
        } else {
            COUNT_HEARTBEAT
        },
    }
    .to_bytes()
}

/// Parses a retransmission request: exactly 20 bytes.
pub fn parse_request(bytes: &[u8]) -> Result<PacketHeader, DecodeError> {
    if bytes.len() != HEADER_LEN {
        return Err(DecodeError::WrongLength {
            kind: 0,
            expected: HEADER_LEN,
            got: bytes.len(),
        });
    }
    PacketHeader::parse(bytes)
}
