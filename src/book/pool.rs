//! Fixed-capacity slab: all slots allocated at start-up, handed out by index.
//!
//! Used for orders and price levels so that steady-state matching never allocates.
//! Indices are `u32`; [`NIL`] means "none" in the intrusive lists built on top.
//!
//! The free slots form a list through the slots themselves ([`Slot::link`]): a free slot
//! is not in use, so one of its fields holds the next free slot, and the pool costs no
//! memory beyond its slots (a separate list of free indices was 4 bytes a slot). Taking a
//! slot reads the line it is about to write; giving one back writes the line it has just
//! read.

/// "No slot": the end of an intrusive list.
pub const NIL: u32 = u32::MAX;

/// A pool's element: one of its `u32` fields carries the free list while the slot is free.
/// [`Pool::try_alloc`] writes the whole value over it, so the field means nothing to the
/// pool once the slot is in use, and nothing to its user once the slot is given back.
pub trait Slot {
    /// The next free slot ([`NIL`] at the end), while this one is free.
    fn link(&self) -> u32;
    /// Sets [`Slot::link`].
    fn set_link(&mut self, next: u32);
}

/// A slab of `T` with a free list through its free slots. Capacity is fixed at
/// construction.
#[derive(Debug)]
pub struct Pool<T> {
    slots: Vec<T>,
    /// The free slot handed out next, or [`NIL`].
    head: u32,
    /// Slots free.
    free: u32,
}

impl<T: Default + Clone + Slot> Pool<T> {
    /// Allocates `capacity` slots up front. `capacity` must be below `NIL`.
    pub fn with_capacity(capacity: u32) -> Pool<T> {
        assert!(
            capacity < NIL,
            "pool capacity {capacity} must be below {NIL}"
        );
        let mut slots = vec![T::default(); capacity as usize];
        // In index order: low indices are handed out first, for locality.
        for (i, slot) in slots.iter_mut().enumerate() {
            let next = i as u32 + 1;
            slot.set_link(if next == capacity { NIL } else { next });
        }
        Pool {
            slots,
            head: if capacity == 0 { NIL } else { 0 },
            free: capacity,
        }
    }
}

impl<T: Slot> Pool<T> {
    /// Takes a free slot, or `None` when the pool is full. Never allocates.
    #[inline(always)]
    pub fn try_alloc(&mut self, value: T) -> Option<u32> {
        let index = self.head;
        let slot = self.slots.get_mut(index as usize)?;
        self.head = slot.link();
        *slot = value;
        self.free -= 1;
        Some(index)
    }

    /// Returns a slot to the pool. The caller guarantees it is in use: the pool cannot
    /// tell (a slot given back twice would be handed out twice; debug builds check the
    /// count).
    #[inline]
    pub fn release(&mut self, index: u32) {
        debug_assert!(
            (self.free as usize) < self.slots.len(),
            "double release of {index}"
        );
        self.slots[index as usize].set_link(self.head);
        self.head = index;
        self.free += 1;
    }
}

impl<T> Pool<T> {
    /// Slots still free.
    #[inline]
    pub fn free_count(&self) -> usize {
        self.free as usize
    }

    /// Bytes allocated: the slots (the free list lives in them).
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<T>()
    }

    /// Slots in all, free or not.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Slots in use.
    #[inline]
    pub fn used_count(&self) -> usize {
        self.slots.len() - self.free as usize
    }
}

impl<T> std::ops::Index<u32> for Pool<T> {
    type Output = T;
    #[inline]
    fn index(&self, index: u32) -> &T {
        &self.slots[index as usize]
    }
}

impl<T> std::ops::IndexMut<u32> for Pool<T> {
    #[inline]
    fn index_mut(&mut self, index: u32) -> &mut T {
        &mut self.slots[index as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Cell {
        value: u64,
        link: u32,
    }

    impl Slot for Cell {
        fn link(&self) -> u32 {
            self.link
        }
        fn set_link(&mut self, next: u32) {
            self.link = next;
        }
    }

    fn cell(value: u64) -> Cell {
        Cell { value, link: 7 }
    }

    #[test]
    fn full_pool_refuses_and_recovers() {
        let mut pool: Pool<Cell> = Pool::with_capacity(2);
        let a = pool.try_alloc(cell(1)).unwrap();
        let b = pool.try_alloc(cell(2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.try_alloc(cell(3)), None);
        assert_eq!(pool.free_count(), 0);
        pool.release(a);
        assert_eq!(pool.free_count(), 1);
        let c = pool.try_alloc(cell(4)).unwrap();
        assert_eq!(c, a, "the slot given back is the one handed out next");
        assert_eq!(pool[c], cell(4));
        assert_eq!(pool[b], cell(2));
        assert_eq!(pool.used_count(), 2);
        assert_eq!(pool.try_alloc(cell(5)), None);
    }

    #[test]
    fn empty_pool_hands_out_nothing() {
        let mut pool: Pool<Cell> = Pool::with_capacity(0);
        assert_eq!(pool.try_alloc(cell(1)), None);
        assert_eq!(pool.free_count(), 0);
    }

    /// Against a set of free indices: every slot handed out is free, none twice, values
    /// stay where they were written, and the counts agree.
    #[test]
    fn random_allocs_and_releases_match_a_free_set() {
        const N: u32 = 64;
        let mut pool: Pool<Cell> = Pool::with_capacity(N);
        let mut free: std::collections::BTreeSet<u32> = (0..N).collect();
        let mut used: Vec<(u32, u64)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed % 3 != 0 {
                match pool.try_alloc(cell(step)) {
                    Some(i) => {
                        assert!(free.remove(&i), "slot {i} handed out while in use");
                        used.push((i, step));
                    }
                    None => assert!(free.is_empty()),
                }
            } else if !used.is_empty() {
                let (i, value) = used.swap_remove((seed >> 8) as usize % used.len());
                assert_eq!(pool[i].value, value);
                pool.release(i);
                free.insert(i);
            }
            assert_eq!(pool.free_count(), free.len());
            assert_eq!(pool.used_count(), used.len());
        }
        for (i, value) in used {
            assert_eq!(pool[i].value, value);
        }
    }
}
