//! Per-user session state kept by the gateway: credentials, the throttle, and the store of
//! every sequenced message the user was sent today (for replay by sequence number, see
//! [`super::store`]).

use super::store::SessionStore;
use crate::config::UserConfig;
use crate::types::{Firm, OwnerId};
use crate::wire::soupbin;

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
    /// Every sequenced message sent today, and how far the connection has been sent them.
    pub store: SessionStore,
    /// New-order throttle.
    pub bucket: TokenBucket,
    /// This member's lines in the log (logins, disconnects, protocol errors), bounded.
    pub log: super::admission::LogLimiter,
}

impl UserSession {
    /// A session keeping its sequenced messages in `store`.
    pub fn new(
        config: &UserConfig,
        owner: OwnerId,
        firm: Firm,
        store: SessionStore,
    ) -> UserSession {
        UserSession {
            username: config.username.clone(),
            password: soupbin::left_justified(&config.password),
            firm,
            owner,
            conn: None,
            store,
            bucket: TokenBucket::new(config.orders_per_sec, config.burst),
            log: super::admission::LogLimiter::new(std::time::Instant::now()),
        }
    }

    /// Compares a password field in time independent of where it differs, ignoring ASCII
    /// case as SoupBinTCP compares its username and password (a connector that sends them
    /// upper-cased logs in).
    pub fn password_matches(&self, field: &[u8; 10]) -> bool {
        let mut given = [b' '; 10];
        let text = soupbin::trimmed(field);
        given[..text.len()].copy_from_slice(text);
        let diff = self
            .password
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| {
                acc | (a.to_ascii_lowercase() ^ b.to_ascii_lowercase())
            });
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user MM1 of firm MMA.
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
            SessionStore::new(1024, None),
        )
    }

    #[test]
    fn passwords_compare_whole_and_in_any_case() {
        let u = user();
        assert!(u.password_matches(b"pw        "));
        assert!(u.password_matches(b"PW        "), "SoupBinTCP: any case");
        assert!(u.password_matches(b"Pw\0\0\0\0\0\0\0\0"), "NUL padded");
        assert!(!u.password_matches(b"pX        "));
        assert!(!u.password_matches(b"pw1       "));
        assert!(!u.password_matches(b"p         "));
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
