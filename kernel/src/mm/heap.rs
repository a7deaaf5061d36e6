//! The kernel heap: `talc` behind the kernel's interrupt-masking lock,
//! growing by whole runs of frames taken from the frame allocator, with a
//! per-CPU cache of small blocks in front of it.
//!
//! Small allocations (up to 512 bytes, alignment up to 16) are rounded up to
//! a power-of-two size class and served from a per-CPU free list when it has
//! a block: a few instructions with interrupts masked, no lock, no search
//! (the per-CPU "magazines" of Bonwick's slab allocator and Linux's SLUB).
//! Each list holds at most [`CACHE_LIMIT`] blocks; beyond that, and on a
//! miss, blocks go to and come from `talc`. A block freed on another CPU
//! joins that CPU's list.
//!
//! The heap never gives frames back; its growth is bounded by the largest
//! live set. Tests that check for leaks therefore read both the frame count
//! and [`allocated_bytes`].
//!
//! It grows by a physically contiguous run, used through the physical
//! window, when memory has one. When it has none long enough (processes
//! holding frames scattered all over it), the heap takes single frames and
//! maps them one after the other in its own region
//! ([`KERNEL_HEAP_BASE`](crate::arch::paging::KERNEL_HEAP_BASE)), so that a
//! large block (a run queue's arena, a table that doubles) never fails for
//! want of physical contiguity while frames are free.

use core::{
    alloc::{GlobalAlloc, Layout},
    cell::UnsafeCell,
    ptr::{NonNull, null_mut},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use talc::{OomHandler, Span, Talc};

use super::frames;
use crate::{
    arch::{
        cpu::MAX_CPUS,
        cpu_index, interrupts,
        paging::{Access, KERNEL_HEAP_BASE, KERNEL_HEAP_SIZE, map_kernel_page, phys_to_virt, unmap_kernel_page},
    },
    sync::SpinLock,
};

/// Smallest step the heap grows by.
pub const GROWTH_FRAMES: u64 = 64;

struct GrowFromFrames;

impl OomHandler for GrowFromFrames {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let needed = (layout.size() + layout.align() + 64).div_ceil(4096) as u64;
        let count = needed.max(GROWTH_FRAMES);
        // A run of `GROWTH_FRAMES` when memory has one; otherwise (processes
        // holding frames all over it) just what this allocation needs: the
        // heap grows through the physical window, so each claim must be
        // physically contiguous, and a small block must not fail for want
        // of a long run while single frames are free.
        let (base, count, scattered) = match frames::allocate_contiguous(count, 1) {
            Some(first) => (phys_to_virt(first.address()) as *mut u8, count, false),
            None => (map_scattered(needed)?, needed, true),
        };
        // SAFETY: the frames were just allocated for the heap alone and are
        // mapped read-write, through the physical window or in the heap's
        // region.
        match unsafe { talc.claim(Span::from_base_size(base, (count * 4096) as usize)) } {
            Ok(_) => Ok(()),
            Err(()) => {
                // Too small a span for the allocator's bookkeeping: not a
                // reason to lose the frames.
                give_back(base as u64, count, scattered);
                Err(())
            }
        }
    }
}

/// Returns `count` frames the heap took at `base` and could not use.
fn give_back(base: u64, count: u64, scattered: bool) {
    for page in 0..count {
        let address = base + page * 4096;
        if scattered {
            // SAFETY: mapped by `map_scattered` for this growth, unused.
            if let Some((frame, _)) = unsafe { unmap_kernel_page(address) } {
                frames::deallocate(frame);
            }
        } else {
            frames::deallocate(orrery_frames::Frame::containing(address - crate::arch::paging::PHYSMAP_BASE));
        }
    }
    if scattered {
        NEXT_SCATTERED.store(base, Ordering::Relaxed);
    }
}

/// Where the next scattered growth of the heap is mapped (only touched
/// inside the out-of-memory handler, under the heap's lock).
static NEXT_SCATTERED: AtomicU64 = AtomicU64::new(KERNEL_HEAP_BASE);

/// Takes `count` frames one at a time and maps them consecutively in the
/// heap's region; returns where they start. On failure nothing is kept.
fn map_scattered(count: u64) -> Result<*mut u8, ()> {
    let base = NEXT_SCATTERED.load(Ordering::Relaxed);
    if base + count * 4096 > KERNEL_HEAP_BASE + KERNEL_HEAP_SIZE {
        return Err(());
    }
    for page in 0..count {
        let address = base + page * 4096;
        let mapped = frames::allocate().ok_or(()).and_then(|frame| {
            // SAFETY: `address` is in the heap's own region, above
            // everything mapped there so far (the handler runs under the
            // heap's lock, the region's only user).
            unsafe { map_kernel_page(address, frame, Access::KERNEL_DATA, true) }.map_err(|_| frames::deallocate(frame))
        });
        if mapped.is_err() {
            give_back(base, page, true);
            return Err(());
        }
    }
    NEXT_SCATTERED.store(base + count * 4096, Ordering::Relaxed);
    Ok(base as *mut u8)
}

/// Size classes: 16 << class bytes.
const CLASSES: usize = 6;
/// Largest size served from the per-CPU cache.
const LARGEST_CACHED: usize = 16 << (CLASSES - 1);
/// Alignment of every cached block.
const CACHED_ALIGN: usize = 16;
/// Blocks a CPU keeps per class.
pub const CACHE_LIMIT: u32 = 64;

/// The size class of a small layout, if it has one.
#[inline(always)]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST_CACHED || layout.align() > CACHED_ALIGN {
        return None;
    }
    let size = layout.size().max(16);
    Some((usize::BITS - (size - 1).leading_zeros()) as usize - 4)
}

/// The layout `talc` sees for blocks of `class`.
fn class_layout(class: usize) -> Layout {
    // SAFETY: a power of two of at most 512 bytes with alignment 16 is a
    // valid layout.
    unsafe { Layout::from_size_align_unchecked(16 << class, CACHED_ALIGN) }
}

/// A free block on a cache list: its first word links to the next.
struct FreeBlock {
    next: *mut FreeBlock,
}

/// One CPU's lists, touched only by that CPU with interrupts masked.
struct CpuCache {
    heads: UnsafeCell<[*mut FreeBlock; CLASSES]>,
    /// Blocks on each list (atomic so the counters can read them from any
    /// CPU).
    counts: [AtomicU32; CLASSES],
}

// SAFETY: a CPU's lists are used only by that CPU with interrupts masked
// (see `with_cache`); other CPUs only read the atomic counts.
unsafe impl Sync for CpuCache {}

static CACHES: [CpuCache; MAX_CPUS] = [const {
    CpuCache { heads: UnsafeCell::new([null_mut(); CLASSES]), counts: [const { AtomicU32::new(0) }; CLASSES] }
}; MAX_CPUS];

/// Runs `f` on this CPU's cache with interrupts masked (an interrupt
/// handler that allocates cannot interleave).
#[inline(always)]
fn with_cache<R>(f: impl FnOnce(&mut [*mut FreeBlock; CLASSES], &[AtomicU32; CLASSES]) -> R) -> R {
    let saved = interrupts::save_and_disable();
    let cache = &CACHES[cpu_index()];
    // SAFETY: only this CPU touches its lists, and with interrupts masked
    // nothing else on this CPU runs until `f` returns.
    let result = f(unsafe { &mut *cache.heads.get() }, &cache.counts);
    interrupts::restore(saved);
    result
}

/// Blocks sitting in every CPU's cache, and their bytes.
fn cached() -> (usize, usize) {
    let mut blocks = 0;
    let mut bytes = 0;
    for cache in &CACHES {
        for (class, count) in cache.counts.iter().enumerate() {
            let count = count.load(Ordering::Relaxed) as usize;
            blocks += count;
            bytes += count * (16 << class);
        }
    }
    (blocks, bytes)
}

struct KernelHeap(SpinLock<Talc<GrowFromFrames>>);

impl KernelHeap {
    /// An allocation straight from talc.
    ///
    /// # Safety
    /// `layout` has a non-zero size (talc's `malloc` requires it).
    unsafe fn talc_alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size, per this function's contract.
        unsafe { self.0.lock().malloc(layout) }.map_or(null_mut(), |pointer| pointer.as_ptr())
    }
}

// SAFETY: talc implements a correct allocator; the lock serialises it, and
// it masks interrupts so an interrupt handler cannot re-enter it. A cached
// block was allocated from talc with its class's layout, which is at least
// as large and as aligned as any layout of that class, and is on one list
// at a time: handed out, it is off every list.
unsafe impl GlobalAlloc for KernelHeap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc callers pass a non-zero size.
        let Some(class) = class_of(layout) else { return unsafe { self.talc_alloc(layout) } };
        let block = with_cache(|heads, counts| {
            let block = heads[class];
            if !block.is_null() {
                // SAFETY: a listed block is free, ours, and starts with its link.
                heads[class] = unsafe { (*block).next };
                counts[class].store(counts[class].load(Ordering::Relaxed) - 1, Ordering::Relaxed);
            }
            block
        });
        // SAFETY: a size class is at least 16 bytes.
        if block.is_null() { unsafe { self.talc_alloc(class_layout(class)) } } else { block.cast() }
    }

    #[inline]
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout) {
            let kept = with_cache(|heads, counts| {
                let count = counts[class].load(Ordering::Relaxed);
                if count >= CACHE_LIMIT {
                    return false;
                }
                let block = pointer.cast::<FreeBlock>();
                // SAFETY: the block is free now and at least 16 bytes, 16-aligned.
                unsafe { block.write(FreeBlock { next: heads[class] }) };
                heads[class] = block;
                counts[class].store(count + 1, Ordering::Relaxed);
                true
            });
            if !kept {
                // SAFETY: it came from talc with its class's layout.
                unsafe { self.0.lock().free(NonNull::new_unchecked(pointer), class_layout(class)) }
            }
            return;
        }
        // SAFETY: forwarded from the GlobalAlloc contract: `pointer` came from
        // `alloc` with `layout`.
        unsafe { self.0.lock().free(NonNull::new_unchecked(pointer), layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with the old alignment is
        // a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            (None, None) => {
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
            // The block already has room.
            (Some(old), Some(new)) if old == new => pointer,
            _ => {
                // SAFETY: forwarded from the GlobalAlloc contract.
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both blocks are valid for the smaller size and
                    // distinct; the old one is freed once copied.
                    unsafe {
                        core::ptr::copy_nonoverlapping(pointer, moved, layout.size().min(new_size));
                        self.dealloc(pointer, layout);
                    }
                }
                moved
            }
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(SpinLock::new(Talc::new(GrowFromFrames)));

/// Bytes currently allocated on the heap (by layout size; small blocks by
/// their size class), not counting free blocks held in the per-CPU caches.
pub fn allocated_bytes() -> usize {
    let total = HEAP.0.lock().get_counters().allocated_bytes;
    total.saturating_sub(cached().1)
}

/// Bytes the heap has claimed from the frame allocator.
pub fn claimed_bytes() -> usize {
    HEAP.0.lock().get_counters().claimed_bytes
}

/// Frames the heap has claimed from the frame allocator. The heap keeps
/// them (it never gives frames back), so leak checks count
/// `frames::free_count() + claimed_frames()`: memory that is free or heap
/// capacity, and check live allocations separately.
pub fn claimed_frames() -> u64 {
    claimed_bytes() as u64 / 4096
}

/// Live allocations (not counting free blocks held in the per-CPU caches).
pub fn allocation_count() -> usize {
    let total = HEAP.0.lock().get_counters().allocation_count;
    total.saturating_sub(cached().0)
}
