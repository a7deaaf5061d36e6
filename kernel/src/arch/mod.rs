//! The x86_64 architecture layer: boot, CPUs, traps, interrupts, page tables
//! and the context switch.
//!
//! This is the mechanism half of the kernel. It holds nearly all of the
//! `unsafe` code; the layers above it (memory management, tasks, scheduling
//! policy) call the safe functions it exports.

pub mod acpi;
pub mod apic;
pub mod boot;
pub mod cpu;
pub mod fpu;
pub mod gdt;
pub mod interrupts;
pub mod paging;
pub mod pcid;
pub mod qemu;
pub mod smp;
pub mod start_info;
pub mod switch;
pub mod traps;
pub mod tsc;
pub mod user;
pub mod usercopy;

pub use cpu::cpu_index;
