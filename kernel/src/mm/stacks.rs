//! Kernel stacks: fixed-size stacks in their own region, each with an
//! unmapped guard area below it, so an overflow faults instead of silently
//! overwriting whatever lies below.
//!
//! The stack region ([`KERNEL_STACKS_BASE`]) is cut into 64 KiB slots: the
//! lower 32 KiB of a slot stay unmapped (the guard), the upper 32 KiB are the
//! stack. Freed stacks are kept mapped in a small cache, so spawning a thread
//! usually costs no page-table work and no TLB shoot-down; a stack that
//! leaves the cache is unmapped, its frames freed, and every CPU told to
//! drop the stale translations before its slot is used again.

use alloc::vec::Vec;
use core::{cell::UnsafeCell, ops::Range};

use orrery_frames::Frame;

use super::frames;
use crate::{
    arch::paging::{self, Access, KERNEL_STACKS_BASE, KERNEL_STACKS_SIZE, PAGE_SIZE},
    sync::SpinLock,
};

/// Usable bytes of every kernel stack.
pub const STACK_SIZE: u64 = 32 * 1024;
/// Bytes of address space per stack, guard included.
pub const SLOT_SIZE: u64 = 64 * 1024;
/// Stacks kept mapped for reuse.
pub const CACHE_LIMIT: usize = 64;
const SLOT_COUNT: u64 = KERNEL_STACKS_SIZE / SLOT_SIZE;

/// Why a stack could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// No frame was left for the stack or its page tables.
    OutOfMemory,
    /// Every slot of the stack region is in use.
    OutOfSlots,
}

struct Slots {
    free: Vec<u32>,
    next_unused: u64,
    cache: Vec<u32>,
}

static SLOTS: SpinLock<Slots> = SpinLock::new(Slots { free: Vec::new(), next_unused: 0, cache: Vec::new() });

/// A guarded kernel stack; freed (or cached) on drop.
pub struct KernelStack {
    slot: u32,
}

impl KernelStack {
    /// A stack from the cache, or a freshly mapped one.
    pub fn new() -> Result<Self, StackError> {
        let (slot, fresh) = {
            let mut slots = SLOTS.lock();
            if let Some(slot) = slots.cache.pop() {
                (slot, false)
            } else if let Some(slot) = slots.free.pop() {
                (slot, true)
            } else if slots.next_unused < SLOT_COUNT {
                slots.next_unused += 1;
                ((slots.next_unused - 1) as u32, true)
            } else {
                return Err(StackError::OutOfSlots);
            }
        };
        let stack = KernelStack { slot };
        if fresh && let Err(error) = stack.map_pages() {
            stack.unmap_pages();
            SLOTS.lock().free.push(slot);
            core::mem::forget(stack);
            return Err(error);
        }
        Ok(stack)
    }

    fn map_pages(&self) -> Result<(), StackError> {
        let mut address = self.bottom();
        while address < self.top() {
            let frame = frames::allocate().ok_or(StackError::OutOfMemory)?;
            // SAFETY: the slot belongs to this stack alone (the slot
            // allocator hands each out once), so nothing else maps the page.
            if unsafe { paging::map_kernel_page(address, frame, Access::KERNEL_DATA, true) }.is_err() {
                frames::deallocate(frame);
                return Err(StackError::OutOfMemory);
            }
            address += PAGE_SIZE;
        }
        Ok(())
    }

    fn unmap_pages(&self) {
        let mut address = self.bottom();
        while address < self.top() {
            // SAFETY: the stack is dead (being freed) and only it mapped the slot.
            if let Some((frame, owned)) = unsafe { paging::unmap_kernel_page(address) }
                && owned
            {
                frames::deallocate(frame);
            }
            address += PAGE_SIZE;
        }
    }

    /// One past the highest byte: the initial stack pointer.
    pub fn top(&self) -> u64 {
        KERNEL_STACKS_BASE + (u64::from(self.slot) + 1) * SLOT_SIZE
    }

    /// The lowest usable byte.
    pub fn bottom(&self) -> u64 {
        self.top() - STACK_SIZE
    }

    /// The unmapped addresses right below the stack.
    pub fn guard(&self) -> Range<u64> {
        self.top() - SLOT_SIZE..self.bottom()
    }
}

impl KernelStack {
    /// Puts the stack back in the cache if there is room (cheap: no page
    /// tables, no shoot-down); hands it back otherwise, for the caller to
    /// drop where a shoot-down may run.
    pub fn try_cache(self) -> Result<(), KernelStack> {
        let mut slots = SLOTS.lock();
        if slots.cache.len() < CACHE_LIMIT {
            slots.cache.push(self.slot);
            drop(slots);
            core::mem::forget(self);
            Ok(())
        } else {
            drop(slots);
            Err(self)
        }
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        {
            let mut slots = SLOTS.lock();
            if slots.cache.len() < CACHE_LIMIT {
                slots.cache.push(self.slot);
                return;
            }
        }
        self.unmap_pages();
        crate::arch::smp::flush_kernel_range(self.bottom()..self.top());
        SLOTS.lock().free.push(self.slot);
    }
}

/// Unmaps every cached stack and frees its frames (for leak tests, and when
/// memory runs low). Returns how many stacks were released.
pub fn trim_cache() -> usize {
    let cached = core::mem::take(&mut SLOTS.lock().cache);
    let count = cached.len();
    for slot in &cached {
        let stack = KernelStack { slot: *slot };
        stack.unmap_pages();
        core::mem::forget(stack);
    }
    if count > 0 {
        crate::arch::smp::flush_kernel_range(KERNEL_STACKS_BASE..KERNEL_STACKS_BASE + KERNEL_STACKS_SIZE);
    }
    SLOTS.lock().free.extend(cached);
    count
}

/// A stack inside the kernel image (`.bss`) with a guard page below it that
/// the kernel's page tables leave unmapped; for CPU 0's boot and
/// fault-handling stacks, which are needed before the allocator runs.
#[repr(C, align(4096))]
pub struct StaticStack<const SIZE: usize> {
    guard: [u8; 4096],
    stack: UnsafeCell<[u8; SIZE]>,
}

// SAFETY: the stack's memory is only used as a CPU stack, by one CPU.
unsafe impl<const SIZE: usize> Sync for StaticStack<SIZE> {}

impl<const SIZE: usize> StaticStack<SIZE> {
    /// A zeroed stack.
    pub const fn new() -> Self {
        Self { guard: [0; 4096], stack: UnsafeCell::new([0; SIZE]) }
    }

    /// The initial stack pointer.
    pub fn top(&self) -> u64 {
        self.stack.get() as u64 + SIZE as u64
    }

    /// Address of the guard page.
    pub fn guard_page(&self) -> u64 {
        self.guard.as_ptr() as u64
    }
}

impl<const SIZE: usize> Default for StaticStack<SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

/// CPU 0's stack for double faults.
pub static BOOT_DOUBLE_FAULT_STACK: StaticStack<16384> = StaticStack::new();
/// CPU 0's stack for NMIs.
pub static BOOT_NMI_STACK: StaticStack<16384> = StaticStack::new();
/// CPU 0's stack for machine checks.
pub static BOOT_MACHINE_CHECK_STACK: StaticStack<16384> = StaticStack::new();

/// Guard pages inside the kernel image, to leave unmapped.
pub fn static_guard_pages() -> [u64; 4] {
    [
        BOOT_DOUBLE_FAULT_STACK.guard_page(),
        BOOT_NMI_STACK.guard_page(),
        BOOT_MACHINE_CHECK_STACK.guard_page(),
        // The lowest page of the boot stack.
        &raw const crate::arch::boot::BOOT_STACK as u64,
    ]
}

/// True when `address` falls in the guard area of any kernel stack.
pub fn is_guard_page(address: u64) -> bool {
    if (KERNEL_STACKS_BASE..KERNEL_STACKS_BASE + KERNEL_STACKS_SIZE).contains(&address) {
        return (address - KERNEL_STACKS_BASE) % SLOT_SIZE < SLOT_SIZE - STACK_SIZE;
    }
    let page = address & !(PAGE_SIZE - 1);
    static_guard_pages().contains(&page)
}

/// Frames held by cached stacks (part of the free-frame accounting in tests).
pub fn cached_frames() -> u64 {
    SLOTS.lock().cache.len() as u64 * (STACK_SIZE / Frame::SIZE)
}
