//! Measures the null system call's round trip from user space: `argument`
//! calls (at least 1000), then exits with the median TSC ticks per call of
//! 16 batches (under `-icount` these are instructions).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{StartInfo, sys};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    let per_batch = (start.argument / 16).max(64);
    let mut batches = [0u64; 16];
    // Warm up.
    for _ in 0..per_batch {
        let _ = sys::null();
    }
    for batch in batches.iter_mut() {
        let begin = sys::tsc();
        for _ in 0..per_batch {
            let _ = sys::null();
        }
        *batch = (sys::tsc() - begin) / per_batch;
    }
    batches.sort_unstable();
    batches[batches.len() / 2] as u32
}
