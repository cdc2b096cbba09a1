//! Admission of connections that have not logged in yet (gateway thread): counters, and a
//! log that stays readable under a flood.
//!
//! The policy itself lives in the gateway's accept path (`Gateway::admit`); this module
//! holds what it counts and how it reports. Counters are written only by the gateway
//! thread (relaxed atomics, so the server and tests can read them while it runs). Log lines
//! about pending connections are capped at [`LOG_LINES_PER_WINDOW_MAX`] per
//! [`LOG_WINDOW`]; what was left out is announced in one summary line per window.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The address a connection or a request counts against: an IPv4 address (mapped into
/// IPv6 or not) itself, an IPv6 address's /64, the prefix of one host or link, out of
/// which one party can take as many addresses as it likes (grouped by the whole address, a
/// flood from one host's /64 passed for thousands of clients).
pub fn address_group(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => ip,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX)).into(),
        },
    }
}
/// Pre-login log lines written at most per window; the rest are counted.
pub const LOG_LINES_PER_WINDOW_MAX: u32 = 10;
/// The log window.
pub const LOG_WINDOW: Duration = Duration::from_secs(1);

/// Admission counters since start.
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    /// Connections accepted from the kernel.
    pub accepted: AtomicU64,
    /// Pending connections closed because `pending_max` were pending (oldest first).
    pub evicted: AtomicU64,
    /// Pending connections closed because their address had `pending_per_address_max`.
    pub evicted_same_address: AtomicU64,
    /// New connections closed at once because no pending connection could be evicted.
    pub refused: AtomicU64,
    /// Pending connections closed by `login_timeout_ms`.
    pub login_timeouts: AtomicU64,
    /// Logins accepted.
    pub logins: AtomicU64,
    /// Logins rejected (bad credentials, session in use, `connections_max`).
    pub logins_rejected: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// See [`AdmissionCounters::accepted`].
    pub accepted: u64,
    /// See [`AdmissionCounters::evicted`].
    pub evicted: u64,
    /// See [`AdmissionCounters::evicted_same_address`].
    pub evicted_same_address: u64,
    /// See [`AdmissionCounters::refused`].
    pub refused: u64,
    /// See [`AdmissionCounters::login_timeouts`].
    pub login_timeouts: u64,
    /// See [`AdmissionCounters::logins`].
    pub logins: u64,
    /// See [`AdmissionCounters::logins_rejected`].
    pub logins_rejected: u64,
}

impl AdmissionCounters {
    /// Adds one (gateway thread only).
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn stats(&self) -> AdmissionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AdmissionStats {
            accepted: get(&self.accepted),
            evicted: get(&self.evicted),
            evicted_same_address: get(&self.evicted_same_address),
            refused: get(&self.refused),
            login_timeouts: get(&self.login_timeouts),
            logins: get(&self.logins),
            logins_rejected: get(&self.logins_rejected),
        }
    }
}

/// Rate limit for pre-login log lines, and the per-window summary.
#[derive(Debug)]
pub struct LogLimiter {
    window_start: Instant,
    lines: u32,
    suppressed: u64,
    last_summary: Instant,
    /// Counters at the last summary.
    reported: AdmissionStats,
}

impl LogLimiter {
    /// A limiter whose first window starts at `now`.
    pub fn new(now: Instant) -> LogLimiter {
        LogLimiter {
            window_start: now,
            lines: 0,
            suppressed: 0,
            last_summary: now,
            reported: AdmissionStats::default(),
        }
    }

    /// Writes a line to stderr unless this window's budget is spent.
    pub fn line(&mut self, now: Instant, text: fmt::Arguments<'_>) {
        self.roll(now);
        if self.lines < LOG_LINES_PER_WINDOW_MAX {
            self.lines += 1;
            eprintln!("ironmatch gateway: {text}");
        } else {
            self.suppressed += 1;
        }
    }

    /// [`Self::line`] for one member's lines (logins, disconnects, protocol errors), which
    /// a connector reconnecting in a loop could write by the thousand a second (stderr to a
    /// slow pipe then blocks every session): beyond the window's budget they are left
    /// out, and how many is said once the window ends.
    pub fn member_line(&mut self, now: Instant, text: fmt::Arguments<'_>) {
        if now.duration_since(self.window_start) >= LOG_WINDOW && self.suppressed > 0 {
            eprintln!(
                "ironmatch gateway: {} more such lines left out in the last {} ms",
                self.suppressed,
                now.duration_since(self.window_start).as_millis()
            );
            self.suppressed = 0;
        }
        self.line(now, text);
    }

    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window_start) >= LOG_WINDOW {
            self.window_start = now;
            self.lines = 0;
        }
    }

    /// Once per window, if admission counters moved beyond plain logins, one line with
    /// what changed since the last summary and what was left out of the log.
    pub fn summary(&mut self, now: Instant, counters: &AdmissionCounters, pending: usize) {
        if now.duration_since(self.last_summary) < LOG_WINDOW {
            return;
        }
        self.final_summary(now, counters, pending);
    }

    /// The summary now, whatever the time (at shutdown, so nothing goes unreported).
    pub fn final_summary(&mut self, now: Instant, counters: &AdmissionCounters, pending: usize) {
        self.last_summary = now;
        let s = counters.stats();
        let r = self.reported;
        let eventful = s.evicted != r.evicted
            || s.evicted_same_address != r.evicted_same_address
            || s.refused != r.refused
            || s.login_timeouts != r.login_timeouts
            || self.suppressed > 0;
        if eventful {
            eprintln!(
                "ironmatch gateway: admission: {} accepted, {} evicted, {} evicted (same \
                 address), {} refused, {} login timeouts, {} logins, {} logins rejected, {} \
                 log lines left out; {pending} pending now",
                s.accepted - r.accepted,
                s.evicted - r.evicted,
                s.evicted_same_address - r.evicted_same_address,
                s.refused - r.refused,
                s.login_timeouts - r.login_timeouts,
                s.logins - r.logins,
                s.logins_rejected - r.logins_rejected,
                self.suppressed,
            );
        }
        self.reported = s;
        self.suppressed = 0;
        self.roll(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_budget_are_counted_not_written() {
        let t0 = Instant::now();
        let mut log = LogLimiter::new(t0);
        for _ in 0..LOG_LINES_PER_WINDOW_MAX + 5 {
            log.line(t0, format_args!("x"));
        }
        assert_eq!(log.suppressed, 5);
        log.summary(t0 + LOG_WINDOW, &AdmissionCounters::default(), 0);
        assert_eq!((log.suppressed, log.lines), (0, 0), "a new window");
    }

    /// A member's lines are bounded the same way, and what was left out is said (and
    /// forgotten) at the first line of the next window.
    #[test]
    fn a_members_lines_beyond_the_budget_are_left_out() {
        let t0 = Instant::now();
        let mut log = LogLimiter::new(t0);
        for _ in 0..1_000 {
            log.member_line(t0, format_args!("MM1 logged in"));
        }
        assert_eq!(
            (log.lines, log.suppressed),
            (
                LOG_LINES_PER_WINDOW_MAX,
                1_000 - u64::from(LOG_LINES_PER_WINDOW_MAX)
            )
        );
        log.member_line(t0 + LOG_WINDOW, format_args!("MM1 disconnected"));
        assert_eq!((log.lines, log.suppressed), (1, 0));
    }
}
