//! Fixed-capacity slab: all slots allocated at start-up, handed out by index.
//!
//! Used for orders and price levels so that steady-state matching never allocates.
//! Indices are `u32`; [`NIL`] means "none" in the intrusive lists built on top.

/// "No slot": the end of an intrusive list.
pub const NIL: u32 = u32::MAX;

/// A slab of `T` with a free list. Capacity is fixed at construction.
#[derive(Debug)]
pub struct Pool<T> {
    slots: Vec<T>,
    free: Vec<u32>,
}

impl<T: Default + Clone> Pool<T> {
    /// Allocates `capacity` slots up front. `capacity` must be below `NIL`.
    pub fn with_capacity(capacity: u32) -> Pool<T> {
        assert!(
            capacity < NIL,
            "pool capacity {capacity} must be below {NIL}"
        );
        Pool {
            slots: vec![T::default(); capacity as usize],
            // Popped from the end: hand out low indices first, for locality.
            free: (0..capacity).rev().collect(),
        }
    }
}

impl<T> Pool<T> {
    /// Takes a free slot, or `None` when the pool is full. Never allocates.
    #[inline(always)]
    pub fn try_alloc(&mut self, value: T) -> Option<u32> {
        let index = self.free.pop()?;
        self.slots[index as usize] = value;
        Some(index)
    }

    /// Returns a slot to the pool. The caller guarantees it is in use.
    #[inline]
    pub fn release(&mut self, index: u32) {
        debug_assert!((index as usize) < self.slots.len());
        debug_assert!(
            self.free.len() < self.slots.len(),
            "double release of {index}"
        );
        // Capacity was reserved for every slot, so this push never allocates.
        self.free.push(index);
    }

    /// Slots still free.
    #[inline]
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Bytes allocated: the slots and the free list.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<T>()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Slots in all, free or not.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Slots in use.
    #[inline]
    pub fn used_count(&self) -> usize {
        self.slots.len() - self.free.len()
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

    #[test]
    fn full_pool_refuses_and_recovers() {
        let mut pool: Pool<u64> = Pool::with_capacity(2);
        let a = pool.try_alloc(1).unwrap();
        let b = pool.try_alloc(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.try_alloc(3), None);
        pool.release(a);
        assert_eq!(pool.free_count(), 1);
        let c = pool.try_alloc(4).unwrap();
        assert_eq!(pool[c], 4);
        assert_eq!(pool.used_count(), 2);
    }
}
