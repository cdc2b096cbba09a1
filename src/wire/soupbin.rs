//! SoupBinTCP 3.0 framing: every packet type, both directions.
//!
//! Runs on the gateway thread (and in clients). [`next_frame`] splits a byte stream into
//! packets without copying; `decode_*` turn a packet into a typed view; `write_*` append
//! encoded packets to a buffer. Untrusted bytes never panic: they give a [`DecodeError`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::DecodeError;

/// Packet types.
pub mod kind {
    /// Debug (either direction).
    pub const DEBUG: u8 = b'+';
    /// Login Accepted (server).
    pub const LOGIN_ACCEPTED: u8 = b'A';
    /// Login Rejected (server).
    pub const LOGIN_REJECTED: u8 = b'J';
    /// Sequenced Data (server).
    pub const SEQUENCED: u8 = b'S';
    /// Server Heartbeat.
    pub const SERVER_HEARTBEAT: u8 = b'H';
    /// End of Session (server).
    pub const END_OF_SESSION: u8 = b'Z';
    /// Login Request (client).
    pub const LOGIN_REQUEST: u8 = b'L';
    /// Unsequenced Data (client).
    pub const UNSEQUENCED: u8 = b'U';
    /// Client Heartbeat.
    pub const CLIENT_HEARTBEAT: u8 = b'R';
    /// Logout Request (client).
    pub const LOGOUT_REQUEST: u8 = b'O';
}

/// Login Rejected reason: bad username or password.
pub const REJECT_NOT_AUTHORIZED: u8 = b'A';
/// Login Rejected reason: session not available (unknown session, or already logged in).
pub const REJECT_SESSION_UNAVAILABLE: u8 = b'S';

/// Login Request payload (46 bytes after the packet type).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LoginRequest {
    /// Left-justified, space-padded.
    pub username: [u8; 6],
    /// Left-justified, space-padded.
    pub password: [u8; 10],
    /// All spaces = the current session.
    pub requested_session: [u8; 10],
    /// Numeric ASCII, right-justified; 0 or blank = no replay.
    pub requested_sequence: [u8; 20],
}

/// Login Accepted payload (30 bytes after the packet type).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LoginAccepted {
    /// Right-justified, space-padded.
    pub session: [u8; 10],
    /// Next sequence number, numeric ASCII, right-justified.
    pub sequence: [u8; 20],
}

/// A packet from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPacket<'a> {
    /// Login Request.
    Login(&'a LoginRequest),
    /// Unsequenced Data: one OUCH inbound message.
    Unsequenced(&'a [u8]),
    /// Client Heartbeat.
    Heartbeat,
    /// Logout Request.
    Logout,
    /// Debug text, to be ignored.
    Debug(&'a [u8]),
}

/// A packet from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerPacket<'a> {
    /// Login Accepted.
    LoginAccepted(&'a LoginAccepted),
    /// Login Rejected with its reason code.
    LoginRejected(u8),
    /// Sequenced Data: one OUCH outbound message.
    Sequenced(&'a [u8]),
    /// Server Heartbeat.
    Heartbeat,
    /// End of Session.
    EndOfSession,
    /// Debug text.
    Debug(&'a [u8]),
}

/// One framed packet: its type and payload, and how many bytes of the stream it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Packet type byte.
    pub kind: u8,
    /// Payload after the type byte.
    pub payload: &'a [u8],
    /// Bytes consumed from the stream (2 + packet length).
    pub len: usize,
}

/// Splits the next packet off `stream`. `Ok(None)` means more bytes are needed.
/// A packet length of 0, or above `packet_len_max`, is an error: the peer is broken or
/// hostile, and waiting for more bytes would only hold memory.
pub fn next_frame(stream: &[u8], packet_len_max: usize) -> Result<Option<Frame<'_>>, DecodeError> {
    let Some(header) = stream.get(..2) else {
        return Ok(None);
    };
    let packet_len = usize::from(u16::from_be_bytes([header[0], header[1]]));
    if packet_len == 0 {
        return Err(DecodeError::EmptyPacket);
    }
    if packet_len > packet_len_max {
        return Err(DecodeError::PacketTooLong {
            len: packet_len,
            max: packet_len_max,
        });
    }
    let Some(body) = stream.get(2..2 + packet_len) else {
        return Ok(None);
    };
    Ok(Some(Frame {
        kind: body[0],
        payload: &body[1..],
        len: 2 + packet_len,
    }))
}

fn expect_empty(kind: u8, payload: &[u8]) -> Result<(), DecodeError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::WrongLength {
            kind,
            expected: 0,
            got: payload.len(),
        })
    }
}

/// Decodes a client packet.
pub fn decode_client<'a>(frame: &Frame<'a>) -> Result<ClientPacket<'a>, DecodeError> {
    match frame.kind {
        kind::LOGIN_REQUEST => LoginRequest::ref_from_bytes(frame.payload)
            .map(ClientPacket::Login)
            .map_err(|_| DecodeError::WrongLength {
                kind: frame.kind,
                expected: size_of::<LoginRequest>(),
                got: frame.payload.len(),
            }),
        kind::UNSEQUENCED => Ok(ClientPacket::Unsequenced(frame.payload)),
        kind::CLIENT_HEARTBEAT => {
            expect_empty(frame.kind, frame.payload).map(|()| ClientPacket::Heartbeat)
        }
        kind::LOGOUT_REQUEST => {
            expect_empty(frame.kind, frame.payload).map(|()| ClientPacket::Logout)
        }
        kind::DEBUG => Ok(ClientPacket::Debug(frame.payload)),
        other => Err(DecodeError::UnknownPacketType(other)),
    }
}

/// Decodes a server packet.
pub fn decode_server<'a>(frame: &Frame<'a>) -> Result<ServerPacket<'a>, DecodeError> {
    match frame.kind {
        kind::LOGIN_ACCEPTED => LoginAccepted::ref_from_bytes(frame.payload)
            .map(ServerPacket::LoginAccepted)
            .map_err(|_| DecodeError::WrongLength {
                kind: frame.kind,
                expected: size_of::<LoginAccepted>(),
                got: frame.payload.len(),
            }),
        kind::LOGIN_REJECTED => match frame.payload {
            [code @ (REJECT_NOT_AUTHORIZED | REJECT_SESSION_UNAVAILABLE)] => {
                Ok(ServerPacket::LoginRejected(*code))
            }
            [code] => Err(DecodeError::BadField {
                field: "login reject reason",
                value: u64::from(*code),
            }),
            _ => Err(DecodeError::WrongLength {
                kind: frame.kind,
                expected: 1,
                got: frame.payload.len(),
            }),
        },
        kind::SEQUENCED => Ok(ServerPacket::Sequenced(frame.payload)),
        kind::SERVER_HEARTBEAT => {
            expect_empty(frame.kind, frame.payload).map(|()| ServerPacket::Heartbeat)
        }
        kind::END_OF_SESSION => {
            expect_empty(frame.kind, frame.payload).map(|()| ServerPacket::EndOfSession)
        }
        kind::DEBUG => Ok(ServerPacket::Debug(frame.payload)),
        other => Err(DecodeError::UnknownPacketType(other)),
    }
}

/// Appends a packet header for a payload of `payload_len` bytes.
fn write_header(out: &mut Vec<u8>, kind: u8, payload_len: usize) {
    let packet_len = u16::try_from(payload_len + 1).expect("SoupBinTCP packets are below 64 KiB");
    out.extend_from_slice(&packet_len.to_be_bytes());
    out.push(kind);
}

/// Appends a payload-less packet (heartbeats, logout, end of session).
pub fn write_empty(out: &mut Vec<u8>, kind: u8) {
    write_header(out, kind, 0);
}

/// Appends a packet carrying `payload` as is (Sequenced, Unsequenced, Debug).
pub fn write_packet(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    write_header(out, kind, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a Login Request.
pub fn write_login_request(
    out: &mut Vec<u8>,
    username: &str,
    password: &str,
    session: &str,
    sequence: u64,
) {
    let request = LoginRequest {
        username: left_justified(username),
        password: left_justified(password),
        requested_session: right_justified(session),
        requested_sequence: right_justified(&sequence.to_string()),
    };
    write_packet(out, kind::LOGIN_REQUEST, request.as_bytes());
}

/// Appends a Login Accepted.
pub fn write_login_accepted(out: &mut Vec<u8>, session: &[u8; 10], next_sequence: u64) {
    let mut sequence = [b' '; 20];
    write_number_right(&mut sequence, next_sequence);
    let accepted = LoginAccepted {
        session: *session,
        sequence,
    };
    write_packet(out, kind::LOGIN_ACCEPTED, accepted.as_bytes());
}

/// Appends a Login Rejected.
pub fn write_login_rejected(out: &mut Vec<u8>, reason: u8) {
    write_packet(out, kind::LOGIN_REJECTED, &[reason]);
}

/// Text left-justified in `N` bytes, space-padded, cut at `N`.
pub fn left_justified<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let bytes = &text.as_bytes()[..text.len().min(N)];
    out[..bytes.len()].copy_from_slice(bytes);
    out
}

/// Text right-justified in `N` bytes, space-padded, cut at `N`.
pub fn right_justified<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let bytes = &text.as_bytes()[..text.len().min(N)];
    out[N - bytes.len()..].copy_from_slice(bytes);
    out
}

/// Writes `value` right-justified in decimal without allocating.
fn write_number_right(out: &mut [u8], mut value: u64) {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 || i == 0 {
            break;
        }
    }
}

/// Text without surrounding spaces (and trailing NULs, which some clients send).
pub fn trimmed(field: &[u8]) -> &[u8] {
    let end = field
        .iter()
        .rposition(|b| *b != b' ' && *b != 0)
        .map_or(0, |i| i + 1);
    let start = field[..end].iter().position(|b| *b != b' ').unwrap_or(end);
    &field[start..end]
}

/// Parses a numeric ASCII field: spaces around, digits inside; all spaces = 0. A number
/// above `u64::MAX` (the field holds 20 digits) is `u64::MAX`: for a requested sequence
/// number, past the end all the same, which the server answers with its next number.
pub fn parse_number(field: &[u8]) -> Result<u64, DecodeError> {
    let digits = trimmed(field);
    let mut value: u64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return Err(DecodeError::BadNumber);
        }
        value = value.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .filter(|t| t.len() == 2)
            .map(|t| u8::from_str_radix(t, 16).unwrap())
            .collect()
    }

    #[test]
    fn s1_login_request() {
        let bytes = hex("00 2f 4c 41 4c 49 43 45 20 53 45 43 52 45 54 20 \
             20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 \
             20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 31");
        let frame = next_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(frame.len, 49);
        let ClientPacket::Login(login) = decode_client(&frame).unwrap() else {
            panic!("not a login");
        };
        assert_eq!(trimmed(&login.username), b"ALICE");
        assert_eq!(trimmed(&login.password), b"SECRET");
        assert_eq!(trimmed(&login.requested_session), b"");
        assert_eq!(parse_number(&login.requested_sequence), Ok(1));
        let mut out = Vec::new();
        write_login_request(&mut out, "ALICE", "SECRET", "", 1);
        assert_eq!(out, bytes);
    }

    #[test]
    fn s2_login_accepted() {
        let bytes = hex("00 1f 41 20 20 20 20 30 30 30 30 34 32 20 20 20 \
             20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 31");
        let mut out = Vec::new();
        write_login_accepted(&mut out, &right_justified("000042"), 1);
        assert_eq!(out, bytes);
        let frame = next_frame(&bytes, 1024).unwrap().unwrap();
        let ServerPacket::LoginAccepted(a) = decode_server(&frame).unwrap() else {
            panic!("not accepted");
        };
        assert_eq!(parse_number(&a.sequence), Ok(1));
    }

    #[test]
    fn s3_sequenced_data() {
        let bytes = hex("00 0b 53 53 00 00 1f 1a ce d9 f0 00 53");
        let frame = next_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(
            decode_server(&frame),
            Ok(ServerPacket::Sequenced(&bytes[3..]))
        );
        let mut out = Vec::new();
        write_packet(&mut out, kind::SEQUENCED, &bytes[3..]);
        assert_eq!(out, bytes);
    }

    #[test]
    fn s4_three_server_packets_in_one_segment() {
        let bytes = hex("00 02 4a 41 00 01 48 00 01 5a");
        let mut rest = &bytes[..];
        let mut seen = Vec::new();
        while let Some(frame) = next_frame(rest, 1024).unwrap() {
            seen.push(format!("{:?}", decode_server(&frame).unwrap()));
            rest = &rest[frame.len..];
        }
        assert_eq!(seen, ["LoginRejected(65)", "Heartbeat", "EndOfSession"]);
    }

    #[test]
    fn s5_client_heartbeat_and_logout() {
        let bytes = hex("00 01 52 00 01 4f");
        let first = next_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(decode_client(&first), Ok(ClientPacket::Heartbeat));
        let second = next_frame(&bytes[first.len..], 1024).unwrap().unwrap();
        assert_eq!(decode_client(&second), Ok(ClientPacket::Logout));
        let mut out = Vec::new();
        write_empty(&mut out, kind::CLIENT_HEARTBEAT);
        write_empty(&mut out, kind::LOGOUT_REQUEST);
        assert_eq!(out, bytes);
    }

    #[test]
    fn partial_and_bad_frames() {
        assert_eq!(next_frame(&[0x00], 100), Ok(None));
        assert_eq!(next_frame(&[0x00, 0x05, b'U', 1], 100), Ok(None));
        assert_eq!(
            next_frame(&[0x00, 0x00], 100),
            Err(DecodeError::EmptyPacket)
        );
        assert!(matches!(
            next_frame(&[0xff, 0xff], 100),
            Err(DecodeError::PacketTooLong { .. })
        ));
        let frame = next_frame(&[0x00, 0x02, b'R', 0], 100).unwrap().unwrap();
        assert!(
            decode_client(&frame).is_err(),
            "a heartbeat carries nothing"
        );
        let frame = next_frame(&[0x00, 0x01, b'Q'], 100).unwrap().unwrap();
        assert_eq!(
            decode_client(&frame),
            Err(DecodeError::UnknownPacketType(b'Q'))
        );
        let frame = next_frame(&[0x00, 0x03, b'L', 1, 2], 100).unwrap().unwrap();
        assert!(matches!(
            decode_client(&frame),
            Err(DecodeError::WrongLength { .. })
        ));
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(parse_number(b"   "), Ok(0));
        assert_eq!(parse_number(b"  0042  "), Ok(42));
        assert_eq!(parse_number(b" 1 2"), Err(DecodeError::BadNumber));
        assert_eq!(parse_number(b"-1"), Err(DecodeError::BadNumber));
        assert_eq!(parse_number(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_number(b"99999999999999999999"), Ok(u64::MAX));
        assert_eq!(
            parse_number(b"9999999999999999999x"),
            Err(DecodeError::BadNumber)
        );
        let mut field = [b' '; 20];
        write_number_right(&mut field, 1234);
        assert_eq!(&field[16..], b"1234");
    }
}
