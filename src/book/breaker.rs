//! The circuit breaker's trade window: per instrument, trade prices summed in one-second
//! buckets, so the breaker reference price (the mean trade price of the last N whole
//! seconds) costs one add per trade and one pass over N + 1 buckets per second.
//!
//! Runs on the matcher thread, inside [`Matcher`](super::Matcher). The buckets are
//! allocated once at start-up; nothing here allocates after that.
//!
//! What must hold: the reference price for second `S` is a pure function of the trades
//! recorded (with their seconds) and `S`, so a window restored from its
//! [`WindowState`] gives exactly the same prices:
//! - the mean (rounded down) of the prices of every trade in seconds `S - N ..= S - 1`;
//! - if there was none, the last trade price before second `S`;
//! - if there was none, the instrument's `ref_price`.

use crate::types::{Price, Timestamp};

/// Nanoseconds per second.
const NS_PER_SEC: u64 = 1_000_000_000;

/// Trades of one second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    /// The second (of the day) these trades printed in.
    pub second: u64,
    /// Sum of their prices. Prices are below 2^32 when the breaker is on (checked at
    /// start-up) and a bucket holds fewer than 2^32 trades, so this cannot overflow.
    pub sum: u64,
    /// How many trades.
    pub count: u32,
}

/// One instrument's circuit-breaker trade window (its trade prices summed per second) as a
/// snapshot holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowState {
    /// Second of the last trade recorded (0 before any).
    pub last_second: u64,
    /// The last trade price of a second before `last_second` (`ref_price` if none).
    pub before_last: Price,
    /// The ring of `N + 1` buckets, bucket `i` for the seconds `s` with `s % (N + 1) == i`;
    /// empty when the breaker is off.
    pub buckets: Vec<Bucket>,
}

/// The last N seconds of one instrument's trades, for its circuit breaker.
#[derive(Debug)]
pub(crate) struct TradeWindow {
    /// N.
    window_secs: u64,
    /// N + 1 buckets (0 when the breaker is off): the window's N seconds and the current
    /// one never share a bucket.
    buckets: Vec<Bucket>,
    last_second: u64,
    /// `last_second % buckets.len()`.
    slot: usize,
    before_last: Price,
}

impl TradeWindow {
    /// An empty window of `window_secs` seconds (0: the breaker is off, no buckets).
    pub(crate) fn new(window_secs: u32, ref_price: Price) -> TradeWindow {
        let len = if window_secs == 0 {
            0
        } else {
            window_secs as usize + 1
        };
        TradeWindow {
            window_secs: u64::from(window_secs),
            buckets: vec![Bucket::default(); len],
            last_second: 0,
            slot: 0,
            before_last: ref_price,
        }
    }

    /// The second a trade at `ts` counts in: the second of `ts`, never before the last
    /// trade's (should command times ever step back, the window does not).
    #[inline]
    pub(crate) fn clock(&self, ts: Timestamp) -> u64 {
        (ts.0 / NS_PER_SEC).max(self.last_second)
    }

    /// Records a trade at `price` in `second` (from [`clock`](Self::clock)); `last_price`
    /// is the instrument's last trade price before this one (`ref_price` if none).
    #[inline]
    pub(crate) fn record(&mut self, second: u64, price: Price, last_price: Price) {
        debug_assert!(second >= self.last_second && !self.buckets.is_empty());
        if second != self.last_second {
            self.before_last = last_price;
            self.last_second = second;
            self.slot = (second % self.buckets.len() as u64) as usize;
            self.buckets[self.slot] = Bucket {
                second,
                sum: 0,
                count: 0,
            };
        }
        let bucket = &mut self.buckets[self.slot];
        bucket.sum += price.0;
        bucket.count += 1;
    }

    /// The breaker reference price for `second` (see the module docs); `last_price` is the
    /// instrument's last trade price (`ref_price` if none). O(N).
    pub(crate) fn reference(&self, second: u64, last_price: Price) -> Price {
        let from = second.saturating_sub(self.window_secs);
        let (mut sum, mut count) = (0u128, 0u64);
        for b in &self.buckets {
            if b.count > 0 && b.second >= from && b.second < second {
                sum += u128::from(b.sum);
                count += u64::from(b.count);
            }
        }
        if count > 0 {
            Price((sum / u128::from(count)) as u64)
        } else if self.last_second < second {
            last_price
        } else {
            self.before_last
        }
    }

    /// The window as a snapshot holds it.
    pub(crate) fn state(&self) -> WindowState {
        WindowState {
            last_second: self.last_second,
            before_last: self.before_last,
            buckets: self.buckets.clone(),
        }
    }

    /// Restores a window from `state`; `Err` if it does not fit this window's size.
    pub(crate) fn restore(&mut self, state: &WindowState) -> Result<(), String> {
        let len = self.buckets.len();
        let fits = state.buckets.len() == len
            && state.buckets.iter().enumerate().all(|(i, b)| {
                b.count == 0 || (b.second % len as u64 == i as u64 && b.second <= state.last_second)
            });
        if !fits {
            return Err(format!(
                "a trade window of {} buckets, the configuration has {len}",
                state.buckets.len()
            ));
        }
        self.buckets.copy_from_slice(&state.buckets);
        self.last_second = state.last_second;
        self.slot = if len == 0 {
            0
        } else {
            (state.last_second % len as u64) as usize
        };
        self.before_last = state.before_last;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u64) -> Timestamp {
        Timestamp(second * NS_PER_SEC + 17)
    }

    #[test]
    fn the_reference_is_the_mean_of_the_whole_seconds_before_this_one() {
        let mut w = TradeWindow::new(2, Price(1_000));
        assert_eq!(
            w.reference(5, Price(1_000)),
            Price(1_000),
            "no trade: ref_price"
        );
        w.record(w.clock(at(5)), Price(1_000), Price(1_000));
        w.record(w.clock(at(5)), Price(1_101), Price(1_000));
        // Second 5 itself does not count in second 5: its last trade before it does.
        assert_eq!(w.reference(5, Price(1_101)), Price(1_000));
        assert_eq!(w.reference(6, Price(1_101)), Price(1_050), "rounded down");
        w.record(w.clock(at(6)), Price(1_200), Price(1_101));
        assert_eq!(w.reference(7, Price(1_200)), Price(1_100));
        // Second 8: seconds 6 and 7 only.
        assert_eq!(w.reference(8, Price(1_200)), Price(1_200));
        // Nothing in the window: the last trade before the second.
        assert_eq!(w.reference(30, Price(1_200)), Price(1_200));
        w.record(w.clock(at(30)), Price(900), Price(1_200));
        assert_eq!(w.reference(30, Price(900)), Price(1_200));
        assert_eq!(w.reference(31, Price(900)), Price(900));
    }

    #[test]
    fn time_never_steps_back_and_a_bucket_is_reused_after_n_plus_one_seconds() {
        let mut w = TradeWindow::new(2, Price(1_000));
        w.record(w.clock(at(9)), Price(1_000), Price(1_000));
        assert_eq!(
            w.clock(at(3)),
            9,
            "an earlier command counts in the last trade's second"
        );
        w.record(w.clock(at(3)), Price(2_000), Price(1_000));
        assert_eq!(w.reference(10, Price(2_000)), Price(1_500));
        // Second 12 uses second 9's bucket (3 buckets): 9's trades leave the window.
        w.record(w.clock(at(12)), Price(3_000), Price(2_000));
        assert_eq!(w.reference(13, Price(3_000)), Price(3_000));
        let state = w.state();
        let mut restored = TradeWindow::new(2, Price(1_000));
        restored.restore(&state).unwrap();
        assert_eq!(restored.state(), state);
        assert!(TradeWindow::new(3, Price(1_000)).restore(&state).is_err());
    }
}
