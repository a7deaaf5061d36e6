//! The kernel heap: `talc` behind the kernel's interrupt-masking lock,
//! growing by whole runs of frames taken from the frame allocator.
//!
//! The heap never gives frames back; its growth is bounded by the largest
//! live set. Tests that check for leaks therefore read both the frame count
//! and [`allocated_bytes`].

use core::{
    alloc::{GlobalAlloc, Layout},
    ptr::{NonNull, null_mut},
};

use talc::{OomHandler, Span, Talc};

use super::frames;
use crate::{arch::paging::phys_to_virt, sync::SpinLock};

/// Smallest step the heap grows by.
const GROWTH_FRAMES: u64 = 64;

struct GrowFromFrames;

impl OomHandler for GrowFromFrames {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let needed = (layout.size() + layout.align() + 64).div_ceil(4096) as u64;
        let count = needed.max(GROWTH_FRAMES);
        let first = frames::allocate_contiguous(count, 1).ok_or(())?;
        let base = phys_to_virt(first.address()) as *mut u8;
        // SAFETY: the frames were just allocated for the heap alone and are
        // mapped read-write through the physical window.
        unsafe { talc.claim(Span::from_base_size(base, (count * 4096) as usize)).map(|_| ()) }
    }
}

struct KernelHeap(SpinLock<Talc<GrowFromFrames>>);

// SAFETY: talc implements a correct allocator; the lock serialises it, and
// it masks interrupts so an interrupt handler cannot re-enter it.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the GlobalAlloc contract.
        unsafe { self.0.lock().malloc(layout) }.map_or(null_mut(), |pointer| pointer.as_ptr())
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the GlobalAlloc contract: `pointer` came from
        // `alloc` with `layout`.
        unsafe { self.0.lock().free(NonNull::new_unchecked(pointer), layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let mut heap = self.0.lock();
        // SAFETY: forwarded from the GlobalAlloc contract.
        unsafe {
            let pointer = NonNull::new_unchecked(pointer);
            if new_size <= layout.size() {
                heap.shrink(pointer, layout, new_size);
                pointer.as_ptr()
            } else {
                heap.grow(pointer, layout, new_size).map_or(null_mut(), |grown| grown.as_ptr())
            }
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(SpinLock::new(Talc::new(GrowFromFrames)));

/// Bytes currently allocated on the heap (by layout size).
pub fn allocated_bytes() -> usize {
    HEAP.0.lock().get_counters().allocated_bytes
}

/// Bytes the heap has claimed from the frame allocator.
pub fn claimed_bytes() -> usize {
    HEAP.0.lock().get_counters().claimed_bytes
}

/// Live allocations.
pub fn allocation_count() -> usize {
    HEAP.0.lock().get_counters().allocation_count
}
