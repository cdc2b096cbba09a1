//! Which owner holds each order slot, for the operations that act on one owner's orders
//! (mass cancel, cancel on disconnect, the operator's cancels) or on every owner's in turn
//! (the close, halts): rare operations, so the hot path pays as little as possible for them.
//!
//! An order joining or leaving the book writes its slot's owner (2 bytes, in a dense array
//! whose recently used part stays in cache: the pool reuses freed slots first) and, on
//! joining, sets a bit for its slot's chunk of [`CHUNK`] slots in its owner's chunk map. It
//! touches no other order, unlike a linked list of the owner's orders, whose neighbours
//! are random cache lines on every cancel (measured: the list's links were 5-20% of
//! `book/cancel`, `book/mixed` and `book/deep`). Enumerating an owner's orders scans the
//! chunks its map names, and forgets chunks that no longer hold any of its orders, so the
//! map stays as tight as the owner's orders are spread.

/// Order slots per chunk: one bit of an owner's chunk map, 128 bytes of `owner_of`.
const CHUNK: usize = 64;

/// `owner_of` of a free slot (owner ids are below `u16::MAX`).
const FREE: u16 = u16::MAX;

/// The owner of every order slot, and per owner the chunks of slots that may hold its
/// orders.
#[derive(Debug)]
pub struct OwnerSlots {
    /// Per slot: the owner of the order in it, or [`FREE`].
    owner_of: Vec<u16>,
    /// `owners * words` words: owner `o`'s chunk map is `o * words..(o + 1) * words`. A
    /// set bit: the chunk may hold some of its orders; a clear bit: it holds none.
    chunks: Vec<u64>,
    words: usize,
}

impl OwnerSlots {
    /// For `owners` owners (fewer than `u16::MAX`) and `slots` order slots.
    pub fn new(owners: usize, slots: u32) -> OwnerSlots {
        assert!(owners < usize::from(FREE), "too many owners: {owners}");
        let words = (slots as usize).div_ceil(CHUNK).div_ceil(64);
        OwnerSlots {
            owner_of: vec![FREE; slots as usize],
            chunks: vec![0; owners * words],
            words,
        }
    }

    /// `slot` now holds an order of `owner`.
    #[inline(always)]
    pub fn add(&mut self, slot: u32, owner: u16) {
        let slot = slot as usize;
        debug_assert_eq!(self.owner_of[slot], FREE, "slot {slot} taken twice");
        self.owner_of[slot] = owner;
        let chunk = slot / CHUNK;
        self.chunks[usize::from(owner) * self.words + chunk / 64] |= 1 << (chunk % 64);
    }

    /// `slot`'s order left the book.
    #[inline]
    pub fn remove(&mut self, slot: u32) {
        debug_assert_ne!(
            self.owner_of[slot as usize], FREE,
            "slot {slot} freed twice"
        );
        self.owner_of[slot as usize] = FREE;
    }

    /// The owner of the order in `slot`, if any.
    pub fn owner_of(&self, slot: u32) -> Option<u16> {
        let owner = self.owner_of[slot as usize];
        (owner != FREE).then_some(owner)
    }

    /// Calls `f` with each slot of `owner`'s orders, in slot order, and forgets the chunks
    /// that hold none of them any more.
    pub fn gather(&mut self, owner: u16, mut f: impl FnMut(u32)) {
        let base = usize::from(owner) * self.words;
        for w in 0..self.words {
            let empty = self.scan_word(owner, w, &mut f);
            self.chunks[base + w] &= !empty;
        }
    }

    /// Calls `f` with each slot of `owner`'s orders, in slot order (forgets nothing).
    pub fn for_each(&self, owner: u16, mut f: impl FnMut(u32)) {
        for w in 0..self.words {
            self.scan_word(owner, w, &mut f);
        }
    }

    /// Calls `f` with `owner`'s slots in the chunks word `w` of its map names; returns the
    /// bits of those chunks that hold none.
    #[inline]
    fn scan_word(&self, owner: u16, w: usize, f: &mut impl FnMut(u32)) -> u64 {
        let mut bits = self.chunks[usize::from(owner) * self.words + w];
        let mut empty = 0;
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let start = (w * 64 + bit) * CHUNK;
            let end = (start + CHUNK).min(self.owner_of.len());
            let mut any = false;
            for (slot, &o) in self.owner_of[start..end].iter().enumerate() {
                if o == owner {
                    f((start + slot) as u32);
                    any = true;
                }
            }
            if !any {
                empty |= 1 << bit;
            }
        }
        empty
    }

    /// Checks that every taken slot's chunk is in its owner's map; returns how many slots
    /// are taken.
    pub fn check(&self) -> Result<usize, String> {
        let mut taken = 0;
        for (slot, &owner) in self.owner_of.iter().enumerate() {
            if owner == FREE {
                continue;
            }
            taken += 1;
            let chunk = slot / CHUNK;
            let word = self
                .chunks
                .get(usize::from(owner) * self.words + chunk / 64)
                .ok_or_else(|| format!("slot {slot}: owner {owner} unknown"))?;
            if word & (1 << (chunk % 64)) == 0 {
                return Err(format!(
                    "slot {slot} of owner {owner}: chunk not in its map"
                ));
            }
        }
        Ok(taken)
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.owner_of.capacity() * 2 + self.chunks.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_each_owners_slots_and_forgets_empty_chunks() {
        let slots = 1_000u32;
        let mut owners = OwnerSlots::new(3, slots);
        let mut model: Vec<Option<u16>> = vec![None; slots as usize];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..50_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let slot = (state % u64::from(slots)) as u32;
            match model[slot as usize] {
                Some(_) => {
                    owners.remove(slot);
                    model[slot as usize] = None;
                }
                None => {
                    let owner = ((state >> 20) % 3) as u16;
                    owners.add(slot, owner);
                    model[slot as usize] = Some(owner);
                }
            }
            if step % 97 == 0 {
                for owner in 0..3u16 {
                    let want: Vec<u32> = (0..slots)
                        .filter(|&s| model[s as usize] == Some(owner))
                        .collect();
                    let mut kept = Vec::new();
                    owners.for_each(owner, |s| kept.push(s));
                    let mut got = Vec::new();
                    owners.gather(owner, |s| got.push(s));
                    assert_eq!(got, want, "owner {owner} at step {step}");
                    assert_eq!(kept, want);
                }
                let taken = model.iter().filter(|o| o.is_some()).count();
                assert_eq!(owners.check(), Ok(taken));
            }
            assert_eq!(owners.owner_of(slot), model[slot as usize]);
        }
        // Emptied: every chunk is forgotten by the next collect.
        for slot in 0..slots {
            if model[slot as usize].is_some() {
                owners.remove(slot);
            }
        }
        for owner in 0..3u16 {
            let mut got = Vec::new();
            owners.gather(owner, |s| got.push(s));
            assert!(got.is_empty());
        }
        assert!(owners.chunks.iter().all(|&w| w == 0));
    }
}
