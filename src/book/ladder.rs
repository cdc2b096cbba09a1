//! One side of one book: the price levels in use, sorted with the best price last.
//!
//! Market-maker flow works near the top of the book, so keeping the best level at the end
//! makes the common inserts and removals touch only the last few entries; the search
//! walks down from the top a few steps, then falls back to binary search.

use crate::types::{BookSide, Price};

/// A price and the pool index of its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rung {
    /// The level's price.
    pub price: Price,
    /// Index of the level in the level pool.
    pub level: u32,
}

/// Levels of one side, worst first, best last. Capacity fixed at construction.
#[derive(Debug)]
pub struct Ladder {
    side: BookSide,
    rungs: Vec<Rung>,
}

/// How many rungs to walk from the top before switching to binary search.
const LINEAR_STEPS_MAX: usize = 8;

impl Ladder {
    /// An empty ladder that can hold `capacity` levels without allocating.
    pub fn with_capacity(side: BookSide, capacity: usize) -> Ladder {
        Ladder {
            side,
            rungs: Vec::with_capacity(capacity),
        }
    }

    /// The best level, if any.
    #[inline]
    pub fn best(&self) -> Option<Rung> {
        self.rungs.last().copied()
    }

    /// `Ok(position)` of the level at `price`, or `Err(position)` where it would go.
    #[inline]
    pub fn find(&self, price: Price) -> Result<usize, usize> {
        let mut top = self.rungs.len();
        for _ in 0..LINEAR_STEPS_MAX {
            if top == 0 {
                return Err(0);
            }
            let rung = self.rungs[top - 1];
            if rung.price == price {
                return Ok(top - 1);
            }
            if !self.side.better(rung.price, price) {
                return Err(top);
            }
            top -= 1;
        }
        let below = &self.rungs[..top];
        let pos = below.partition_point(|r| self.side.better(price, r.price));
        if pos < below.len() && below[pos].price == price {
            Ok(pos)
        } else {
            Err(pos)
        }
    }

    /// Inserts a level at the position `find` returned. Returns false (and changes nothing)
    /// if the ladder is at capacity, so it never allocates.
    #[inline]
    pub fn try_insert(&mut self, pos: usize, rung: Rung) -> bool {
        if self.rungs.len() == self.rungs.capacity() {
            return false;
        }
        self.rungs.insert(pos, rung);
        true
    }

    /// The level at `pos` (a position `find` returned as `Ok`).
    #[inline]
    pub fn at(&self, pos: usize) -> Rung {
        self.rungs[pos]
    }

    /// Removes the level at `pos`.
    #[inline]
    pub fn remove(&mut self, pos: usize) {
        self.rungs.remove(pos);
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.rungs.capacity() * std::mem::size_of::<Rung>()
    }

    /// Levels from best to worst.
    pub fn iter_best_first(&self) -> impl Iterator<Item = Rung> + '_ {
        self.rungs.iter().rev().copied()
    }

    /// Number of levels.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rungs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(side: BookSide, prices: &[u64]) -> Ladder {
        let mut ladder = Ladder::with_capacity(side, 64);
        for (i, p) in prices.iter().enumerate() {
            let pos = ladder.find(Price(*p)).unwrap_err();
            assert!(ladder.try_insert(
                pos,
                Rung {
                    price: Price(*p),
                    level: i as u32
                }
            ));
        }
        ladder
    }

    #[test]
    fn bids_best_is_highest_and_asks_lowest() {
        let prices: Vec<u64> = (0..40).map(|i| (i * 37) % 41 + 100).collect();
        let bids = build(BookSide::Bid, &prices);
        let asks = build(BookSide::Ask, &prices);
        let bid_order: Vec<u64> = bids.iter_best_first().map(|r| r.price.0).collect();
        let ask_order: Vec<u64> = asks.iter_best_first().map(|r| r.price.0).collect();
        let mut sorted = prices.clone();
        sorted.sort_unstable();
        assert_eq!(ask_order, sorted);
        sorted.reverse();
        assert_eq!(bid_order, sorted);
        for p in &prices {
            assert!(bids.find(Price(*p)).is_ok());
            assert!(asks.find(Price(*p)).is_ok());
        }
        assert!(bids.find(Price(99)).is_err());
        assert!(asks.find(Price(1000)).is_err());
    }

    #[test]
    fn full_ladder_refuses_insert() {
        let mut ladder = Ladder::with_capacity(BookSide::Bid, 1);
        assert!(ladder.try_insert(
            0,
            Rung {
                price: Price(1),
                level: 0
            }
        ));
        assert!(!ladder.try_insert(
            1,
            Rung {
                price: Price(2),
                level: 1
            }
        ));
        assert_eq!(ladder.len(), 1);
    }
}
