//! Reads the address given as its argument — another process's memory, or
//! the kernel's — and prints what it got. Isolation means it never prints:
//! the read faults and only this process ends.
//!
//! With bit 0 of the argument set (no address it is asked to read is odd),
//! the rest is the address of a page of its own that it writes 1 into and
//! then reads for ever, without a system call: the shoot-down test unmaps
//! the page from another CPU and expects the reads to fault.
#![no_std]
#![no_main]

use orrery_runtime::{StartInfo, println};

orrery_runtime::entry!(main);

/// The argument's flag for the endless read.
const LOOP: u64 = 1;

fn main(start: &StartInfo) -> u32 {
    if start.argument & LOOP != 0 {
        let address = (start.argument & !LOOP) as *mut u64;
        // SAFETY: none needed for soundness of this program's own state: the
        // page is its own (mapped by its parent) until the parent unmaps it,
        // after which the read faults and the process ends.
        unsafe { core::ptr::write_volatile(address, 1) };
        loop {
            // SAFETY: as above.
            let _ = unsafe { core::ptr::read_volatile(address) };
        }
    }
    // SAFETY: none — the read is expected to fault; if it does not, the
    // process prints what it saw, which the test treats as a failure.
    let value = unsafe { core::ptr::read_volatile(start.argument as *const u64) };
    println!("reader: read {value:#x} at {:#x}", start.argument);
    0
}
