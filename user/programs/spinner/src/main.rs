//! Spins for ever (or sleeps, if its argument is 1), to be killed.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{StartInfo, sys};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    loop {
        if start.argument == 1 {
            sys::sleep_micros(1_000_000);
        } else {
            core::hint::spin_loop();
        }
    }
}
