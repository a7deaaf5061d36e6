//! FPU, SSE and AVX state: saved and restored eagerly, for the threads that
//! use it.
//!
//! The kernel itself is built soft-float and never touches these registers,
//! so a switch between threads that do not use them costs nothing. A thread
//! that does (a kernel thread created with FPU state, and every user
//! context) owns an [`FpuState`] area; the switch saves the outgoing thread's
//! registers into its area and loads the incoming one's. Eager rather than
//! lazy (CR0.TS and #NM): lazy switching saves work only when few threads use
//! the FPU, and it leaks state across contexts speculatively (LazyFP,
//! CVE-2018-3665).

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::arch::asm;

use super::cpu::{features, xsave_area_size};

/// Offset of MXCSR in the legacy (FXSAVE) region.
const MXCSR_OFFSET: usize = 24;
/// MXCSR after reset: all exceptions masked.
const MXCSR_DEFAULT: u32 = 0x1f80;
/// Offset of the x87 control word.
const FCW_OFFSET: usize = 0;
/// x87 control word after `fninit`.
const FCW_DEFAULT: u16 = 0x37f;

/// A 64-byte-aligned XSAVE (or FXSAVE) area.
pub struct FpuState {
    area: *mut u8,
    size: usize,
}

// SAFETY: the area is owned memory, moved with the thread that owns it.
unsafe impl Send for FpuState {}
// SAFETY: shared references do not touch the area.
unsafe impl Sync for FpuState {}

impl FpuState {
    /// An area holding the initial state (every register zero, default
    /// control words); `None` when the heap is exhausted.
    pub fn new() -> Option<Self> {
        let size = xsave_area_size().max(512);
        let layout = Layout::from_size_align(size, 64).ok()?;
        // SAFETY: the layout has non-zero size.
        let area = unsafe { alloc_zeroed(layout) };
        if area.is_null() {
            return None;
        }
        // SAFETY: `area` has at least 512 bytes. A zero XSAVE header
        // (XSTATE_BV = 0) makes XRSTOR load the init state of every
        // component; MXCSR and FCW are loaded from the legacy region.
        unsafe {
            (area.add(MXCSR_OFFSET) as *mut u32).write(MXCSR_DEFAULT);
            (area.add(FCW_OFFSET) as *mut u16).write(FCW_DEFAULT);
        }
        Some(Self { area, size })
    }

    /// Sets the control words (MXCSR and the x87 control word) of an area
    /// that otherwise holds the initial state, so that restoring it gives a
    /// clean register file with the thread's rounding and exception modes.
    pub fn set_control(&mut self, mxcsr: u32, fcw: u16) {
        // SAFETY: the legacy region's first 512 bytes are ours; the XSAVE
        // header (offset 512, 64 bytes) exists when XSAVE does.
        unsafe {
            (self.area.add(MXCSR_OFFSET) as *mut u32).write(mxcsr);
            (self.area.add(FCW_OFFSET) as *mut u16).write(fcw);
            if features().xsave {
                // XSTATE_BV: x87 from the area (to get FCW); SSE and AVX in
                // their initial (zero) state. MXCSR is always loaded.
                (self.area.add(512) as *mut u64).write(0b001);
            }
        }
    }

    /// The control words (MXCSR, x87 control word) this area holds.
    pub fn control(&self) -> (u32, u16) {
        // SAFETY: the legacy region's first 512 bytes are ours, and both
        // fields are naturally aligned within the 64-byte-aligned area.
        unsafe {
            ((self.area.add(MXCSR_OFFSET) as *const u32).read(), (self.area.add(FCW_OFFSET) as *const u16).read())
        }
    }

    /// The current MXCSR and x87 control word of this CPU.
    pub fn read_control() -> (u32, u16) {
        let mut mxcsr: u32 = 0;
        let mut fcw: u16 = 0;
        // SAFETY: both instructions only store to the given locals.
        unsafe {
            asm!("stmxcsr [{}]", in(reg) &mut mxcsr, options(nostack));
            asm!("fnstcw [{}]", in(reg) &mut fcw, options(nostack));
        }
        (mxcsr, fcw)
    }

    /// Bytes this area takes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Saves this CPU's FPU registers into the area.
    #[inline]
    pub fn save(&mut self) {
        // SAFETY: the area is 64-byte aligned and as large as CPUID says the
        // enabled components need; XSAVE/FXSAVE only write to it.
        unsafe {
            if features().xsave {
                if features().xsaveopt {
                    asm!("xsaveopt64 [{}]", in(reg) self.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
                } else {
                    asm!("xsave64 [{}]", in(reg) self.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
                }
            } else {
                asm!("fxsave64 [{}]", in(reg) self.area, options(nostack));
            }
        }
    }

    /// Loads this CPU's FPU registers from the area.
    #[inline]
    pub fn restore(&self) {
        // SAFETY: the area holds a state written by `save` or by `new`, whose
        // header and reserved fields are valid for XRSTOR.
        unsafe {
            if features().xsave {
                asm!("xrstor64 [{}]", in(reg) self.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, readonly));
            } else {
                asm!("fxrstor64 [{}]", in(reg) self.area, options(nostack, readonly));
            }
        }
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.area, Layout::from_size_align_unchecked(self.size, 64)) };
    }
}
