//! The time-stamp counter: the kernel's clock.
//!
//! All kernel time is in TSC ticks; [`calibrate`] measures the tick rate
//! once at boot against the PIT (or takes it from CPUID where the hypervisor
//! or CPU reports it). Under `-icount shift=0` QEMU's TSC advances once per
//! guest instruction, which is what makes the benchmark figures instruction
//! counts.

use core::{
    arch::asm,
    sync::atomic::{AtomicU64, Ordering},
};

use x86_64::instructions::port::Port;

/// TSC value at the kernel's first instruction (written by the boot code).
#[unsafe(no_mangle)]
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Reads the TSC. Not serialising: it may run a few instructions early or
/// late, which is fine for timestamps and deadlines.
#[inline(always)]
pub fn now() -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: `rdtsc` only reads the counter (CR4.TSD is clear).
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// The TSC at the first instruction of the kernel.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// Ticks per second; 0 before [`calibrate`].
pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts ticks to nanoseconds (0 before calibration).
pub fn ticks_to_nanos(ticks: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64,
    }
}

/// Converts nanoseconds to ticks (0 before calibration).
pub fn nanos_to_ticks(nanos: u64) -> u64 {
    (u128::from(nanos) * u128::from(hz()) / 1_000_000_000) as u64
}

/// Microseconds since the kernel's first instruction.
pub fn micros_since_boot() -> u64 {
    ticks_to_nanos(now().saturating_sub(boot_tsc())) / 1000
}

/// Where the tick rate came from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// CPUID leaf 0x15 or the hypervisor leaf 0x40000010.
    Cpuid,
    /// Counted against the PIT for 5 ms of its clock.
    Pit,
}

/// Measures the TSC rate and records it. Returns the rate and its source.
pub fn calibrate() -> (u64, Source) {
    let (hz, source) = match from_cpuid() {
        Some(hz) => (hz, Source::Cpuid),
        None => (from_pit(), Source::Pit),
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    (hz, source)
}

fn from_cpuid() -> Option<u64> {
    let cpuid = raw_cpuid::CpuId::new();
    if let Some(info) = cpuid.get_tsc_info()
        && let Some(hz) = info.tsc_frequency()
        && hz > 0
    {
        return Some(hz);
    }
    let hypervisor = cpuid.get_hypervisor_info()?;
    hypervisor.tsc_frequency().filter(|khz| *khz > 0).map(|khz| u64::from(khz) * 1000)
}

/// Counts TSC ticks across 5 ms of the PIT's clock (1.193182 MHz).
///
/// Channel 0 runs as a free-running rate generator and its count is sampled
/// with latch commands, which works on machines without the speaker gate
/// (port 0x61) that the classic channel-2 method needs, such as `microvm`.
/// Its interrupt line stays masked at the PIC.
fn from_pit() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const TICKS: u64 = PIT_HZ / 200;
    let mut command = Port::<u8>::new(0x43);
    let mut channel0 = Port::<u8>::new(0x40);
    // SAFETY: ports 0x40 and 0x43 are the PIT's channel 0 and mode
    // register; nothing else in the kernel uses the PIT, and this runs on the
    // bootstrap CPU alone with the PIC masked.
    let mut read_count = || unsafe {
        command.write(0b0000_0000); // latch channel 0
        let low = u16::from(channel0.read());
        let high = u16::from(channel0.read());
        (high << 8) | low
    };
    // SAFETY: as above.
    unsafe {
        // Channel 0, low/high byte, mode 2 (rate generator), reload 0 = 65536.
        Port::<u8>::new(0x43).write(0b0011_0100);
        Port::<u8>::new(0x40).write(0);
        Port::<u8>::new(0x40).write(0);
    }
    let mut previous = read_count();
    let start = now();
    let mut elapsed = 0u64;
    while elapsed < TICKS {
        let current = read_count();
        // The counter counts down and wraps from 1 to 65536.
        elapsed += u64::from(previous.wrapping_sub(current));
        previous = current;
    }
    let end = now();
    (end - start) * PIT_HZ / elapsed
}
