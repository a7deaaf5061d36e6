//! Reads the address given as its argument — another process's memory, or
//! the kernel's — and prints what it got. Isolation means it never prints:
//! the read faults and only this process ends.
#![no_std]
#![no_main]

use orrery_runtime::{StartInfo, println};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    // SAFETY: none — the read is expected to fault; if it does not, the
    // process prints what it saw, which the test treats as a failure.
    let value = unsafe { core::ptr::read_volatile(start.argument as *const u64) };
    println!("reader: read {value:#x} at {:#x}", start.argument);
    0
}
