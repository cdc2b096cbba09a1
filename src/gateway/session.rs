//! Per-user session state kept by the gateway: credentials, the throttle, and the store of
//! every sequenced message the user was sent today (for replay by sequence number).

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
    /// Every sequenced message sent today, framed as SoupBinTCP Sequenced Data packets.
    store: Vec<u8>,
    /// Start of message `n` in `store` at index `n - 1`.
    offsets: Vec<usize>,
    /// Bytes of `store` already written to the current connection.
    pub sent: usize,
    /// New-order throttle.
    pub bucket: TokenBucket,
}

impl UserSession {
    /// A session with `store_bytes` reserved for its messages.
    pub fn new(config: &UserConfig, owner: OwnerId, firm: Firm, store_bytes: usize) -> UserSession {
        UserSession {
            username: config.username.clone(),
            password: soupbin::left_justified(&config.password),
            firm,
            owner,
            conn: None,
            store: Vec::with_capacity(store_bytes),
            offsets: Vec::with_capacity(store_bytes / 32),
            sent: 0,
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
        self.offsets.len() as u64 + 1
    }

    /// Appends one OUCH message as the next sequenced message. `write` writes the message.
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.store.len();
        self.offsets.push(start);
        self.store.extend_from_slice(&[0, 0, kind::SEQUENCED]);
        write(&mut self.store);
        let packet_len =
            u16::try_from(self.store.len() - start - 2).expect("OUCH messages are short");
        self.store[start..start + 2].copy_from_slice(&packet_len.to_be_bytes());
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
            self.store.len()
        } else {
            self.offsets[(first - 1) as usize]
        };
        first
    }

    /// Bytes not yet written to the connection.
    pub fn unsent(&self) -> &[u8] {
        &self.store[self.sent..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserSession {
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
            1024,
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
