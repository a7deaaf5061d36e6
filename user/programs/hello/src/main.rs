//! The smallest Orrery program: prints who and where it is, and exits.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{StartInfo, println, sys};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    println!("hello from process {} ('{}') on cpu{}", start.process_id, start.name(), sys::cpu_id());
    0
}
