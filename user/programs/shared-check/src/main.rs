//! Checks that pages its parent shared with it stay its own for as long as
//! it maps them, whatever the parent does meanwhile (ends, unmaps them).
//!
//! Whoever shared the pages wrote [`MARKER`] plus the page's number into the
//! first word of each. This program checks those words, then, round after
//! round, writes a pattern of its own (different each round) over every
//! word of the pages but the first, sleeps a millisecond, and reads the pattern
//! back. A frame freed under it and handed to someone else shows as a word
//! changed behind its back. It stops when the first word becomes [`STOP`]
//! (the kernel test's word that it is done), or after as many rounds as its
//! argument says. Exits 0 when all was as it should be; otherwise with the
//! number of rounds that found a wrong word, plus [`BAD_MARKERS`] if the
//! markers were wrong.
#![no_std]
#![no_main]

use orrery_runtime::{StartInfo, println, sys};

orrery_runtime::entry!(main);

/// What the sharer wrote, plus the page number, at the start of each page.
const MARKER: u64 = 0x5348_4152_4544_0000;
/// Added to the status when a marker was wrong.
const BAD_MARKERS: u32 = 1 << 20;
/// Written over the first marker to end the rounds.
const STOP: u64 = 0x5354_4f50;

fn main(start: &StartInfo) -> u32 {
    let words = (start.shared_length / 8) as usize;
    if start.shared_address == 0 || words == 0 {
        println!("shared-check: nothing was shared");
        return BAD_MARKERS;
    }
    let base = start.shared_address as *mut u64;
    let word = |index: usize| {
        // SAFETY: `index < words`: the word lies in the pages the kernel
        // mapped here (readable and writable) for the shared region the
        // start information names; nothing else in this program refers to
        // them. Volatile, since another process or the kernel may look at
        // (or, if the kernel were wrong, change) the memory.
        unsafe { core::ptr::read_volatile(base.add(index)) }
    };
    let set = |index: usize, value: u64| {
        // SAFETY: as for `word`.
        unsafe { core::ptr::write_volatile(base.add(index), value) }
    };
    let mut status = 0;
    for page in 0..words / 512 {
        let found = word(page * 512);
        if found != MARKER + page as u64 {
            println!("shared-check: page {page} starts with {found:#x}");
            status = BAD_MARKERS;
        }
    }
    let pattern =
        |round: u64, index: usize| (round << 32) ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0ddc_0ffe;
    for round in 0..start.argument {
        if word(0) == STOP {
            break;
        }
        for index in 1..words {
            set(index, pattern(round, index));
        }
        sys::sleep_micros(1000);
        let wrong = (1..words).filter(|&index| word(index) != pattern(round, index)).count();
        if wrong > 0 {
            println!("shared-check: round {round}: {wrong} of {} words changed behind its back", words - 1);
            status += 1;
        }
    }
    status
}
