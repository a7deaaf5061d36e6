//! Debugging aids: a task-aware GDB stub on COM2 (see [`gdb`]).

pub mod gdb;

/// Stops the machine here for the debugger when the stub is on (the `gdb`
/// command-line word); does nothing otherwise.
#[inline(never)]
pub fn breakpoint() {
    if gdb::enabled() {
        // SAFETY: `int3` raises #BP, which the stub takes (kernel mode, stub
        // on) and returns from to the next instruction; it touches no memory
        // of this function's.
        unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
    }
}
