//! The context switch between kernel threads: callee-saved registers and
//! the stack pointer, nothing else.
//!
//! Everything else a switch needs happens around this in
//! [`crate::task::scheduler`]: the address space (CR3 with PCID, only when it
//! changes), FPU state (only for threads that use it), and the run-queue
//! lock, which the thread that switches away holds across the switch and the
//! thread that resumes releases. Interrupts are off across the switch, so
//! the flags need not be saved: each thread's interrupt state lives in the
//! lock guard on its own stack.

use core::arch::naked_asm;

/// Saves the callee-saved registers on the current stack, stores the stack
/// pointer in `*save_rsp`, loads `next_rsp` and pops the next thread's
/// registers; returns in the next thread.
///
/// # Safety
/// Interrupts must be off. `next_rsp` must be a stack pointer saved by this
/// function (or laid out by [`initial_stack`]) of a thread that is not
/// running anywhere, on a stack that stays mapped; `save_rsp` must stay
/// valid until the current thread is resumed.
#[unsafe(naked)]
pub unsafe extern "C" fn switch_context(save_rsp: *mut u64, next_rsp: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Lays out a new thread's stack so that the first [`switch_context`] to it
/// "returns" into `entry` with an aligned stack, and returns the stack
/// pointer to save. `entry` must never return.
///
/// # Safety
/// `top` must be the 16-byte-aligned top of a mapped stack that nothing else
/// uses.
pub unsafe fn initial_stack(top: u64, entry: extern "C" fn() -> !) -> u64 {
    // Layout, from the top: an empty slot (so that `entry` starts with the
    // stack 8 modulo 16, as after a call), the return address `entry`, six
    // zeroed callee-saved registers.
    let frame = top - 8 * 8;
    // SAFETY: the caller guarantees the stack is mapped and unused; the eight
    // words written lie just below `top`.
    unsafe {
        let words = frame as *mut u64;
        for index in 0..6 {
            words.add(index).write(0);
        }
        words.add(6).write(entry as usize as u64);
        words.add(7).write(0);
    }
    frame
}
