//! Leaving QEMU with an exit code, through the `isa-debug-exit` device.
//!
//! Writing `value` to its port makes QEMU exit with status `value * 2 + 1`.
//! The runner maps [`ExitCode::Success`] (status 33) to success and every
//! other status to failure; a machine without the device falls through to a
//! halt loop, which the runner's time-out catches.

use x86_64::instructions::port::Port;

/// Port of the `isa-debug-exit` device the runner configures.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How the kernel ends a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked of this boot succeeded (QEMU status 33).
    Success = 0x10,
    /// A test failed or the kernel panicked (QEMU status 35).
    Failure = 0x11,
}

/// Exits QEMU. Never returns.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: the port belongs to the debug-exit device; writing it has no
    // effect on memory.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32) };
    crate::arch::cpu::halt_forever()
}
