//! Takes all the memory the kernel will give it: maps memory in requests of
//! `argument` MiB (the low 32 bits; 64 if 0), halving the request each time
//! the kernel says `OutOfMemory`, down to one page. Then it says how much it
//! got and sleeps until killed, holding it all; or, with bit 32 of the
//! argument set, grows its stack by 36 KiB, which the kernel cannot give it
//! either (the process ends with an out-of-memory fault). Exits with 2 on
//! any other answer.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{Error, StartInfo, println, sys};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    let megabytes = start.argument & 0xffff_ffff;
    let mut request: u64 = if megabytes == 0 { 64 << 20 } else { megabytes << 20 };
    let mut total: u64 = 0;
    while request >= 4096 {
        match sys::map_memory(request, true) {
            Ok(_) => total += request,
            Err(Error::OutOfMemory) => request /= 2,
            Err(error) => {
                println!("hog: map_memory({request}): {error:?}");
                return 2;
            }
        }
    }
    println!("hog: took {} KiB; the kernel says OutOfMemory", total >> 10);
    if start.argument & (1 << 32) != 0 {
        return deep(8) as u32;
    }
    loop {
        sys::sleep_micros(1_000_000);
    }
}

/// Uses 4 KiB of stack per level, `levels` deep.
#[inline(never)]
fn deep(levels: u32) -> u64 {
    let mut page = [0u8; 4096];
    page[0] = levels as u8;
    let page = core::hint::black_box(&mut page);
    if levels == 0 { u64::from(page[0]) } else { deep(levels - 1) + u64::from(page[4095]) }
}
