//! Faults on purpose, in the way `argument` says: 0 page fault, 1 general
//! protection, 2 invalid opcode, 3 divide error, 4 write to its own text,
//! 5 panic. The kernel ends only this process, with a status naming the
//! fault and its address.
#![no_std]
#![no_main]

use orrery_runtime::{StartInfo, println};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    println!("fault-demo: fault {}", start.argument);
    match start.argument {
        // SAFETY: none — the read faults on purpose (nothing is mapped there).
        0 => unsafe { core::ptr::read_volatile(0xdead_0000 as *const u64) as u32 },
        // SAFETY: none — `hlt` in user mode raises #GP on purpose.
        1 => unsafe {
            core::arch::asm!("hlt");
            0
        },
        // SAFETY: none — `ud2` raises #UD on purpose.
        2 => unsafe {
            core::arch::asm!("ud2");
            0
        },
        3 => {
            let divisor = core::hint::black_box(0u32);
            // SAFETY: none — a zero divisor raises #DE on purpose (the
            // instruction is used directly so no overflow check intervenes).
            unsafe {
                core::arch::asm!("div {0:e}", in(reg) divisor, inout("eax") 1u32 => _, inout("edx") 0u32 => _);
            }
            0
        }
        4 => {
            let text = main as *const () as *mut u8;
            // SAFETY: none — text is mapped read-only; the write faults.
            unsafe { core::ptr::write_volatile(text, 0xcc) };
            0
        }
        _ => panic!("fault-demo panics on purpose"),
    }
}
