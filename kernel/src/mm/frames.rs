//! The physical frame allocator: one [`FrameBitmap`] behind a lock, filled
//! from the boot memory map.
//!
//! Frames are handed out one at a time (page tables, user pages, stacks) or
//! in runs (heap growth, the AP trampoline). The free count is readable at
//! any time, so tests can prove that a workload gives back every frame it
//! took.
//!
//! Memory that processes can make the kernel take for them — their pages,
//! their page tables, their mailboxes' pages — comes through the
//! `*_for_process` functions, which refuse once taking more would leave
//! fewer free frames than the kernel's reserve ([`reserve`]). A process that
//! asks for all memory therefore gets `OutOfMemory`, and the kernel keeps
//! what its own heap, stacks and clean-up need.

use core::sync::atomic::{AtomicU64, Ordering};

use orrery_frames::{Frame, FrameBitmap};

use crate::{
    arch::{
        paging::{self, phys_to_virt},
        start_info::{Region, RegionKind},
    },
    sync::SpinLock,
};

static FRAMES: SpinLock<Option<FrameBitmap<&'static mut [u64]>>> = SpinLock::new(None);
/// Copy of the free count, readable without the lock.
static FREE: AtomicU64 = AtomicU64::new(0);
static TOTAL: AtomicU64 = AtomicU64::new(0);
/// Free frames that process memory may not take (see the module doc).
static RESERVE: AtomicU64 = AtomicU64::new(0);

/// The kernel's reserve, in frames, for `usable` frames of memory: a 32nd,
/// at least one growth of the heap (64 frames) and at most 32 MiB.
const fn reserve_for(usable: u64) -> u64 {
    let share = usable / 32;
    if share < 64 {
        64
    } else if share > 8192 {
        8192
    } else {
        share
    }
}

/// Memory below this is never handed out: real-mode structures, the AP
/// start-up page, and firmware areas.
const LOW_MEMORY_END: u64 = 1 << 20;

/// What [`init`] found.
#[derive(Clone, Copy, Debug)]
pub struct MemorySummary {
    /// One past the highest usable physical address.
    pub physical_end: u64,
    /// Usable frames handed to the allocator.
    pub usable_frames: u64,
    /// Frames of the bitmap itself.
    pub bitmap_frames: u64,
}

/// Builds the allocator from the memory map. The kernel image (`image_start
/// .. image_end`, physical) and everything below 1 MiB stay reserved. Runs on
/// the boot page tables, which map the first 4 GiB at the physical window.
pub fn init(regions: impl Iterator<Item = Region> + Clone, image_start: u64, image_end: u64) -> MemorySummary {
    let usable = regions.clone().filter(|region| region.kind == RegionKind::Usable);
    let physical_end = usable.clone().map(|region| region.start + region.size).max().unwrap_or(0);
    let frame_count = physical_end.div_ceil(Frame::SIZE);
    let words = FrameBitmap::<&mut [u64]>::storage_words(frame_count);
    let bitmap_bytes = (words * 8) as u64;
    let bitmap_frames = bitmap_bytes.div_ceil(Frame::SIZE);
    // The bitmap goes in the first usable stretch above the image that holds
    // it and is reachable through the boot mapping (below 4 GiB).
    let storage_start = usable
        .clone()
        .filter_map(|region| {
            let start = region.start.max(image_end).max(LOW_MEMORY_END).next_multiple_of(Frame::SIZE);
            let end = region.start + region.size;
            (start + bitmap_frames * Frame::SIZE <= end.min(4 << 30)).then_some(start)
        })
        .next()
        .expect("no room for the frame bitmap below 4 GiB");
    // SAFETY: the range is usable RAM that nothing else uses (it is reserved
    // below before any frame is handed out), mapped by the boot tables.
    let storage = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(storage_start) as *mut u64, words) };
    let mut bitmap = FrameBitmap::new(storage, Frame(0), frame_count).expect("sized by storage_words");
    for region in usable {
        let first = region.start.div_ceil(Frame::SIZE);
        let end = (region.start + region.size) / Frame::SIZE;
        if end > first {
            bitmap.add_free(Frame(first), end - first);
        }
    }
    bitmap.reserve(Frame(0), LOW_MEMORY_END / Frame::SIZE);
    let image_first = image_start / Frame::SIZE;
    bitmap.reserve(Frame(image_first), image_end.div_ceil(Frame::SIZE) - image_first);
    bitmap.reserve(Frame::containing(storage_start), bitmap_frames);
    let free = bitmap.free_count();
    FREE.store(free, Ordering::Relaxed);
    TOTAL.store(free, Ordering::Relaxed);
    RESERVE.store(reserve_for(free), Ordering::Relaxed);
    *FRAMES.lock() = Some(bitmap);
    PHYSICAL_END.store(physical_end, Ordering::Relaxed);
    MemorySummary { physical_end, usable_frames: free, bitmap_frames }
}

/// Takes one frame, or `None` when memory is exhausted.
pub fn allocate() -> Option<Frame> {
    take(1, None)
}

/// Takes one frame and fills it with zeros.
pub fn allocate_zeroed() -> Option<Frame> {
    allocate().map(zeroed)
}

/// Takes `count` physically contiguous frames aligned to `align` frames.
pub fn allocate_contiguous(count: u64, align: u64) -> Option<Frame> {
    take(count, Some(align))
}

/// Free frames that process memory may not take: what the kernel keeps for
/// its heap, stacks and clean-up when processes ask for everything.
pub fn reserve() -> u64 {
    RESERVE.load(Ordering::Relaxed)
}

/// True while there is room for the kernel records a process asks for (a
/// process record, a thread and its state, a mailbox, a mapping's entry):
/// free frames above the [`reserve`] by one growth of the heap per CPU, so
/// that heap those records make it take comes out of process memory, not
/// out of the reserve. Checked where a process makes the kernel create
/// such records; `OutOfMemory` otherwise.
pub fn room_for_process_records() -> bool {
    let margin = super::heap::GROWTH_FRAMES * crate::arch::smp::cpu_count() as u64;
    FREE.load(Ordering::Relaxed) >= RESERVE.load(Ordering::Relaxed).saturating_add(margin)
}

/// [`allocate`] for process memory: `None` also when the frame would come
/// out of the kernel's [`reserve`].
pub fn allocate_for_process() -> Option<Frame> {
    take_for_process(1, None)
}

/// [`allocate_zeroed`] for process memory (see [`allocate_for_process`]).
pub fn allocate_zeroed_for_process() -> Option<Frame> {
    allocate_for_process().map(zeroed)
}

/// [`allocate_contiguous`] for process memory (see [`allocate_for_process`]).
pub fn allocate_contiguous_for_process(count: u64, align: u64) -> Option<Frame> {
    take_for_process(count, Some(align))
}

/// [`take`] while the reserve stays intact (checked under the lock, where
/// the free count is exact).
fn take_for_process(count: u64, align: Option<u64>) -> Option<Frame> {
    let mut guard = FRAMES.lock();
    if FREE.load(Ordering::Relaxed) < RESERVE.load(Ordering::Relaxed).saturating_add(count) {
        return None;
    }
    take_locked(guard.as_mut()?, count, align)
}

/// Takes `count` frames: one, or a run aligned to `align` frames.
#[inline(always)]
fn take(count: u64, align: Option<u64>) -> Option<Frame> {
    take_locked(FRAMES.lock().as_mut()?, count, align)
}

#[inline(always)]
fn take_locked(bitmap: &mut FrameBitmap<&'static mut [u64]>, count: u64, align: Option<u64>) -> Option<Frame> {
    let frame = match align {
        None => bitmap.allocate()?,
        Some(align) => bitmap.allocate_contiguous(count, align)?,
    };
    FREE.fetch_sub(count, Ordering::Relaxed);
    Some(frame)
}

/// Fills a frame just taken with zeros.
fn zeroed(frame: Frame) -> Frame {
    // SAFETY: the frame was just allocated, so nothing else refers to it,
    // and the physical window maps it.
    unsafe { core::ptr::write_bytes(phys_to_virt(frame.address()) as *mut u8, 0, Frame::SIZE as usize) };
    frame
}

/// Gives a frame back. A double free or a frame the allocator never managed
/// is a kernel bug, and stops the kernel with the frame's address.
pub fn deallocate(frame: Frame) {
    let mut guard = FRAMES.lock();
    let bitmap = guard.as_mut().expect("frame allocator not initialised");
    if let Err(error) = bitmap.deallocate(frame) {
        drop(guard);
        panic!("frame allocator: {error}");
    }
    FREE.fetch_add(1, Ordering::Relaxed);
}

/// Makes frames that were reserved at boot (the boot code, the loader's
/// images) available. Returns how many became free.
pub fn release_boot_frames(first: Frame, count: u64) -> u64 {
    let mut guard = FRAMES.lock();
    let added = guard.as_mut().map_or(0, |bitmap| bitmap.add_free(first, count));
    FREE.fetch_add(added, Ordering::Relaxed);
    TOTAL.fetch_add(added, Ordering::Relaxed);
    added
}

/// Frames free right now.
pub fn free_count() -> u64 {
    FREE.load(Ordering::Relaxed)
}

/// End of physical RAM (the highest usable address, exclusive).
pub fn physical_end() -> u64 {
    PHYSICAL_END.load(Ordering::Relaxed)
}

static PHYSICAL_END: AtomicU64 = AtomicU64::new(0);

/// Frames the allocator manages in all (free or in use).
pub fn total_count() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// True when `frame` is free (for tests).
pub fn is_free(frame: Frame) -> bool {
    FRAMES.lock().as_ref().is_some_and(|bitmap| bitmap.is_free(frame))
}

/// Kernel-virtual address of a frame's first byte.
pub fn frame_pointer(frame: Frame) -> *mut u8 {
    paging::phys_to_virt(frame.address()) as *mut u8
}

/// Frames that more than one address space may map, none of them owning
/// them (a mailbox's pages, pages a parent shared with a child): each space
/// that maps some holds a reference (`AddressSpace::keep`), and the frames
/// go back to the allocator when the last reference is dropped, which the
/// spaces do only once their mappings of the frames are gone.
pub struct SharedFrames {
    frames: alloc::vec::Vec<Frame>,
}

impl SharedFrames {
    /// Takes ownership of `frames`, which nothing may own any more (no page
    /// table entry maps them with [`paging::OWNED`]).
    pub fn new(frames: alloc::vec::Vec<Frame>) -> alloc::sync::Arc<Self> {
        alloc::sync::Arc::new(Self { frames })
    }

    /// The frames, in the order given.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }
}

impl Drop for SharedFrames {
    fn drop(&mut self) {
        self.frames.drain(..).for_each(deallocate);
    }
}
