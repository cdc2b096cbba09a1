//! Exact division by a divisor fixed at start-up, without a divide instruction.
//!
//! Every order is checked against its instrument's lot and tick, and a resting price is
//! turned into a tick number: two or three hardware divisions per order, tens of cycles
//! each, and measured as the largest single cost of `validate` (`book/add`). A number `n`
//! is a multiple of `d = d0 * 2^k` (`d0` odd) exactly when `rotr(n * inv(d0), k)` is at
//! most `(2^64 - 1) / d` (Hacker's Delight, 10-17), and then `n / d` is
//! `(n >> k) * inv(d0)`, all modulo 2^64: a multiply and a rotate.

/// A divisor prepared for divisibility tests and exact division.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divisor {
    /// Multiplicative inverse of the divisor's odd part, modulo 2^64.
    inverse: u64,
    /// Trailing zero bits of the divisor.
    shift: u32,
    /// `u64::MAX / divisor`.
    limit: u64,
}

impl Divisor {
    /// Prepares division by `d` (> 0).
    pub fn new(d: u64) -> Divisor {
        assert!(d > 0, "a divisor is above zero");
        let shift = d.trailing_zeros();
        let odd = d >> shift;
        // Newton's iteration doubles the correct low bits each step: 3 bits are right for
        // any odd number (odd * odd = 1 mod 8), so 5 steps give 96 >= 64.
        let mut inverse = odd;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        debug_assert_eq!(odd.wrapping_mul(inverse), 1);
        Divisor {
            inverse,
            shift,
            limit: u64::MAX / d,
        }
    }

    /// Whether `n` is a multiple of the divisor.
    #[inline]
    pub fn divides(self, n: u64) -> bool {
        n.wrapping_mul(self.inverse).rotate_right(self.shift) <= self.limit
    }

    /// `n / d` for an `n` that is a multiple of the divisor (checked in debug builds).
    #[inline]
    pub fn exact_quotient(self, n: u64) -> u64 {
        debug_assert!(self.divides(n));
        (n >> self.shift).wrapping_mul(self.inverse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_remainder_operator() {
        let divisors = [
            1u64,
            2,
            3,
            5,
            7,
            10,
            64,
            100,
            96,
            1_000,
            10_000,
            12_345,
            u64::MAX,
        ];
        let mut state = 3u64;
        for &d in &divisors {
            let div = Divisor::new(d);
            let check = |n: u64| {
                assert_eq!(div.divides(n), n.is_multiple_of(d), "{n} / {d}");
                if n.is_multiple_of(d) {
                    assert_eq!(div.exact_quotient(n), n / d);
                }
            };
            for n in 0..2_000 {
                check(n);
                check(n * d.min(1 << 40));
                check(u64::MAX - n);
            }
            for _ in 0..10_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                check(state);
                check((state >> 24).wrapping_mul(d));
            }
        }
    }
}
