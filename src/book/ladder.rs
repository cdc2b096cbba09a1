//! One side of one book: its price levels, found by price without search.
//!
//! The ladder is indexed directly by the price's tick number within the instrument's
//! configured range (`(price - min_price) / tick`), so finding, adding and removing a
//! level is one array access. The best price is cached; when the best level goes, the next
//! one is found through a hierarchical bitmap (one bit per tick, one bit per non-empty word
//! above it, and so on up to a single word): at most two words per level of the hierarchy,
//! however far apart the levels are.
//!
//! Memory: 4 bytes per tick of the range and side for the index, 1/8 byte for the bitmap.
//! The index is allocated zeroed, so the operating system maps pages of it only when a
//! level there is first used; the price ranges a book never trades at cost address space,
//! not memory.

use crate::types::BookSide;

/// "No tick": an empty side's best.
const NONE: u32 = u32::MAX;

/// Bits in a bitmap word.
const WORD_BITS: usize = 64;

/// Layers of a bitmap over fewer than 2^32 ticks: 64^6 > 2^32.
const MAX_LAYERS: usize = 6;

/// Levels of one side, by tick number. Capacity fixed at construction.
#[derive(Debug)]
pub struct Ladder {
    side: BookSide,
    /// Per tick: index of its level in the level pool plus one; 0 = no level there.
    slots: Vec<u32>,
    /// The bitmap's layers, one after another in one array: layer 0 has one bit per tick,
    /// layer `k + 1` one bit per non-zero word of layer `k`; the last is a single word.
    /// Layer `k` starts at word `start[k]`. (One array rather than one per layer: a layer's
    /// word is found without loading the layer's own pointer, 10% of a level's removal.)
    bits: Vec<u64>,
    /// Where each layer starts in `bits`; `start[layers]` is `bits.len()`.
    start: [u32; MAX_LAYERS + 1],
    /// Layers in the bitmap (1 to [`MAX_LAYERS`]).
    layers: usize,
    /// Tick of the best level, or `NONE`.
    best: u32,
    /// Levels on this side.
    len: u32,
}

impl Ladder {
    /// An empty ladder over `ticks` ticks (tick numbers `0..ticks`); `ticks` < `u32::MAX`.
    pub fn new(side: BookSide, ticks: u32) -> Ladder {
        assert!(ticks < NONE, "a ladder covers fewer than {NONE} ticks");
        let mut start = [0u32; MAX_LAYERS + 1];
        let mut layers = 0;
        let mut width = ticks.max(1) as usize;
        loop {
            let words = width.div_ceil(WORD_BITS);
            start[layers + 1] = start[layers] + words as u32;
            layers += 1;
            if words == 1 {
                break;
            }
            width = words;
        }
        Ladder {
            side,
            slots: vec![0; ticks as usize],
            bits: vec![0; start[layers] as usize],
            start,
            layers,
            best: NONE,
            len: 0,
        }
    }

    /// Tick and level of the best price, if any.
    #[inline]
    pub fn best(&self) -> Option<(u32, u32)> {
        (self.best != NONE).then(|| (self.best, self.slots[self.best as usize] - 1))
    }

    /// Tick of the best price, if any.
    #[inline]
    pub fn best_tick(&self) -> Option<u32> {
        (self.best != NONE).then_some(self.best)
    }

    /// Whether an incoming order on the other side, limited to tick number `tick`, would
    /// trade with this side's best level.
    #[inline]
    pub fn crossed_by(&self, tick: u32) -> bool {
        debug_assert!(tick < NONE);
        // The side is selected, not branched to (it is random from order to order). An
        // empty side's best is `NONE`: above every tick for asks, and 0 after the wrapping
        // add for bids (`best + 1 > tick` is `best >= tick`), so that nothing crosses it.
        std::hint::select_unpredictable(
            self.side == BookSide::Ask,
            self.best <= tick,
            self.best.wrapping_add(1) > tick,
        )
    }

    /// The level at `tick`, if there is one.
    #[inline]
    pub fn get(&self, tick: u32) -> Option<u32> {
        self.slots[tick as usize].checked_sub(1)
    }

    /// Puts `level` at `tick`, which must have none.
    #[inline(always)]
    pub fn insert(&mut self, tick: u32, level: u32) {
        debug_assert!(level < NONE - 1);
        let slot = &mut self.slots[tick as usize];
        assert!(*slot == 0, "tick {tick} already has a level");
        *slot = level + 1;
        self.len += 1;
        let mut at = tick as usize;
        for k in 0..self.layers {
            let word = &mut self.bits[self.start[k] as usize + at / WORD_BITS];
            let was_empty = *word == 0;
            *word |= 1 << (at % WORD_BITS);
            if !was_empty {
                break;
            }
            at /= WORD_BITS;
        }
        if self.best == NONE || self.better(tick, self.best) {
            self.best = tick;
        }
    }

    /// Takes the level at `tick` (which must have one) off the ladder.
    #[inline(always)]
    pub fn remove(&mut self, tick: u32) {
        let slot = &mut self.slots[tick as usize];
        assert!(*slot != 0, "tick {tick} has no level");
        *slot = 0;
        self.len -= 1;
        let mut at = tick as usize;
        for k in 0..self.layers {
            let word = &mut self.bits[self.start[k] as usize + at / WORD_BITS];
            *word &= !(1 << (at % WORD_BITS));
            if *word != 0 {
                break;
            }
            at /= WORD_BITS;
        }
        if tick == self.best {
            self.best = self.next_worse(tick).unwrap_or(NONE);
        }
    }

    /// Whether `a` is a better tick than `b` for orders resting on this side.
    #[inline]
    fn better(&self, a: u32, b: u32) -> bool {
        match self.side {
            BookSide::Bid => a > b,
            BookSide::Ask => a < b,
        }
    }

    /// The next level worse than `tick` (which need not have a level), if any.
    #[inline]
    pub fn next_worse(&self, tick: u32) -> Option<u32> {
        match self.side {
            BookSide::Bid => self.highest_below(tick),
            BookSide::Ask => self.lowest_above(tick),
        }
    }

    /// The highest tick with a level below `tick`.
    fn highest_below(&self, tick: u32) -> Option<u32> {
        debug_assert!((tick as usize) <= self.slots.len());
        let mut at = (tick as usize).checked_sub(1)?;
        for k in 0..self.layers {
            let word = at / WORD_BITS;
            // Bits at or below `at` within its word.
            let masked = self.bits[self.start[k] as usize + word]
                & (u64::MAX >> (WORD_BITS - 1 - at % WORD_BITS));
            if masked != 0 {
                let mut found =
                    word * WORD_BITS + (WORD_BITS - 1 - masked.leading_zeros() as usize);
                for lower in (0..k).rev() {
                    let w = self.bits[self.start[lower] as usize + found];
                    found = found * WORD_BITS + (WORD_BITS - 1 - w.leading_zeros() as usize);
                }
                return Some(found as u32);
            }
            at = word.checked_sub(1)?;
        }
        None
    }

    /// The lowest tick with a level above `tick`.
    fn lowest_above(&self, tick: u32) -> Option<u32> {
        let mut at = tick as usize + 1;
        for k in 0..self.layers {
            let word = at / WORD_BITS;
            let first = self.start[k] as usize;
            if first + word >= self.start[k + 1] as usize {
                return None;
            }
            // Bits at or above `at` within its word.
            let masked = self.bits[first + word] & (u64::MAX << (at % WORD_BITS));
            if masked != 0 {
                let mut found = word * WORD_BITS + masked.trailing_zeros() as usize;
                for lower in (0..k).rev() {
                    let w = self.bits[self.start[lower] as usize + found];
                    found = found * WORD_BITS + w.trailing_zeros() as usize;
                }
                return Some(found as u32);
            }
            at = word + 1;
        }
        None
    }

    /// `(tick, level)` from best to worst.
    pub fn iter_best_first(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        std::iter::successors(self.best_tick(), |&t| self.next_worse(t))
            .map(|t| (t, self.slots[t as usize] - 1))
    }

    /// Bytes allocated (the index's untouched pages are not resident).
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u32>() + self.bits.capacity() * 8
    }

    /// Number of levels.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Price;
    use std::collections::BTreeSet;

    /// Random inserts and removals agree with a sorted set, on ranges of 1 to 5 layers
    /// (20,000,000 ticks: 80 MB of index, allocated zeroed, a few pages of it touched).
    #[test]
    fn agrees_with_a_sorted_set() {
        for ticks in [1u32, 7, 64, 65, 4_096, 4_097, 300_000, 20_000_000] {
            for side in [BookSide::Bid, BookSide::Ask] {
                let mut ladder = Ladder::new(side, ticks);
                let layers = match ticks {
                    0..=64 => 1,
                    65..=4_096 => 2,
                    4_097..=262_144 => 3,
                    262_145..=16_777_216 => 4,
                    _ => 5,
                };
                assert_eq!(ladder.layers, layers, "{ticks} ticks");
                let mut model = BTreeSet::new();
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(ticks);
                for step in 0..20_000u32 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Clustered and far ticks, as books have them.
                    let tick = if state.is_multiple_of(4) {
                        (state >> 8) as u32 % ticks
                    } else {
                        (ticks / 2 + (state >> 8) as u32 % 40).min(ticks - 1)
                    };
                    if model.remove(&tick) {
                        ladder.remove(tick);
                    } else {
                        model.insert(tick);
                        ladder.insert(tick, step);
                    }
                    let best = match side {
                        BookSide::Bid => model.last(),
                        BookSide::Ask => model.first(),
                    };
                    assert_eq!(ladder.best_tick(), best.copied());
                    assert_eq!(ladder.len(), model.len());
                    // An incoming order limited to a tick at, next to, or far from the
                    // best, and at both ends of the range.
                    let near = best.map_or(tick, |&b| b);
                    for probe in [
                        0,
                        ticks - 1,
                        tick,
                        near,
                        near.saturating_sub(1),
                        (near + 1).min(ticks - 1),
                    ] {
                        let crosses = best.is_some_and(|&b| {
                            side.crosses(Price(u64::from(b)), Price(u64::from(probe)))
                        });
                        assert_eq!(
                            ladder.crossed_by(probe),
                            crosses,
                            "{ticks} ticks, {side:?}, best {best:?}, limit tick {probe}"
                        );
                    }
                    if step % 251 == 0 {
                        let mut expected: Vec<u32> = model.iter().copied().collect();
                        if side == BookSide::Bid {
                            expected.reverse();
                        }
                        let got: Vec<u32> = ladder.iter_best_first().map(|(t, _)| t).collect();
                        assert_eq!(got, expected, "{ticks} ticks, {side:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn levels_are_found_by_tick() {
        let mut ladder = Ladder::new(BookSide::Ask, 10_000);
        ladder.insert(9_999, 3);
        ladder.insert(0, 4);
        assert_eq!(ladder.get(9_999), Some(3));
        assert_eq!(ladder.get(0), Some(4));
        assert_eq!(ladder.get(5), None);
        assert_eq!(ladder.best(), Some((0, 4)));
        assert_eq!(ladder.next_worse(0), Some(9_999));
        assert_eq!(ladder.next_worse(9_999), None);
        ladder.remove(0);
        assert_eq!(ladder.best(), Some((9_999, 3)));
        ladder.remove(9_999);
        assert_eq!(ladder.best(), None);
        assert!(!ladder.crossed_by(0) && !ladder.crossed_by(9_999));
        let mut bids = Ladder::new(BookSide::Bid, 10_000);
        assert!(!bids.crossed_by(0) && !bids.crossed_by(9_999));
        bids.insert(0, 1);
        assert!(bids.crossed_by(0) && !bids.crossed_by(1));
    }
}
