//! Exits at once with status 0 (for measuring process creation).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

orrery_runtime::entry!(main);

fn main(_start: &orrery_runtime::StartInfo) -> u32 {
    0
}
