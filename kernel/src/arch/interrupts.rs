//! Turning the local CPU's interrupts off and on.

use core::arch::asm;

/// Whether interrupts were on before [`save_and_disable`].
#[derive(Clone, Copy, Debug)]
#[must_use = "restore the saved state with interrupts::restore"]
pub struct SavedState(bool);

/// True when the local CPU accepts maskable interrupts.
pub fn are_enabled() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS has no side effects.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Masks interrupts and says whether they were on.
pub fn save_and_disable() -> SavedState {
    let was_enabled = are_enabled();
    disable();
    SavedState(was_enabled)
}

/// Puts the interrupt flag back as [`save_and_disable`] found it.
pub fn restore(state: SavedState) {
    if state.0 {
        enable();
    }
}

/// Masks maskable interrupts on this CPU.
pub fn disable() {
    // SAFETY: `cli` only changes the interrupt flag; it is a compiler barrier
    // (no `nomem`) so memory accesses are not moved out of the masked region.
    unsafe { asm!("cli", options(nostack, preserves_flags)) };
}

/// Unmasks maskable interrupts on this CPU.
pub fn enable() {
    // SAFETY: as for `disable`.
    unsafe { asm!("sti", options(nostack, preserves_flags)) };
}

/// Unmasks interrupts and halts until the next one, with no window between
/// the two in which a wake-up interrupt could be lost (`sti` takes effect
/// after the following instruction).
pub fn enable_and_halt() {
    // SAFETY: as above; `hlt` only waits for an interrupt.
    unsafe { asm!("sti; hlt", options(nostack, preserves_flags)) };
}

/// Runs `f` with interrupts masked.
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    let state = save_and_disable();
    let result = f();
    restore(state);
    result
}
