//! Journal format, version 5: segment headers and records. See the [module docs](super)
//! for the layout table; this file is its single implementation.

use crate::book::{BookConfig, Command, Event};

/// First 8 bytes of every segment.
pub const MAGIC: [u8; 8] = *b"IRONMJNL";
/// Format version written. Version 2 added a command ([`Command`]'s
/// `CommandBody::InvalidReplace`, at the end of its variants) with the same layout
/// otherwise, so version 1 segments are read as they were; a build that reads only 1
/// refuses a version 2 segment by its header instead of failing on its first new record.
/// Version 3 gives each record its index within its batch (bytes 14 and 15); in a segment
/// whose header says 3, every record has it (a build that reads only 1 and 2 refuses the
/// segment, so it cannot append records without it), which is what lets recovery tell a
/// power loss in the middle of the last batch's write from damage ([`super::reader`]).
/// Version 4 adds five reject reasons at the end of [`crate::book::RejectReason`]'s
/// variants (the gateway's refusals, named: display, pegging, cross order, retail, and
/// OUCH's "other" for the rest), with the same layout otherwise: a build that reads only up to 3
/// refuses a version 4 segment by its header, and a record with a new reason that a later
/// build appended to an older segment as a whole record it cannot decode (nothing is cut).
/// Version 5 adds an event at the end of [`crate::book::EventBody`]'s variants
/// (`MassCanceledSide`: a mass cancel limited to a side, with the side, for the response
/// to echo) and keeps in a mass cancel command the side the request named
/// (`Option<Side>`, where an `Option<BookSide>` was: its bid and ask read as buy and sell);
/// such a mass cancel in a segment of an earlier version was journaled as `MassCanceled`,
/// which replay takes for it there ([`VERSION_MASS_CANCEL_SIDE`]). A build that reads only
/// up to 4 refuses a version 5 segment by its header.
pub const VERSION: u16 = 5;
/// The first version whose mass cancels limited to a side are journaled with their side.
pub const VERSION_MASS_CANCEL_SIDE: u16 = 5;
/// The first version whose records carry their index within their batch.
pub const VERSION_BATCH_INDEX: u16 = 3;
/// The oldest format version read.
pub const VERSION_MIN: u16 = 1;
/// Segment header size.
pub const HEADER_LEN: usize = 64;
/// Record framing: length, sequence, type, reserved (16 bytes) before the payload, CRC after.
pub const RECORD_HEAD_LEN: usize = 16;
/// CRC32C at the end of each record.
pub const RECORD_CRC_LEN: usize = 4;
/// Largest record: a postcard-encoded command or event is far below this.
pub const RECORD_LEN_MAX: usize = 256;
/// Smallest record: framing plus a one-byte payload.
pub const RECORD_LEN_MIN: usize = RECORD_HEAD_LEN + 1 + RECORD_CRC_LEN;

/// Record type byte: an input command.
pub const TYPE_COMMAND: u8 = 1;
/// Record type byte: an output event.
pub const TYPE_EVENT: u8 = 2;
/// Bytes 12 and 13 of a command's record (its type, then the reserved byte).
const TYPE_COMMAND_WORD: u16 = TYPE_COMMAND as u16;
/// Bytes 12 and 13 of an event's record.
const TYPE_EVENT_WORD: u16 = TYPE_EVENT as u16;

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Engine instance that created the journal.
    pub instance: u64,
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
    /// Fingerprint of the book configuration the records were produced with.
    pub fingerprint: u64,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
}

/// A decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An input.
    Command(Command),
    /// An output.
    Event(Event),
}

/// Why bytes are not a valid header or record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not enough bytes for what the length says (a torn write, if at the end).
    #[error("truncated: {needed} bytes needed, {present} present")]
    Truncated {
        /// Bytes the header or record needs.
        needed: usize,
        /// Bytes present.
        present: usize,
    },
    /// Not a journal segment.
    #[error("bad magic")]
    BadMagic,
    /// A format version this build does not read.
    #[error("format version {0} (this build reads {VERSION_MIN} to {VERSION})")]
    Version(u16),
    /// A record length outside its limits.
    #[error("record length {0} outside {RECORD_LEN_MIN}..={RECORD_LEN_MAX}")]
    BadLength(usize),
    /// A whole record (its checksum holds) longer than this build writes.
    #[error("record of {0} bytes, whole, above this build's {RECORD_LEN_MAX}")]
    Oversize(usize),
    /// Checksum mismatch.
    #[error("CRC32C mismatch")]
    Crc,
    /// Unknown record type.
    #[error("record type {0}")]
    BadType(u8),
    /// The payload does not decode.
    #[error("payload does not decode")]
    BadPayload,
    /// A reserved byte (13) that is not 0.
    #[error("reserved byte 13 of the record's head is {0:#04x}, not 0")]
    Reserved(u8),
}

/// A fingerprint of everything in the book configuration that changes matching: replaying
/// a journal with another configuration would not reproduce its events.
pub fn fingerprint(config: &BookConfig) -> u64 {
    let bytes = postcard::to_allocvec(config).expect("configuration serializes");
    let low = crc32c::crc32c(&bytes);
    let high = crc32c::crc32c_append(low, &bytes);
    (u64::from(high) << 32) | u64::from(low)
}

/// Encodes a segment header.
pub fn write_header(header: &Header) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[16..24].copy_from_slice(&header.instance.to_le_bytes());
    h[24..32].copy_from_slice(&header.first_seq.to_le_bytes());
    h[32..40].copy_from_slice(&header.fingerprint.to_le_bytes());
    h[40..48].copy_from_slice(&header.created_ns.to_le_bytes());
    let crc = crc32c::crc32c(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes a segment header.
pub fn read_header(bytes: &[u8]) -> Result<Header, FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            needed: HEADER_LEN,
            present: bytes.len(),
        });
    }
    if bytes[0..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let stored = u32::from_le_bytes(bytes[60..64].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..60]) != stored {
        return Err(FormatError::Crc);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if !(VERSION_MIN..=VERSION).contains(&version) {
        return Err(FormatError::Version(version));
    }
    Ok(Header {
        instance: u64_at(bytes, 16),
        first_seq: u64_at(bytes, 24),
        fingerprint: u64_at(bytes, 32),
        created_ns: u64_at(bytes, 40),
    })
}

/// Appends one record to `out`, the `index`th of its batch (a batch is one `write`; from
/// 0, held at `u16::MAX` beyond). Never allocates if `out` has `RECORD_LEN_MAX` spare.
pub fn write_record(out: &mut Vec<u8>, seq: u64, index: u16, entry: &Entry) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEAD_LEN + RECORD_LEN_MAX]);
    let payload_area = &mut out[start + RECORD_HEAD_LEN..];
    let (kind, payload_len) = match entry {
        Entry::Command(c) => (
            TYPE_COMMAND,
            postcard::to_slice(c, payload_area).map(|p| p.len()),
        ),
        Entry::Event(e) => (
            TYPE_EVENT,
            postcard::to_slice(e, payload_area).map(|p| p.len()),
        ),
    };
    let payload_len = payload_len.expect("a command or event fits in RECORD_LEN_MAX");
    let len = RECORD_HEAD_LEN + payload_len + RECORD_CRC_LEN;
    assert!(
        len <= RECORD_LEN_MAX,
        "record of {len} bytes above RECORD_LEN_MAX"
    );
    out.truncate(start + RECORD_HEAD_LEN + payload_len);
    let head = &mut out[start..start + RECORD_HEAD_LEN];
    head[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[4..12].copy_from_slice(&seq.to_le_bytes());
    head[12] = kind;
    head[14..16].copy_from_slice(&index.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The index within its batch of the whole record at the start of `record` (0 in records
/// written by builds before [`VERSION_BATCH_INDEX`]; a segment such a build started and a
/// later build appended to holds both, under its old version).
pub fn batch_index(record: &[u8]) -> u16 {
    u16::from_le_bytes([record[14], record[15]])
}

/// The format version in a segment header already checked by [`read_header`].
pub fn header_version(header: &[u8]) -> u16 {
    u16::from_le_bytes([header[8], header[9]])
}

/// Decodes the record at the start of `bytes`: its sequence number, entry and length.
pub fn read_record(bytes: &[u8]) -> Result<(u64, Entry, usize), FormatError> {
    let record = frame_record(bytes)?;
    let len = record.len();
    let seq = u64_at(record, 4);
    let payload = &record[RECORD_HEAD_LEN..len - 4];
    // The type and the reserved byte after it in one test: [type, 0].
    let entry = match u16::from_le_bytes([record[12], record[13]]) {
        TYPE_COMMAND_WORD => Entry::Command(decode_exact(payload)?),
        TYPE_EVENT_WORD => Entry::Event(decode_exact(payload)?),
        _ if record[13] != 0 => return Err(FormatError::Reserved(record[13])),
        _ => return Err(FormatError::BadType(record[12])),
    };
    Ok((seq, entry, len))
}

impl FormatError {
    /// Whether a write cut short could have left this at the end of a segment: a record
    /// shorter than its length, a length not yet written, a checksum over bytes not all
    /// written. A complete record whose checksum holds (a type or payload this build does
    /// not read) never is: it was written whole.
    pub fn may_be_torn(&self) -> bool {
        matches!(
            self,
            FormatError::Truncated { .. } | FormatError::BadLength(_) | FormatError::Crc
        )
    }
}

/// The record at the start of `bytes`, whole and with its checksum holding, not decoded.
pub fn frame_record(bytes: &[u8]) -> Result<&[u8], FormatError> {
    if bytes.len() < 4 {
        return Err(FormatError::Truncated {
            needed: 4,
            present: bytes.len(),
        });
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if !(RECORD_LEN_MIN..=RECORD_LEN_MAX).contains(&len) {
        // Longer than this build writes, yet whole with its checksum holding: written by
        // another build, not torn.
        if len > RECORD_LEN_MAX && bytes.get(..len).is_some_and(checksum_holds) {
            return Err(FormatError::Oversize(len));
        }
        return Err(FormatError::BadLength(len));
    }
    let Some(record) = bytes.get(..len) else {
        return Err(FormatError::Truncated {
            needed: len,
            present: bytes.len(),
        });
    };
    if !checksum_holds(record) {
        return Err(FormatError::Crc);
    }
    Ok(record)
}

/// Whether a record's last 4 bytes are the CRC32C of the bytes before them.
fn checksum_holds(record: &[u8]) -> bool {
    let (body, stored) = record.split_at(record.len() - RECORD_CRC_LEN);
    crc32c::crc32c(body) == u32::from_le_bytes(stored.try_into().expect("4 bytes"))
}

/// Decodes a payload that must be used up exactly.
fn decode_exact<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FormatError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        _ => Err(FormatError::BadPayload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{CommandBody, EventBody};
    use crate::types::{OwnerId, Timestamp, UserRef};

    fn sample() -> Vec<(u64, Entry)> {
        vec![
            (
                1,
                Entry::Command(Command {
                    ts: Timestamp(5),
                    owner: OwnerId(1),
                    body: CommandBody::AccountQuery,
                }),
            ),
            (
                2,
                Entry::Event(Event {
                    ts: Timestamp(5),
                    body: EventBody::AccountQueried {
                        owner: OwnerId(1),
                        next_user_ref: UserRef(9),
                    },
                }),
            ),
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        for (seq, entry) in sample() {
            write_record(&mut out, seq, 0, &entry);
        }
        let mut at = 0;
        for (seq, entry) in sample() {
            let (s, e, len) = read_record(&out[at..]).unwrap();
            assert_eq!((s, e), (seq, entry));
            at += len;
        }
        assert_eq!(at, out.len());
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = Header {
            instance: 7,
            first_seq: 42,
            fingerprint: 99,
            created_ns: 1,
        };
        let mut bytes = write_header(&header);
        assert_eq!(read_header(&bytes), Ok(header));
        bytes[30] ^= 1;
        assert_eq!(read_header(&bytes), Err(FormatError::Crc));
    }

    #[test]
    fn every_bit_flip_of_a_record_is_detected() {
        let mut out = Vec::new();
        write_record(&mut out, 1, 0, &sample()[0].1);
        for bit in 0..out.len() * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                read_record(&damaged).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_of_a_record_is_detected() {
        let mut out = Vec::new();
        write_record(&mut out, 1, 0, &sample()[1].1);
        for cut in 0..out.len() {
            assert!(
                read_record(&out[..cut]).is_err(),
                "cut at {cut} went unnoticed"
            );
        }
    }
}
