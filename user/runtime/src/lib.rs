//! The runtime every Orrery user program links: the `_start` entry, system
//! call wrappers, a heap, `println!`, and a panic handler that ends the
//! process with a status saying it panicked.
//!
//! A program declares its `main` with [`entry!`]:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! orrery_runtime::entry!(main);
//! fn main(start: &orrery_runtime::StartInfo) -> u32 { orrery_runtime::println!("hi"); 0 }
//! ```
//!
//! The unsafe code here is the system-call instruction and the start-up
//! glue; programs built on it need none.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod heap;
pub mod io;
pub mod mailbox;
pub mod sys;

pub use orrery_abi::{self as abi, Error, ExitStatus, StartInfo};

/// Status a process ends with when it panics.
pub const PANIC_STATUS: u32 = 101;

/// Declares the program's `main(&StartInfo) -> u32`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "Rust" fn __orrery_main(start: &$crate::StartInfo) -> u32 {
            $main(start)
        }
    };
}

unsafe extern "Rust" {
    fn __orrery_main(start: &StartInfo) -> u32;
}

// The entry point: the kernel starts the process with `rdi` pointing at its
// `StartInfo` and `rsp` 16-byte aligned; `runtime_start` sees a normal call.
core::arch::global_asm!(
    r#"
    .pushsection .text.start, "ax"
    .global _start
_start:
    xor ebp, ebp
    and rsp, -16
    call {start}
    ud2
    .popsection
    "#,
    start = sym runtime_start,
);

extern "C" fn runtime_start(start: *const StartInfo) -> ! {
    // SAFETY: the kernel passes the address of a `StartInfo` it wrote on
    // this process's stack, which stays mapped for the process's life; a
    // null or wrong pointer would be a kernel bug, checked by the magic.
    let start = unsafe { start.as_ref() };
    let start = match start {
        Some(info) if info.magic == abi::START_INFO_MAGIC => info,
        _ => sys::exit(PANIC_STATUS),
    };
    io::set_name(start.name());
    // SAFETY: `__orrery_main` is defined by the program's `entry!`.
    let status = unsafe { __orrery_main(start) };
    sys::exit(status)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    io::print_fmt(format_args!("panic: {}\n", info.message()));
    if let Some(location) = info.location() {
        io::print_fmt(format_args!("  at {}:{}\n", location.file(), location.line()));
    }
    sys::exit(PANIC_STATUS)
}
