//! The heap: `talc`, growing by memory from `map_memory`.
//!
//! A process is single-threaded (one user thread), so the lock only guards
//! against re-entry; a spin lock costs nothing uncontended.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicBool, Ordering};

use talc::{OomHandler, Span, Talc};

use crate::sys;

/// Smallest step the heap grows by.
const GROWTH_BYTES: u64 = 64 * 1024;

struct GrowByMapping;

impl OomHandler for GrowByMapping {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let needed = (layout.size() + layout.align() + 64) as u64;
        let length = needed.max(GROWTH_BYTES).next_multiple_of(4096);
        let address = sys::map_memory(length, true).map_err(|_| ())?;
        // SAFETY: the kernel just mapped `length` zeroed, writable bytes at
        // `address` for this process alone.
        unsafe { talc.claim(Span::from_base_size(address as *mut u8, length as usize)).map(|_| ()) }
    }
}

struct Heap {
    busy: AtomicBool,
    talc: core::cell::UnsafeCell<Talc<GrowByMapping>>,
}

// SAFETY: access to `talc` is serialised by `busy`.
unsafe impl Sync for Heap {}

impl Heap {
    fn with<R>(&self, f: impl FnOnce(&mut Talc<GrowByMapping>) -> R) -> R {
        while self.busy.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // SAFETY: `busy` is held, so this is the only reference.
        let result = f(unsafe { &mut *self.talc.get() });
        self.busy.store(false, Ordering::Release);
        result
    }
}

// SAFETY: talc is a correct allocator and `with` serialises it.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the GlobalAlloc contract.
        self.with(|talc| unsafe { talc.malloc(layout) }.map_or(null_mut(), |pointer| pointer.as_ptr()))
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the GlobalAlloc contract.
        self.with(|talc| unsafe { talc.free(NonNull::new_unchecked(pointer), layout) })
    }
}

#[global_allocator]
static HEAP: Heap = Heap { busy: AtomicBool::new(false), talc: core::cell::UnsafeCell::new(Talc::new(GrowByMapping)) };
