//! `(owner, key) -> order slot`: the index behind cancel, replace and modify.
//!
//! [`OrderIndex`] is what the matcher uses: per-owner windows of recent references, and
//! behind them [`RefIndex`], a hash for the references the windows do not hold. A key is
//! the owner's 64-bit reference of an order: OUCH's UserRefNum (below 2^32), or any key an
//! embedding caller chooses.
//!
//! Open addressing with linear probing and backward-shift deletion, so it never holds
//! tombstones and never rehashes: its cost stays flat through a day of churn (a general
//! hash map under steady insert/remove rehashes its whole table from time to time, a
//! latency spike on the hot path). The table is allocated and touched at start-up, at
//! least twice the order capacity, so the load stays at or below one half.
//!
//! Locality: a market maker's live orders are mostly its most recent references. The home
//! slot keeps each run of [`BLOCK`] consecutive keys of one owner side by side, so those
//! orders share a few cache lines; the runs themselves are scattered by a hash so that
//! probe sequences stay short. Measured: `book/mixed` in the README.

/// Consecutive keys that share a run of slots.
const BLOCK: u64 = 16;

/// `value` of an empty slot (order slots are below the pool size, itself below this).
const VACANT: u32 = u32::MAX;

/// One entry of the table: an order slot and its key's home. The key itself is not stored:
/// every value is a live order's slot, whose order line holds its owner and reference (the
/// caller passes `key_of` to read them), so an entry is 8 bytes instead of 16. A probe
/// compares homes first (a key's home is a function of the key), and reads the order line
/// only on a home match: the line a lookup's caller reads next anyway.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The order slot; [`VACANT`] = empty.
    value: u32,
    /// `home(owner, key)` of the stored key: backward-shift deletion needs it, and it
    /// filters probes without reading the order line.
    home: u32,
}

const EMPTY: Slot = Slot {
    value: VACANT,
    home: 0,
};

/// Largest table: a home must fit the entry's 32 bits.
const TABLE_MAX: u64 = 1 << 32;

/// A fixed-capacity map from `(owner, key)` to `u32` values below `u32::MAX`, each value
/// naming a record that holds its key (see [`Slot`]).
#[derive(Debug)]
pub struct RefIndex {
    slots: Vec<Slot>,
    /// One bit per slot, set while it holds a key: an absent key whose home slot is free
    /// is known absent from this small bitmap (2 bits per order slot, stays in cache)
    /// without touching the table, which is 16 bytes per order slot (two 8-byte entries)
    /// and mostly cold. A new order under caller keys asks exactly that.
    occupied: Vec<u64>,
    mask: usize,
    /// `64 - log2(number of blocks)`: selects the top bits of the block hash.
    shift: u32,
    len: usize,
}

impl RefIndex {
    /// A map that holds up to `capacity_max` keys without growing. Panics above 2^31 keys
    /// (the configuration refuses such pools).
    pub fn with_capacity(capacity_max: u32) -> RefIndex {
        let size = (2 * capacity_max as usize)
            .next_power_of_two()
            .max(2 * BLOCK as usize);
        assert!(
            size as u64 <= TABLE_MAX,
            "reference index for {capacity_max} keys is too large"
        );
        let blocks = size / BLOCK as usize;
        RefIndex {
            slots: vec![EMPTY; size],
            occupied: vec![0; size.div_ceil(64)],
            mask: size - 1,
            shift: 64 - blocks.trailing_zeros(),
            len: 0,
        }
    }

    #[inline]
    fn home(&self, owner: u16, key: u64) -> usize {
        // For keys below 2^32 (OUCH references) this is `owner << 32 | key / BLOCK`.
        let hash = ((u64::from(owner) << 32) ^ (key / BLOCK)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The high bits of a multiplicative hash are the well-mixed ones. A shift of 64
        // (one block) would overflow; `checked_shr` maps it to block 0.
        let block = hash.checked_shr(self.shift).unwrap_or(0) as usize;
        (block * BLOCK as usize + (key % BLOCK) as usize) & self.mask
    }

    /// Where `(owner, key)` is stored, if it is. `key_of(value)` is the key the record
    /// named by a stored value holds.
    #[inline]
    fn find(&self, owner: u16, key: u64, key_of: impl Fn(u32) -> (u16, u64)) -> Option<usize> {
        let home = self.home(owner, key);
        if !self.is_occupied(home) {
            return None;
        }
        let mut i = home;
        loop {
            let slot = self.slots[i];
            if slot.value == VACANT {
                return None;
            }
            if slot.home as usize == home && key_of(slot.value) == (owner, key) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value stored for `(owner, key)`; `key_of` as for [`RefIndex::remove`].
    #[inline]
    pub fn get(&self, owner: u16, key: u64, key_of: impl Fn(u32) -> (u16, u64)) -> Option<u32> {
        self.find(owner, key, key_of).map(|i| self.slots[i].value)
    }

    /// Stores `(owner, key) -> value`. The key must be absent, the value below `u32::MAX`
    /// and the map below capacity; all are guaranteed by the matcher (keys unique among
    /// live orders, order pool no larger than half).
    #[inline]
    pub fn insert(&mut self, owner: u16, key: u64, value: u32) {
        assert!(
            value != VACANT && self.len < self.slots.len() / 2,
            "reference index over capacity"
        );
        let home = self.home(owner, key);
        let mut i = home;
        while self.slots[i].value != VACANT {
            i = (i + 1) & self.mask;
        }
        // `home < TABLE_MAX`, checked at construction.
        self.slots[i] = Slot {
            value,
            home: home as u32,
        };
        self.occupied[i / 64] |= 1 << (i % 64);
        self.len += 1;
    }

    /// Removes `(owner, key)`; returns whether it was there. `key_of(value)` is the key of
    /// the record a stored value names: every stored record must still hold its key.
    #[inline]
    pub fn remove(&mut self, owner: u16, key: u64, key_of: impl Fn(u32) -> (u16, u64)) -> bool {
        let Some(i) = self.find(owner, key, key_of) else {
            return false;
        };
        // Backward shift: pull later entries of the probe run into the hole unless their
        // home lies cyclically after the hole (they would become unreachable).
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let slot = self.slots[j];
            if slot.value == VACANT {
                break;
            }
            let home = slot.home as usize;
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
        self.occupied[hole / 64] &= !(1 << (hole % 64));
        self.len -= 1;
        true
    }

    #[inline]
    fn is_occupied(&self, i: usize) -> bool {
        self.occupied[i / 64] & (1 << (i % 64)) != 0
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>() + self.occupied.capacity() * 8
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

/// Entries ahead of a new reference whose cache line [`OrderIndex::insert`] warms: two
/// 64-byte lines of 8-byte entries.
const AHEAD: usize = 16;

/// A live order in the recent window: the low 32 bits of its key (the high ones are the
/// window's), and its slot plus one (0 = empty).
#[derive(Clone, Copy, Debug, Default)]
struct Recent {
    key: u32,
    slot: u32,
}

/// `(owner, key) -> order slot` for the matcher, in two parts.
///
/// A market maker's live orders are mostly its most recent references, so each owner has a
/// direct-mapped window of `window` entries, one per key modulo `window`: a lookup of a
/// recent reference is one access, to a line its insert touched not long before (a
/// window is up to 512 KiB, more than a core's own cache, but the lines of the live
/// references stay warm, and an insert warms the line its owner's next references use:
/// [`OrderIndex::insert`]). When two live
/// orders want the same entry, the higher key takes it and the other moves to the hash
/// index behind ([`RefIndex`]), which also holds orders restored out of order. A window
/// holds keys that share their high 32 bits (`high`, its owner's: 0 for every OUCH
/// reference; a caller's first key sets it while the window is empty), so the entries
/// stay 8 bytes; keys with other high bits go to the hash. A caller numbering its orders
/// from a counter, with or without a prefix in the high bits, finds them in the window.
/// Every live order is in exactly one of the two.
#[derive(Debug)]
pub struct OrderIndex {
    /// `owners * window` entries; owner `o`'s are `o * window..(o + 1) * window`.
    recent: Vec<Recent>,
    /// Per owner: the high 32 bits of every key in its window, and how many it holds.
    high: Vec<(u32, u32)>,
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
            high: vec![(0, 0); owners],
            mask: window - 1,
            shift: window.trailing_zeros(),
            older: RefIndex::with_capacity(capacity_max),
            len: 0,
        }
    }

    #[inline]
    fn position(&self, owner: u16, key: u32) -> usize {
        ((usize::from(owner)) << self.shift) | (key & self.mask) as usize
    }

    /// The slot of `owner`'s live order `key` if its window holds it (the hash behind is
    /// not looked at: `None` does not mean the key is not live).
    #[inline(always)]
    pub fn get_recent(&self, owner: u16, key: u64) -> Option<u32> {
        let (high, short) = split(key);
        if high == self.high.get(usize::from(owner))?.0 {
            let entry = self.recent.get(self.position(owner, short))?;
            if entry.slot != 0 && entry.key == short {
                return Some(entry.slot - 1);
            }
        }
        None
    }

    /// The slot of `owner`'s live order `key`. `key_of(slot)` is the `(owner, key)` the
    /// order in `slot` holds (read only for orders behind the windows).
    #[inline(always)]
    pub fn get(&self, owner: u16, key: u64, key_of: impl Fn(u32) -> (u16, u64)) -> Option<u32> {
        if let Some(slot) = self.get_recent(owner, key) {
            return Some(slot);
        }
        if self.older.len() == 0 {
            return None;
        }
        self.older.get(owner, key, key_of)
    }

    /// Indexes a live order; `(owner, key)` must not be live already.
    #[inline(always)]
    pub fn insert(&mut self, owner: u16, key: u64, slot: u32) {
        debug_assert!(slot < u32::MAX - 1);
        self.len += 1;
        let (high, short) = split(key);
        let window = &mut self.high[usize::from(owner)];
        if high != window.0 {
            if window.1 != 0 {
                return self.older.insert(owner, key, slot);
            }
            window.0 = high;
        }
        let at = self.position(owner, short);
        // Warms the entry two cache lines on, which this owner's references reach a few
        // orders later when they run on from one order to the next (OUCH's increasing
        // UserRefNums; a caller's counter): each new reference's entry is in a line the
        // window last touched a whole window of references ago (in the book bench, 256 KiB
        // a user and 2.25 MiB for its 9 users, more than a core's own cache holds). Without
        // it, that load was where `book/mixed` waited most (README, "Warming the window
        // ahead of new references").
        let mask = self.mask as usize;
        if let Some(ahead) = self.recent.get(at & !mask | (at + AHEAD) & mask) {
            super::prefetch::prefetch(ahead);
        }
        let entry = self.recent[at];
        let new = Recent {
            key: short,
            slot: slot + 1,
        };
        if entry.slot == 0 {
            self.recent[at] = new;
            self.high[usize::from(owner)].1 += 1;
        } else if entry.key < short {
            let evicted = u64::from(high) << 32 | u64::from(entry.key);
            self.older.insert(owner, evicted, entry.slot - 1);
            self.recent[at] = new;
        } else {
            self.older.insert(owner, key, slot);
        }
    }

    /// Removes `(owner, key)`'s entry; returns whether it was there. `key_of` as for
    /// [`OrderIndex::get`]: every indexed order's slot still holds it. The matcher removes
    /// with [`Self::remove_live`]; the tests drive both.
    #[cfg(test)]
    pub fn remove(&mut self, owner: u16, key: u64, key_of: impl Fn(u32) -> (u16, u64)) -> bool {
        let (high, short) = split(key);
        let window = self.high[usize::from(owner)];
        let at = self.position(owner, short);
        let entry = self.recent[at];
        let removed = if high == window.0 && entry.slot != 0 && entry.key == short {
            self.recent[at] = Recent::default();
            self.high[usize::from(owner)].1 -= 1;
            true
        } else {
            self.older.remove(owner, key, key_of)
        };
        self.len -= usize::from(removed);
        removed
    }

    /// Removes the entry of a key that is live in `slot`, as a resting order's is: if its
    /// window holds it, it is the entry at its position that names `slot` (a live order
    /// has one slot, and one entry in the whole index), so the window's high bits and the
    /// key are not compared.
    #[inline(always)]
    pub fn remove_live(
        &mut self,
        owner: u16,
        key: u64,
        slot: u32,
        key_of: impl Fn(u32) -> (u16, u64),
    ) {
        let (_, short) = split(key);
        let at = self.position(owner, short);
        if self.recent[at].slot == slot + 1 {
            debug_assert!(
                self.recent[at].key == short && self.high[usize::from(owner)].0 == split(key).0
            );
            self.recent[at] = Recent::default();
            self.high[usize::from(owner)].1 -= 1;
        } else {
            let removed = self.older.remove(owner, key, key_of);
            debug_assert!(removed, "a live key is indexed");
        }
        self.len -= 1;
    }

    /// Warms the window entry of `owner`'s key `key`, where a lookup looks first (for a key
    /// behind the windows, in the hash, it warms an entry that does not help).
    #[inline(always)]
    pub fn prefetch(&self, owner: u16, key: u64) {
        let (_, short) = split(key);
        if let Some(entry) = self.recent.get(self.position(owner, short)) {
            super::prefetch::prefetch(entry);
        }
    }

    /// Live orders indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<Recent>()
            + self.high.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.older.bytes()
    }
}

/// A key's high and low 32 bits.
#[inline]
fn split(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// `key_of` for a model map whose values are unique: the key stored for a value.
    fn by_value(model: &HashMap<(u16, u64), u32>) -> impl Fn(u32) -> (u16, u64) + '_ {
        |value| {
            *model
                .iter()
                .find(|(_, v)| **v == value)
                .expect("every stored value is in the model")
                .0
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn order_index_agrees_with_a_hash_map() {
        // A small window, so entries collide and move to the older index often.
        let mut index = OrderIndex::new(3, 8);
        assert_eq!(index.mask + 1, WINDOW_MIN);
        let mut model: HashMap<(u16, u64), u32> = HashMap::new();
        let mut next_ref = [0u64; 3];
        let mut state = 11u64;
        for step in 0..100_000u32 {
            let state = xorshift(&mut state);
            let owner = (state % 3) as u16;
            let live: Vec<(u16, u64)> = model.keys().copied().filter(|k| k.0 == owner).collect();
            if (state >> 8).is_multiple_of(2) && model.len() < 8 {
                next_ref[usize::from(owner)] += 1 + (state >> 16) % 90;
                let r = next_ref[usize::from(owner)];
                index.insert(owner, r, step);
                model.insert((owner, r), step);
            } else if !live.is_empty() {
                let k = live[(state >> 20) as usize % live.len()];
                if (state >> 40).is_multiple_of(2) {
                    assert!(index.remove(k.0, k.1, by_value(&model)));
                } else {
                    index.remove_live(k.0, k.1, model[&k], by_value(&model));
                }
                model.remove(&k);
            }
            assert_eq!(index.len(), model.len());
            for (k, v) in &model {
                assert_eq!(index.get(k.0, k.1, by_value(&model)), Some(*v));
            }
            assert_eq!(
                index.get(owner, next_ref[usize::from(owner)] + 1, by_value(&model)),
                None
            );
        }
    }

    #[test]
    fn order_index_takes_any_64_bit_key() {
        // Keys of an embedding caller: 0, keys at and above 2^32 (which the windows do
        // not hold), keys that differ only above bit 32, in any order, reused once free.
        let mut index = OrderIndex::new(2, 64);
        let mut model: HashMap<(u16, u64), u32> = HashMap::new();
        let mut state = 5u64;
        let pick = |r: u64| match r % 6 {
            0 => r % 5,
            1 => (1 << 32) + r % 7,
            2 => ((r % 3) << 40) | 9,
            3 => u64::MAX - r % 4,
            4 => (r >> 8) % 64,
            _ => r >> 3,
        };
        for step in 0..200_000u32 {
            let r = xorshift(&mut state);
            let owner = (r % 2) as u16;
            let key = pick(r >> 1);
            match model.get(&(owner, key)) {
                Some(&v) => {
                    assert_eq!(index.get(owner, key, by_value(&model)), Some(v));
                    if (r >> 40).is_multiple_of(2) {
                        assert!(index.remove(owner, key, by_value(&model)));
                    } else {
                        index.remove_live(owner, key, v, by_value(&model));
                    }
                    model.remove(&(owner, key));
                    assert_eq!(index.get(owner, key, by_value(&model)), None);
                }
                None if model.len() < 64 => {
                    assert_eq!(index.get(owner, key, by_value(&model)), None);
                    index.insert(owner, key, step);
                    model.insert((owner, key), step);
                }
                None => assert!(!index.remove(owner, key, by_value(&model))),
            }
            assert_eq!(index.len(), model.len());
            if step % 101 == 0 {
                for (k, v) in &model {
                    assert_eq!(index.get(k.0, k.1, by_value(&model)), Some(*v));
                }
            }
        }
    }

    #[test]
    fn agrees_with_a_hash_map_under_churn() {
        let mut index = RefIndex::with_capacity(64);
        let mut model: HashMap<(u16, u64), u32> = HashMap::new();
        let mut state = 7u64;
        for step in 0..200_000u32 {
            let state = xorshift(&mut state);
            // Few owners, clustered references: the shape the matcher produces.
            let key = ((state % 3) as u16, (state >> 8) % 300);
            if model.contains_key(&key) {
                assert!(index.remove(key.0, key.1, by_value(&model)));
                model.remove(&key);
            } else if model.len() < 64 {
                index.insert(key.0, key.1, step);
                model.insert(key, step);
            }
            assert_eq!(index.len(), model.len());
            if step % 97 == 0 {
                for (k, v) in &model {
                    assert_eq!(index.get(k.0, k.1, by_value(&model)), Some(*v));
                }
            }
            assert_eq!(
                index.get(key.0, key.1, by_value(&model)),
                model.get(&key).copied()
            );
            if step % 97 == 0 {
                for (i, slot) in index.slots.iter().enumerate() {
                    assert_eq!(index.is_occupied(i), slot.value != VACANT, "bit {i}");
                }
            }
        }
        assert!(!index.remove(0xFFFF, 1, by_value(&model)));
    }

    #[test]
    fn wraps_around_the_end_of_the_table() {
        let mut index = RefIndex::with_capacity(16);
        let size = index.slots.len();
        // Find keys whose home is the last slot, to force wrap-around runs.
        let keys: Vec<u64> = (1..1_000_000u64)
            .filter(|k| index.home(1, *k) == size - 1)
            .take(5)
            .collect();
        for (v, k) in keys.iter().enumerate() {
            index.insert(1, *k, v as u32);
        }
        let key_of = |v: u32| (1, keys[v as usize]);
        assert!(index.remove(1, keys[0], key_of));
        for (v, k) in keys.iter().enumerate().skip(1) {
            assert_eq!(index.get(1, *k, key_of), Some(v as u32));
        }
    }
}
