//! Bookkeeping of free physical frames: a two-level bitmap.
//!
//! The kernel's frame allocator (`kernel/src/mm/frames.rs`) wraps one
//! [`FrameBitmap`] in a lock and feeds it the boot memory map. This crate only
//! does the arithmetic, so it is tested on the host. It never allocates: the
//! caller hands it storage (the kernel carves it out of boot memory, before a
//! heap exists), sized by [`FrameBitmap::storage_words`].
//!
//! One bit per frame, set when the frame is free. A summary bitmap above it
//! has one bit per bitmap word, set when that word has any free frame, so
//! finding a free frame touches two words however fragmented memory is.
//! Allocation resumes at the bitmap word of the previous allocation, so a run
//! of allocations walks memory forward instead of rescanning its start.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// Frames per bitmap word.
const BITS: u64 = 64;

/// A physical frame, by number: its address divided by 4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frame(pub u64);

impl Frame {
    /// Size of a frame in bytes.
    pub const SIZE: u64 = 4096;

    /// The frame holding physical address `address`.
    pub const fn containing(address: u64) -> Self {
        Frame(address / Self::SIZE)
    }

    /// Physical address of the frame's first byte.
    pub const fn address(self) -> u64 {
        self.0 * Self::SIZE
    }
}

/// Errors of the frame bitmap; each keeps the frame it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is outside the range this bitmap manages.
    OutOfRange(Frame),
    /// Freeing a frame that is already free: a double free in the caller.
    AlreadyFree(Frame),
    /// The storage given is smaller than [`FrameBitmap::storage_words`] asks.
    StorageTooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        given: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::OutOfRange(frame) => {
                write!(f, "frame {:#x} is outside managed memory", frame.address())
            }
            FrameError::AlreadyFree(frame) => write!(f, "frame {:#x} freed twice", frame.address()),
            FrameError::StorageTooSmall { needed, given } => {
                write!(f, "frame bitmap needs {needed} words of storage, given {given}")
            }
        }
    }
}

/// Free-frame bitmap over frames `first .. first + count`.
///
/// All frames start out allocated; [`FrameBitmap::add_free`] makes usable
/// memory available.
pub struct FrameBitmap<S> {
    storage: S,
    first: u64,
    count: u64,
    words: usize,
    free: u64,
    hint: usize,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> FrameBitmap<S> {
    /// Words of storage needed to manage `count` frames.
    pub const fn storage_words(count: u64) -> usize {
        let words = count.div_ceil(BITS) as usize;
        words + words.div_ceil(BITS as usize)
    }

    /// Creates a bitmap over `count` frames starting at `first`, all of them
    /// allocated, in `storage`.
    pub fn new(mut storage: S, first: Frame, count: u64) -> Result<Self, FrameError> {
        let needed = Self::storage_words(count);
        let given = storage.as_ref().len();
        if given < needed {
            return Err(FrameError::StorageTooSmall { needed, given });
        }
        storage.as_mut()[..needed].fill(0);
        Ok(Self { storage, first: first.0, count, words: count.div_ceil(BITS) as usize, free: 0, hint: 0 })
    }

    /// Number of frames currently free.
    pub fn free_count(&self) -> u64 {
        self.free
    }

    /// Number of frames managed, free or not.
    pub fn capacity(&self) -> u64 {
        self.count
    }

    /// The first frame managed.
    pub fn first(&self) -> Frame {
        Frame(self.first)
    }

    /// Marks `first .. first + count` free, skipping frames outside the
    /// managed range and frames already free. Returns how many became free.
    pub fn add_free(&mut self, first: Frame, count: u64) -> u64 {
        let start = first.0.max(self.first);
        let end = first.0.saturating_add(count).min(self.first + self.count);
        let mut added = 0;
        for number in start..end {
            let index = number - self.first;
            if !self.bit(index) {
                self.set(index, true);
                added += 1;
            }
        }
        self.free += added;
        added
    }

    /// Marks `first .. first + count` allocated (firmware tables, the kernel
    /// image). Returns how many were free before.
    pub fn reserve(&mut self, first: Frame, count: u64) -> u64 {
        let start = first.0.max(self.first);
        let end = first.0.saturating_add(count).min(self.first + self.count);
        let mut taken = 0;
        for number in start..end {
            let index = number - self.first;
            if self.bit(index) {
                self.set(index, false);
                taken += 1;
            }
        }
        self.free -= taken;
        taken
    }

    /// Takes one free frame.
    pub fn allocate(&mut self) -> Option<Frame> {
        if self.free == 0 {
            return None;
        }
        let word = self.find_word(self.hint)?;
        let bits = self.storage.as_ref()[word];
        let bit = bits.trailing_zeros() as u64;
        let index = word as u64 * BITS + bit;
        self.set(index, false);
        self.free -= 1;
        self.hint = word;
        Some(Frame(self.first + index))
    }

    /// Takes `count` free frames in a row whose first frame number is a
    /// multiple of `align` (a power of two; 0 and 1 mean no alignment).
    pub fn allocate_contiguous(&mut self, count: u64, align: u64) -> Option<Frame> {
        if count == 0 || count > self.free {
            return None;
        }
        let align = align.max(1);
        if !align.is_power_of_two() {
            return None;
        }
        // Align absolute frame numbers, not indices, since callers care about
        // physical alignment.
        let mut number = self.first.next_multiple_of(align);
        let end = self.first + self.count;
        while number + count <= end {
            let index = number - self.first;
            match (0..count).find(|offset| !self.bit(index + offset)) {
                None => {
                    for offset in 0..count {
                        self.set(index + offset, false);
                    }
                    self.free -= count;
                    return Some(Frame(number));
                }
                Some(used) => {
                    number = (number + used + 1).next_multiple_of(align);
                }
            }
        }
        None
    }

    /// Gives `frame` back. Freeing a frame twice is reported, not absorbed.
    pub fn deallocate(&mut self, frame: Frame) -> Result<(), FrameError> {
        let index = self.index_of(frame)?;
        if self.bit(index) {
            return Err(FrameError::AlreadyFree(frame));
        }
        self.set(index, true);
        self.free += 1;
        Ok(())
    }

    /// True when `frame` is managed here and free.
    pub fn is_free(&self, frame: Frame) -> bool {
        self.index_of(frame).is_ok_and(|index| self.bit(index))
    }

    fn index_of(&self, frame: Frame) -> Result<u64, FrameError> {
        frame.0.checked_sub(self.first).filter(|index| *index < self.count).ok_or(FrameError::OutOfRange(frame))
    }

    fn bit(&self, index: u64) -> bool {
        self.storage.as_ref()[(index / BITS) as usize] & (1 << (index % BITS)) != 0
    }

    fn set(&mut self, index: u64, free: bool) {
        let word = (index / BITS) as usize;
        let words = self.words;
        let storage = self.storage.as_mut();
        if free {
            storage[word] |= 1 << (index % BITS);
        } else {
            storage[word] &= !(1 << (index % BITS));
        }
        let summary_bit = 1u64 << (word as u64 % BITS);
        let nonzero = storage[word] != 0;
        let summary = &mut storage[words + word / BITS as usize];
        if nonzero {
            *summary |= summary_bit;
        } else {
            *summary &= !summary_bit;
        }
    }

    /// First word at or after `start` (wrapping) that has a free frame.
    fn find_word(&self, start: usize) -> Option<usize> {
        let storage = self.storage.as_ref();
        let summary = &storage[self.words..self.words + self.words.div_ceil(BITS as usize)];
        let start_summary = start / BITS as usize;
        // Bits at or above `start` in its summary word, then the following
        // summary words, then wrap around to the beginning.
        let first = summary[start_summary] & (!0u64 << (start as u64 % BITS));
        if first != 0 {
            return Some(start_summary * BITS as usize + first.trailing_zeros() as usize);
        }
        let after = (start_summary + 1..summary.len()).chain(0..=start_summary);
        for summary_index in after {
            let bits = summary[summary_index];
            if bits != 0 {
                return Some(summary_index * BITS as usize + bits.trailing_zeros() as usize);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::{collections::BTreeSet, vec, vec::Vec};

    fn bitmap(first: u64, count: u64) -> FrameBitmap<Vec<u64>> {
        let storage = vec![0; FrameBitmap::<Vec<u64>>::storage_words(count)];
        FrameBitmap::new(storage, Frame(first), count).unwrap()
    }

    #[test]
    fn starts_full_and_grows_with_free_ranges() {
        let mut frames = bitmap(256, 1000);
        assert_eq!(frames.free_count(), 0);
        assert_eq!(frames.allocate(), None);
        assert_eq!(frames.add_free(Frame(300), 10), 10);
        assert_eq!(frames.add_free(Frame(305), 10), 5, "overlap counted once");
        assert_eq!(frames.add_free(Frame(0), 300), 44, "clipped to the managed range");
        assert_eq!(frames.free_count(), 59);
        assert_eq!(frames.reserve(Frame(300), 2), 2);
        assert_eq!(frames.free_count(), 57);
    }

    #[test]
    fn storage_too_small_is_an_error() {
        let result = FrameBitmap::new(vec![0u64; 1], Frame(0), 1000);
        assert!(matches!(result, Err(FrameError::StorageTooSmall { needed: 17, given: 1 })));
    }

    #[test]
    fn allocate_and_free_without_double_hand_out() {
        let mut frames = bitmap(0, 4096);
        frames.add_free(Frame(0), 4096);
        let mut seen = BTreeSet::new();
        while let Some(frame) = frames.allocate() {
            assert!(seen.insert(frame), "{frame:?} handed out twice");
        }
        assert_eq!(seen.len(), 4096);
        assert_eq!(frames.free_count(), 0);
        for frame in &seen {
            frames.deallocate(*frame).unwrap();
        }
        assert_eq!(frames.free_count(), 4096);
    }

    #[test]
    fn double_free_and_foreign_frames_are_errors() {
        let mut frames = bitmap(10, 100);
        frames.add_free(Frame(10), 100);
        let frame = frames.allocate().unwrap();
        frames.deallocate(frame).unwrap();
        assert_eq!(frames.deallocate(frame), Err(FrameError::AlreadyFree(frame)));
        assert_eq!(frames.deallocate(Frame(9)), Err(FrameError::OutOfRange(Frame(9))));
        assert_eq!(frames.deallocate(Frame(110)), Err(FrameError::OutOfRange(Frame(110))));
        assert_eq!(frames.free_count(), 100);
    }

    #[test]
    fn contiguous_runs_respect_alignment_and_holes() {
        let mut frames = bitmap(3, 1000);
        frames.add_free(Frame(3), 1000);
        frames.reserve(Frame(16), 1);
        let run = frames.allocate_contiguous(8, 8).unwrap();
        assert_eq!(run, Frame(8));
        let run = frames.allocate_contiguous(16, 16).unwrap();
        assert_eq!(run, Frame(32), "frame 16 is taken, so the first aligned run starts at 32");
        assert_eq!(frames.allocate_contiguous(0, 1), None);
        assert_eq!(frames.allocate_contiguous(4, 3), None, "alignment must be a power of two");
        assert_eq!(frames.allocate_contiguous(2000, 1), None);
        assert_eq!(frames.free_count(), 1000 - 1 - 8 - 16);
    }

    #[test]
    fn allocation_resumes_where_it_left_off() {
        let mut frames = bitmap(0, 512);
        frames.add_free(Frame(0), 512);
        let a = frames.allocate().unwrap();
        frames.deallocate(a).unwrap();
        let b = frames.allocate().unwrap();
        let c = frames.allocate().unwrap();
        assert_eq!((a, b, c), (Frame(0), Frame(0), Frame(1)));
        // Once the hint has moved past a word, frames freed behind it wait
        // until the allocator wraps around.
        let mut frames = bitmap(0, 512);
        frames.add_free(Frame(0), 512);
        let taken: Vec<_> = (0..100).map(|_| frames.allocate().unwrap()).collect();
        frames.deallocate(taken[0]).unwrap();
        assert_eq!(frames.allocate(), Some(Frame(100)));
        let rest: Vec<_> = (0..411).map(|_| frames.allocate().unwrap()).collect();
        assert_eq!(rest.last(), Some(&Frame(511)));
        assert_eq!(frames.allocate(), Some(Frame(0)), "wrapped around to the freed frame");
    }

    proptest::proptest! {
        /// Random allocate/free/contiguous sequences against a set model.
        #[test]
        fn matches_a_set_model(
            first in 0u64..5000,
            count in 1u64..3000,
            operations in proptest::collection::vec((0u8..4, 0u64..3000, 1u64..40), 1..400),
        ) {
            let mut frames = bitmap(first, count);
            frames.add_free(Frame(first), count);
            let mut allocated = BTreeSet::new();
            for (kind, value, size) in operations {
                match kind {
                    0 | 1 => {
                        if let Some(frame) = frames.allocate() {
                            proptest::prop_assert!(frame.0 >= first && frame.0 < first + count);
                            proptest::prop_assert!(allocated.insert(frame), "double hand-out");
                        } else {
                            proptest::prop_assert_eq!(allocated.len() as u64, count);
                        }
                    }
                    2 => {
                        let target = Frame(first + value % count);
                        let result = frames.deallocate(target);
                        if allocated.remove(&target) {
                            proptest::prop_assert_eq!(result, Ok(()));
                        } else {
                            proptest::prop_assert_eq!(result, Err(FrameError::AlreadyFree(target)));
                        }
                    }
                    _ => {
                        let align = 1 << (value % 4);
                        if let Some(start) = frames.allocate_contiguous(size, align) {
                            proptest::prop_assert_eq!(start.0 % align, 0);
                            for offset in 0..size {
                                proptest::prop_assert!(allocated.insert(Frame(start.0 + offset)));
                            }
                        }
                    }
                }
                proptest::prop_assert_eq!(frames.free_count(), count - allocated.len() as u64);
            }
        }
    }
}
