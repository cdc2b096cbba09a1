//! Per-user session state kept by the gateway: credentials, the throttle, and the store of
//! every sequenced message the user was sent today (for replay by sequence number).
//!
//! The store grows all day, so it is kept in chunks: when one is full the next is
//! allocated, and nothing already stored is ever copied (a single growing buffer was copied
//! whole on the gateway thread each time it outgrew its reservation: a 26 ms stall for every
//! session at 100,000 messages a second). A message never spans two chunks. Positions in
//! the store are logical byte offsets over the chunks laid end to end.

use crate::config::UserConfig;
use crate::types::{Firm, OwnerId};
use crate::wire::soupbin::{self, kind};

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate_per_sec: u64,
    burst: u64,
    /// Tokens scaled by 1e9, so refills need no floating point.
    tokens_nano: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate_per_sec: u64::from(rate_per_sec),
            burst: u64::from(burst),
            tokens_nano: u64::from(burst) * 1_000_000_000,
            last_ns: 0,
        }
    }

    /// Takes one token at monotonic time `now_ns`; false if none is left.
    pub fn try_take(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns.max(self.last_ns);
        let refill = elapsed.saturating_mul(self.rate_per_sec);
        self.tokens_nano = self
            .tokens_nano
            .saturating_add(refill)
            .min(self.burst * 1_000_000_000);
        if self.tokens_nano >= 1_000_000_000 {
            self.tokens_nano -= 1_000_000_000;
            true
        } else {
            false
        }
    }
}

/// One configured user's session: survives its connections.
#[derive(Debug)]
pub struct UserSession {
    /// Username as configured.
    pub username: String,
    /// Password, space-padded to the SoupBinTCP field width.
    password: [u8; 10],
    /// The user's firm.
    pub firm: Firm,
    /// The user's owner id in the matcher.
    pub owner: OwnerId,
    /// The connection logged in as this user, if any (one at a time).
    pub conn: Option<usize>,
    /// Every sequenced message sent today, framed as SoupBinTCP Sequenced Data packets, in
    /// chunks of `chunk_bytes` capacity.
    chunks: Vec<Vec<u8>>,
    /// Logical offset of each chunk's first byte.
    chunk_starts: Vec<u64>,
    chunk_bytes: usize,
    /// Logical start of message `n` at index `n - 1`, in blocks of `OFFSETS_PER_BLOCK`.
    offsets: Vec<Vec<u64>>,
    /// Messages stored.
    count: u64,
    /// Logical bytes stored.
    stored: u64,
    /// Logical bytes already written to the current connection.
    sent: u64,
    /// The chunk that holds byte `sent` (or ends there).
    sent_chunk: usize,
    /// Logical bytes stored when the current connection logged in: what it asked to be
    /// replayed ends here, and what follows is the live stream.
    replay_end: u64,
    /// New-order throttle.
    pub bucket: TokenBucket,
}

/// Longest framed message the store takes: the packet length field and type byte, and the
/// longest OUCH message ironmatch sends (well under this).
const MESSAGE_BYTES_MAX: usize = 3 + 512;
/// Message offsets per block of the offset index.
const OFFSETS_PER_BLOCK: usize = 1 << 16;

impl UserSession {
    /// A session whose store grows in chunks of `store_bytes` (at least a few messages).
    pub fn new(config: &UserConfig, owner: OwnerId, firm: Firm, store_bytes: usize) -> UserSession {
        let chunk_bytes = store_bytes.max(8 * MESSAGE_BYTES_MAX);
        UserSession {
            username: config.username.clone(),
            password: soupbin::left_justified(&config.password),
            firm,
            owner,
            conn: None,
            chunks: vec![Vec::with_capacity(chunk_bytes)],
            chunk_starts: vec![0],
            chunk_bytes,
            offsets: vec![Vec::with_capacity(OFFSETS_PER_BLOCK)],
            count: 0,
            stored: 0,
            sent: 0,
            sent_chunk: 0,
            replay_end: 0,
            bucket: TokenBucket::new(config.orders_per_sec, config.burst),
        }
    }

    /// Compares a password field in time independent of where it differs.
    pub fn password_matches(&self, field: &[u8; 10]) -> bool {
        let mut given = [b' '; 10];
        let text = soupbin::trimmed(field);
        given[..text.len()].copy_from_slice(text);
        let diff = self
            .password
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }

    /// Sequence number of the next message.
    pub fn next_seq(&self) -> u64 {
        self.count + 1
    }

    /// Appends one OUCH message as the next sequenced message. `write` writes the message.
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let chunk = self.chunks.last().expect("a store has a chunk");
            chunk.capacity() - chunk.len() < MESSAGE_BYTES_MAX
        };
        if full {
            // A new chunk: what is stored stays where it is.
            self.chunk_starts.push(self.stored);
            self.chunks.push(Vec::with_capacity(self.chunk_bytes));
        }
        if self
            .offsets
            .last()
            .is_some_and(|b| b.len() == OFFSETS_PER_BLOCK)
        {
            self.offsets.push(Vec::with_capacity(OFFSETS_PER_BLOCK));
        }
        self.offsets
            .last_mut()
            .expect("a store has an offset block")
            .push(self.stored);
        let chunk = self.chunks.last_mut().expect("a store has a chunk");
        let start = chunk.len();
        chunk.extend_from_slice(&[0, 0, kind::SEQUENCED]);
        write(chunk);
        let len = chunk.len() - start;
        assert!(len <= MESSAGE_BYTES_MAX, "an OUCH message of {len} bytes");
        let packet_len = u16::try_from(len - 2).expect("OUCH messages are short");
        chunk[start..start + 2].copy_from_slice(&packet_len.to_be_bytes());
        self.count += 1;
        self.stored += len as u64;
    }

    /// Positions the stream for a login asking for `requested` (0 = only new messages).
    /// Returns the sequence number of the first message the client will get.
    pub fn start_at(&mut self, requested: u64) -> u64 {
        let next = self.next_seq();
        let first = if requested == 0 || requested > next {
            next
        } else {
            requested
        };
        self.sent = if first == next {
            self.stored
        } else {
            let i = (first - 1) as usize;
            self.offsets[i / OFFSETS_PER_BLOCK][i % OFFSETS_PER_BLOCK]
        };
        // The last chunk starting at or before `sent`.
        self.sent_chunk = self.chunk_starts.partition_point(|&s| s <= self.sent) - 1;
        self.replay_end = self.stored;
        first
    }

    /// The next bytes not yet written to the connection: the rest of the chunk the stream
    /// is in (the next chunk's bytes come once these are written). Empty when all is sent.
    pub fn unsent(&self) -> &[u8] {
        let mut c = self.sent_chunk;
        let at_end = self.sent == self.chunk_starts[c] + self.chunks[c].len() as u64;
        if at_end && c + 1 < self.chunks.len() {
            c += 1;
        }
        &self.chunks[c][(self.sent - self.chunk_starts[c]) as usize..]
    }

    /// Records that the first `n` bytes of [`unsent`](Self::unsent) were written.
    pub fn mark_sent(&mut self, n: usize) {
        debug_assert!(n <= self.unsent().len());
        let c = self.sent_chunk;
        if self.sent == self.chunk_starts[c] + self.chunks[c].len() as u64
            && c + 1 < self.chunks.len()
        {
            self.sent_chunk += 1;
        }
        self.sent += n as u64;
    }

    /// Bytes stored and not yet written to the connection, all chunks together.
    pub fn unsent_len(&self) -> u64 {
        self.stored - self.sent
    }

    /// Bytes of the live stream (stored since the connection logged in) not yet written:
    /// how far the reader is behind, leaving out the replay it asked for at login, which
    /// may be the whole day's messages (a login asking for message 1).
    pub fn live_unsent_len(&self) -> u64 {
        self.stored - self.sent.max(self.replay_end)
    }

    /// Bytes left of the packet the stream is in the middle of: 0 at a packet boundary.
    /// No other bytes may go to the connection before these (a Server Heartbeat or Debug
    /// packet would land inside the packet and break the client's framing).
    pub fn packet_rest(&self) -> usize {
        if self.sent == self.stored {
            return 0;
        }
        // The first message starting at or after `sent` (blocks and offsets ascend).
        let block = self
            .offsets
            .partition_point(|b| b.last().is_some_and(|&start| start < self.sent));
        let next = self.offsets.get(block).map_or(self.stored, |b| {
            b.get(b.partition_point(|&start| start < self.sent))
                .copied()
                .unwrap_or(self.stored)
        });
        // A packet never spans two chunks, so this rest is in `unsent()`.
        (next - self.sent) as usize
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn user() -> UserSession {
        user_with_chunks(1024)
    }

    /// A user MM1 of firm MMA whose store grows in chunks of `store_bytes`.
    pub(in crate::gateway) fn user_with_chunks(store_bytes: usize) -> UserSession {
        let cfg = UserConfig {
            username: "MM1".into(),
            password: "pw".into(),
            firm: "MMA".into(),
            cancel_on_disconnect: true,
            self_trade_prevention: None,
            orders_per_sec: 10,
            burst: 2,
        };
        UserSession::new(
            &cfg,
            OwnerId(0),
            Firm::from_str_padded("MMA").unwrap(),
            store_bytes,
        )
    }

    #[test]
    fn replay_starts_where_asked() {
        let mut u = user();
        for m in [b"A1", b"B2", b"C3"] {
            u.append(|out| out.extend_from_slice(m));
        }
        assert_eq!(u.next_seq(), 4);
        assert_eq!(u.start_at(2), 2);
        assert_eq!(
            u.unsent(),
            &[0, 3, b'S', b'B', b'2', 0, 3, b'S', b'C', b'3']
        );
        assert_eq!(u.start_at(0), 4);
        assert!(u.unsent().is_empty());
        assert_eq!(
            u.start_at(99),
            4,
            "beyond the end: resynchronise at the real next number"
        );
    }

    #[test]
    fn a_replay_asked_for_at_login_is_not_a_backlog() {
        let mut u = user_with_chunks(0);
        for _ in 0..100 {
            u.append(|out| out.extend_from_slice(&[b'A'; 40]));
        }
        assert_eq!(u.start_at(1), 1);
        assert_eq!(u.unsent_len(), 100 * 43);
        assert_eq!(
            u.live_unsent_len(),
            0,
            "the replay is not the reader's backlog"
        );
        u.append(|out| out.extend_from_slice(&[b'L'; 40]));
        assert_eq!(
            u.live_unsent_len(),
            43,
            "live messages behind the replay are"
        );
        let n = u.unsent().len();
        u.mark_sent(n);
        assert_eq!(u.live_unsent_len(), 43);
        while !u.unsent().is_empty() {
            let n = u.unsent().len().min(50);
            u.mark_sent(n);
        }
        assert_eq!((u.unsent_len(), u.live_unsent_len()), (0, 0));
        u.append(|out| out.extend_from_slice(&[b'M'; 40]));
        assert_eq!(u.live_unsent_len(), 43);
    }

    /// Many messages over many small chunks, read back from every starting number with
    /// writes of uneven sizes: the bytes are the messages in order, nothing lost or doubled.
    #[test]
    fn chunks_read_back_from_any_number() {
        // The smallest chunks the store takes.
        let mut u = user_with_chunks(0);
        let mut framed: Vec<Vec<u8>> = Vec::new();
        for i in 0..3_000u32 {
            let body: Vec<u8> = (0..(i % 300) as u8).map(|b| b'A' + b % 26).collect();
            u.append(|out| out.extend_from_slice(&body));
            let mut f = ((body.len() + 1) as u16).to_be_bytes().to_vec();
            f.push(b'S');
            f.extend_from_slice(&body);
            framed.push(f);
        }
        assert!(u.chunks.len() > 10, "the test spans chunks");
        assert_eq!(u.next_seq(), 3_001);
        for first in [1u64, 2, 137, 1_499, 2_999, 3_000, 3_001] {
            assert_eq!(u.start_at(first), first);
            let expected: Vec<u8> = framed[(first - 1) as usize..].concat();
            assert_eq!(u.unsent_len(), expected.len() as u64);
            // Where each packet of the replay starts, from its start.
            let starts: Vec<usize> = framed[(first - 1) as usize..]
                .iter()
                .scan(0, |at, f| {
                    let start = *at;
                    *at += f.len();
                    Some(start)
                })
                .collect();
            let mut got = Vec::new();
            let mut step = 1usize;
            while !u.unsent().is_empty() {
                let next = starts
                    .iter()
                    .find(|&&start| start >= got.len())
                    .map_or(expected.len(), |&start| start);
                assert_eq!(u.packet_rest(), next - got.len(), "at byte {}", got.len());
                let n = u.unsent().len().min(step);
                got.extend_from_slice(&u.unsent()[..n]);
                u.mark_sent(n);
                step = step * 7 % 1_000 + 1;
            }
            assert_eq!(got, expected, "from message {first}");
            assert_eq!(u.unsent_len(), 0);
        }
        // New messages after everything was sent, across a chunk boundary, come out too.
        for i in 0..200u32 {
            u.append(|out| out.extend_from_slice(&[b'Z'; 250][..(i % 250) as usize]));
        }
        let mut got = 0u64;
        while !u.unsent().is_empty() {
            let n = u.unsent().len();
            got += n as u64;
            u.mark_sent(n);
        }
        assert_eq!(got, (0..200u64).map(|i| 3 + i % 250).sum::<u64>());
    }

    #[test]
    fn passwords_compare_exactly() {
        let u = user();
        assert!(u.password_matches(b"pw        "));
        assert!(!u.password_matches(b"pX        "));
        assert!(!u.password_matches(b"pw1       "));
    }

    #[test]
    fn throttle_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10, 2);
        assert!(b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(0));
        assert!(b.try_take(100_000_000), "one token per 100 ms at 10/s");
        assert!(!b.try_take(100_000_000));
    }
}
