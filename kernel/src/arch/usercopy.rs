//! Copying between kernel and user memory, safely against anything the user
//! address says.
//!
//! Callers first check that the range lies wholly in the user half (see
//! `proc::uaccess`); the copy itself is one `rep movsb` listed in the
//! exception table, so an unmapped page or a write to a read-only page ends
//! the copy with an error instead of a kernel fault. With SMAP on, the copy
//! is the only place the kernel opens user memory (`stac` ... `clac`).

use core::arch::asm;

use super::cpu::smap_enabled;

/// The copy touched memory it may not (unmapped, or not writable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyFault {
    /// Bytes copied before the fault.
    pub copied: usize,
}

/// Copies `length` bytes from `source` to `destination`, either of which
/// may be a user address.
///
/// # Safety
/// The kernel side of the copy must be valid for `length` bytes (writable
/// if it is the destination), and the user side must lie in the user half
/// (checked by the caller), so a fault can only come from the user side.
pub unsafe fn copy(destination: *mut u8, source: *const u8, length: usize) -> Result<(), CopyFault> {
    let remaining: usize;
    if smap_enabled() {
        // SAFETY: per the contract; the only faulting instruction is listed
        // in the exception table, and AC is cleared on both paths out.
        unsafe {
            asm!(
                "stac",
                "2: rep movsb",
                "3: clac",
                ".pushsection .extable, \"a\"",
                ".balign 8",
                ".quad 2b, 3b",
                ".popsection",
                inout("rcx") length => remaining,
                inout("rdi") destination => _,
                inout("rsi") source => _,
                options(nostack),
            );
        }
    } else {
        // SAFETY: as above, without SMAP to open.
        unsafe {
            asm!(
                "2: rep movsb",
                "3:",
                ".pushsection .extable, \"a\"",
                ".balign 8",
                ".quad 2b, 3b",
                ".popsection",
                inout("rcx") length => remaining,
                inout("rdi") destination => _,
                inout("rsi") source => _,
                options(nostack),
            );
        }
    }
    if remaining == 0 {
        Ok(())
    } else {
        // The fault was recorded; consume the record.
        let _ = super::traps::last_caught_fault();
        Err(CopyFault { copied: length - remaining })
    }
}

/// Fills `length` user bytes at `destination` with zero.
///
/// # Safety
/// `destination .. destination + length` must lie in the user half.
pub unsafe fn zero(destination: *mut u8, length: usize) -> Result<(), CopyFault> {
    let remaining: usize;
    let smap = smap_enabled();
    // SAFETY: as for `copy`; `stac`/`clac` only when SMAP exists.
    unsafe {
        if smap {
            asm!("stac", options(nostack, nomem));
        }
        asm!(
            "2: rep stosb",
            "3:",
            ".pushsection .extable, \"a\"",
            ".balign 8",
            ".quad 2b, 3b",
            ".popsection",
            inout("rcx") length => remaining,
            inout("rdi") destination => _,
            in("al") 0u8,
            options(nostack),
        );
        if smap {
            asm!("clac", options(nostack, nomem));
        }
    }
    if remaining == 0 {
        Ok(())
    } else {
        let _ = super::traps::last_caught_fault();
        Err(CopyFault { copied: length - remaining })
    }
}
