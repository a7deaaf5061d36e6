//! Process-context identifiers (PCIDs) for switching address spaces without
//! flushing the TLB: the decision part, apart from the `mov cr3`.
//!
//! With PCID, x86_64 tags each cached translation with the 12-bit id in the
//! low bits of CR3, and a CR3 write with bit 63 set keeps the cached
//! translations of the id it loads. An id can then stand for one address
//! space at a time on one CPU: loading a space under an id whose cached
//! translations may belong to anything else — another space, or this space
//! before it unmapped something — must flush that id.
//!
//! Each CPU keeps an [`AsidCache`]: a few slots, each remembering which
//! address space (by a never-reused 64-bit id) it last held and at which
//! unmap generation. [`AsidCache::load`] gives the CR3 value for a switch:
//!
//! - the kernel's space (`space == 0`) always runs under PCID 0 with the
//!   no-flush bit: its mappings are global or shot down on every CPU when
//!   removed;
//! - a space that still owns its slot at the same generation gets its old
//!   id with the no-flush bit;
//! - a space that owns its slot but unmapped something since (the
//!   generation moved) gets its id flushed;
//! - a space with no slot takes the next slot in turn, flushed.
//!
//! The generation is the space's count of unmaps. An unmap bumps it and
//! shoots down the CPUs that have the space loaded; a CPU that holds the
//! space only in a slot finds the generation moved at its next load and
//! flushes then. That is what makes the no-flush bit safe; the property
//! tests check it against a model of the TLB.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// CR3 bit 63: keep the cached translations of the PCID being loaded.
pub const NO_FLUSH: u64 = 1 << 63;

/// Slots (PCIDs `1..=SLOTS`) per CPU in the kernel's cache.
pub const SLOTS: usize = 12;

/// The kernel's address space: PCID 0, never flushed by a switch.
pub const KERNEL_SPACE: u64 = 0;

/// What one slot last held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// The space (`EMPTY`: none yet).
    space: u64,
    /// Its unmap generation when it was last loaded.
    generation: u64,
}

/// A slot that never held a space.
const EMPTY: u64 = u64::MAX;

/// One CPU's PCID slots (`N` of them, PCIDs `1..=N`; `N` below 4096).
#[derive(Clone, Debug)]
pub struct AsidCache<const N: usize = SLOTS> {
    slots: [Slot; N],
    next_victim: usize,
}

impl<const N: usize> Default for AsidCache<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> AsidCache<N> {
    const FITS: () = assert!(N > 0 && N < 4096, "PCIDs are 12 bits, and 0 is the kernel's");

    /// A cache whose slots hold nothing.
    pub const fn new() -> Self {
        let () = Self::FITS;
        Self { slots: [Slot { space: EMPTY, generation: 0 }; N], next_victim: 0 }
    }

    /// The CR3 value that loads page-table root `root` (4 KiB aligned) of
    /// address space `space` at unmap generation `generation`, and notes
    /// that the space now holds its slot at that generation. `space` is
    /// [`KERNEL_SPACE`] for the kernel's own tables; any other id must never
    /// be reused for another space (and must not be `u64::MAX`).
    pub fn load(&mut self, root: u64, space: u64, generation: u64) -> u64 {
        if space == KERNEL_SPACE {
            return root | NO_FLUSH;
        }
        if let Some(index) = self.slots.iter().position(|slot| slot.space == space) {
            let slot = &mut self.slots[index];
            let keep = if slot.generation == generation { NO_FLUSH } else { 0 };
            slot.generation = generation;
            return root | pcid(index) | keep;
        }
        let index = self.next_victim;
        self.next_victim = (index + 1) % N;
        self.slots[index] = Slot { space, generation };
        root | pcid(index)
    }

    /// The PCID `space` holds here, if any.
    pub fn pcid_of(&self, space: u64) -> Option<u64> {
        if space == KERNEL_SPACE {
            return Some(0);
        }
        self.slots.iter().position(|slot| slot.space == space).map(pcid)
    }
}

/// The PCID of slot `index`.
const fn pcid(index: usize) -> u64 {
    index as u64 + 1
}

/// The PCID field of a CR3 value (bits 0..12).
pub const fn pcid_in(cr3: u64) -> u64 {
    cr3 & 0xfff
}

#[cfg(test)]
mod tests;
