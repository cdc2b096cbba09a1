//! `(owner, user_ref) -> order slot`: the index behind cancel, replace and modify.
//!
//! [`OrderIndex`] is what the matcher uses: per-owner windows of recent references, and
//! behind them [`RefIndex`], a hash for the references the windows do not hold.
//!
//! Open addressing with linear probing and backward-shift deletion, so it never holds
//! tombstones and never rehashes: its cost stays flat through a day of churn (a general
//! hash map under steady insert/remove rehashes its whole table from time to time, a
//! latency spike on the hot path). The table is allocated and touched at start-up, at
//! least twice the order capacity, so the load stays at or below one half.
//!
//! Locality: a market maker's live orders are mostly its most recent references. The home
//! slot keeps each run of [`BLOCK`] consecutive references of one owner side by side, so
//! those orders share a few cache lines; the runs themselves are scattered by a hash so
//! that probe sequences stay short. Measured: `book/mixed` in the README.

/// Consecutive references that share a run of slots.
const BLOCK: u64 = 16;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// `owner << 32 | user_ref`; 0 = empty (reference 0 is never stored: it is never above
    /// an owner's last reference, so it is always rejected).
    key: u64,
    value: u32,
}

const EMPTY: Slot = Slot { key: 0, value: 0 };

/// A fixed-capacity map from non-zero `u64` keys to `u32` values.
#[derive(Debug)]
pub struct RefIndex {
    slots: Vec<Slot>,
    mask: usize,
    /// `64 - log2(number of blocks)`: selects the top bits of the block hash.
    shift: u32,
    len: usize,
}

impl RefIndex {
    /// A map that holds up to `capacity_max` keys without growing.
    pub fn with_capacity(capacity_max: u32) -> RefIndex {
        let size = (2 * capacity_max as usize)
            .next_power_of_two()
            .max(2 * BLOCK as usize);
        let blocks = size / BLOCK as usize;
        RefIndex {
            slots: vec![EMPTY; size],
            mask: size - 1,
            shift: 64 - blocks.trailing_zeros(),
            len: 0,
        }
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        let (owner, user_ref) = (key >> 32, key & 0xFFFF_FFFF);
        let hash = ((owner << 32) | (user_ref / BLOCK)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The high bits of a multiplicative hash are the well-mixed ones. A shift of 64
        // (one block) would overflow; `checked_shr` maps it to block 0.
        let block = hash.checked_shr(self.shift).unwrap_or(0) as usize;
        (block * BLOCK as usize + (user_ref % BLOCK) as usize) & self.mask
    }

    /// The value stored for `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<u32> {
        if key == 0 {
            return None;
        }
        let mut i = self.home(key);
        loop {
            let slot = self.slots[i];
            if slot.key == key {
                return Some(slot.value);
            }
            if slot.key == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Stores `key -> value`. The key must be absent and the map below capacity; both are
    /// guaranteed by the matcher (unique references, order pool no larger than half).
    #[inline]
    pub fn insert(&mut self, key: u64, value: u32) {
        assert!(
            key != 0 && self.len < self.slots.len() / 2,
            "reference index over capacity"
        );
        let mut i = self.home(key);
        while self.slots[i].key != 0 {
            debug_assert!(self.slots[i].key != key, "key {key:#x} inserted twice");
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Slot { key, value };
        self.len += 1;
    }

    /// Removes `key`; returns whether it was there.
    #[inline]
    pub fn remove(&mut self, key: u64) -> bool {
        if key == 0 {
            return false;
        }
        let mut i = self.home(key);
        loop {
            match self.slots[i].key {
                0 => return false,
                k if k == key => break,
                _ => i = (i + 1) & self.mask,
            }
        }
        // Backward shift: pull later entries of the probe run into the hole unless their
        // home lies cyclically after the hole (they would become unreachable).
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let slot = self.slots[j];
            if slot.key == 0 {
                break;
            }
            let home = self.home(slot.key);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// References per owner in the recent window at most; a power of two.
pub const WINDOW_MAX: u32 = 1 << 16;
/// References per owner in the recent window at least.
pub const WINDOW_MIN: u32 = 64;

/// A live order in the recent window: its reference, and its slot plus one (0 = empty).
#[derive(Clone, Copy, Debug, Default)]
struct Recent {
    user_ref: u32,
    slot: u32,
}

/// `(owner, user_ref) -> order slot` for the matcher, in two parts.
///
/// A market maker's live orders are mostly its most recent references, so each owner has a
/// direct-mapped window of `window` entries, one per reference modulo `window`: a lookup
/// of a recent reference is one access to a small table that stays in cache. When two
/// live orders want the same entry, the newer reference takes it and the older one moves
/// to the hash index behind ([`RefIndex`]), which also holds orders restored out of
/// order. Every live order is in exactly one of the two.
#[derive(Debug)]
pub struct OrderIndex {
    /// `owners * window` entries; owner `o`'s are `o * window..(o + 1) * window`.
    recent: Vec<Recent>,
    mask: u32,
    shift: u32,
    older: RefIndex,
    len: usize,
}

impl OrderIndex {
    /// An index for `owners` owners and up to `capacity_max` live orders. Each owner's
    /// window covers its share of the order pool (rounded up to a power of two, within
    /// `WINDOW_MIN..=WINDOW_MAX`), so the windows together take at most 16 bytes per order
    /// slot, and a maker whose references run densely (as OUCH clients number them) finds
    /// every live order in its window.
    pub fn new(owners: usize, capacity_max: u32) -> OrderIndex {
        let share = (capacity_max as usize).div_ceil(owners.max(1)) as u32;
        let window = share.next_power_of_two().clamp(WINDOW_MIN, WINDOW_MAX);
        OrderIndex {
            recent: vec![Recent::default(); owners * window as usize],
            mask: window - 1,
            shift: window.trailing_zeros(),
            older: RefIndex::with_capacity(capacity_max),
            len: 0,
        }
    }

    #[inline]
    fn position(&self, owner: u16, user_ref: u32) -> usize {
        ((usize::from(owner)) << self.shift) | (user_ref & self.mask) as usize
    }

    /// The slot of `owner`'s live order `user_ref`.
    #[inline]
    pub fn get(&self, owner: u16, user_ref: u32) -> Option<u32> {
        let entry = self.recent[self.position(owner, user_ref)];
        if entry.slot != 0 && entry.user_ref == user_ref {
            return Some(entry.slot - 1);
        }
        if self.older.len() == 0 {
            return None;
        }
        self.older.get(key(owner, user_ref))
    }

    /// Indexes a live order; `(owner, user_ref)` must not be live already.
    #[inline]
    pub fn insert(&mut self, owner: u16, user_ref: u32, slot: u32) {
        debug_assert!(slot < u32::MAX && self.get(owner, user_ref).is_none());
        let at = self.position(owner, user_ref);
        let entry = self.recent[at];
        let new = Recent {
            user_ref,
            slot: slot + 1,
        };
        if entry.slot == 0 {
            self.recent[at] = new;
        } else if entry.user_ref < user_ref {
            self.older
                .insert(key(owner, entry.user_ref), entry.slot - 1);
            self.recent[at] = new;
        } else {
            self.older.insert(key(owner, user_ref), slot);
        }
        self.len += 1;
    }

    /// Removes a live order's entry; returns whether it was there.
    #[inline]
    pub fn remove(&mut self, owner: u16, user_ref: u32) -> bool {
        let at = self.position(owner, user_ref);
        let entry = self.recent[at];
        let removed = if entry.slot != 0 && entry.user_ref == user_ref {
            self.recent[at] = Recent::default();
            true
        } else {
            self.older.remove(key(owner, user_ref))
        };
        self.len -= usize::from(removed);
        removed
    }

    /// Live orders indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<Recent>() + self.older.bytes()
    }
}

fn key(owner: u16, user_ref: u32) -> u64 {
    (u64::from(owner) << 32) | u64::from(user_ref)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn order_index_agrees_with_a_hash_map() {
        // A small window, so entries collide and move to the older index often.
        let mut index = OrderIndex::new(3, 8);
        assert_eq!(index.mask + 1, WINDOW_MIN);
        let mut model: HashMap<(u16, u32), u32> = HashMap::new();
        let mut next_ref = [0u32; 3];
        let mut state = 11u64;
        for step in 0..100_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let owner = (state % 3) as u16;
            let live: Vec<(u16, u32)> = model.keys().copied().filter(|k| k.0 == owner).collect();
            if (state >> 8).is_multiple_of(2) && model.len() < 8 {
                next_ref[usize::from(owner)] += 1 + (state >> 16) as u32 % 90;
                let r = next_ref[usize::from(owner)];
                index.insert(owner, r, step);
                model.insert((owner, r), step);
            } else if !live.is_empty() {
                let k = live[(state >> 20) as usize % live.len()];
                assert!(index.remove(k.0, k.1));
                model.remove(&k);
            }
            assert_eq!(index.len(), model.len());
            for (k, v) in &model {
                assert_eq!(index.get(k.0, k.1), Some(*v));
            }
            assert_eq!(index.get(owner, next_ref[usize::from(owner)] + 1), None);
        }
    }

    #[test]
    fn agrees_with_a_hash_map_under_churn() {
        let mut index = RefIndex::with_capacity(64);
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut state = 7u64;
        for step in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Few owners, clustered references: the shape the matcher produces.
            let key = ((state % 3) << 32) | (1 + (state >> 8) % 300);
            if model.contains_key(&key) {
                assert!(index.remove(key));
                model.remove(&key);
            } else if model.len() < 64 {
                index.insert(key, step);
                model.insert(key, step);
            }
            assert_eq!(index.len(), model.len());
            if step % 97 == 0 {
                for (k, v) in &model {
                    assert_eq!(index.get(*k), Some(*v));
                }
            }
            assert_eq!(index.get(key), model.get(&key).copied());
        }
        assert!(!index.remove(0xFFFF_0000_0001));
    }

    #[test]
    fn wraps_around_the_end_of_the_table() {
        let mut index = RefIndex::with_capacity(16);
        let size = index.slots.len();
        // Find keys whose home is the last slot, to force wrap-around runs.
        let keys: Vec<u64> = (1..1_000_000u64)
            .filter(|k| index.home(*k) == size - 1)
            .take(5)
            .collect();
        for (v, k) in keys.iter().enumerate() {
            index.insert(*k, v as u32);
        }
        assert!(index.remove(keys[0]));
        for (v, k) in keys.iter().enumerate().skip(1) {
            assert_eq!(index.get(*k), Some(v as u32));
        }
    }
}
