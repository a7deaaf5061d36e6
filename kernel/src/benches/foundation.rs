//! Figures of the foundation: boot time, interrupt entry and exit, IPIs.

use alloc::{format, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{
    arch::{apic, interrupts, smp, traps, tsc},
    bench::{Figure, median, privileged},
    kbench,
};

/// Vector of the benchmarks' own null interrupt.
const PING_VECTOR: u8 = 0xe0;
const PONG_VECTOR: u8 = 0xe1;

static PONGED: AtomicBool = AtomicBool::new(false);
static HANDLER_ENTRY_TSC: AtomicU64 = AtomicU64::new(0);

fn null_handler(_frame: &mut traps::TrapFrame) {
    HANDLER_ENTRY_TSC.store(tsc::now(), Ordering::Relaxed);
    apic::end_of_interrupt();
}

kbench!(boot_time, |context| {
    let ticks = smp::all_online_tsc().saturating_sub(tsc::boot_tsc());
    let value = if context.icount { ticks as f64 } else { tsc::ticks_to_nanos(ticks) as f64 / 1e6 };
    Ok(Figure {
        value,
        unit: if context.icount { "instructions" } else { "ms (TCG wall time)" },
        detail: format!(
            "first kernel instruction to all {} CPUs online, {:.3} ms of guest time",
            smp::cpu_count(),
            tsc::ticks_to_nanos(ticks) as f64 / 1e6
        ),
    })
});

kbench!(interrupt_entry_exit, |context| {
    traps::set_handler(PING_VECTOR, null_handler);
    let mut samples = Vec::new();
    for _ in 0..1000 {
        interrupts::disable();
        // The self-IPI is pending as soon as the ICR write completes; it is
        // taken right after `sti` and the following instruction.
        apic::send_ipi(apic::local_id(), PING_VECTOR);
        let start = tsc::now();
        // `sti; hlt`: the pending interrupt is taken right after the `sti`
        // shadow, and `hlt` returns at once since it has already arrived.
        interrupts::enable_and_halt();
        interrupts::disable();
        samples.push(tsc::now() - start);
        interrupts::enable();
    }
    let ticks = median(&mut samples);
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "self-IPI to a handler that only acknowledges: stub, register save, dispatch, EOI, restore, plus sti/hlt/cli/rdtsc around it; {}",
            privileged(&["EOI (xAPIC MMIO write or x2APIC WRMSR)", "IRETQ"])
        ),
    ))
});

kbench!(timer_interrupt, |context| {
    let mut samples = Vec::new();
    let mut entries = Vec::new();
    let count_before = crate::time::interrupt_count(crate::arch::cpu_index());
    for _ in 0..200 {
        interrupts::disable();
        let deadline = tsc::now() + 2000;
        apic::set_deadline(deadline);
        while tsc::now() < deadline {
            core::hint::spin_loop();
        }
        // The timer has fired and its interrupt is pending.
        let start = tsc::now();
        interrupts::enable_and_halt();
        interrupts::disable();
        let end = tsc::now();
        entries.push(crate::time::last_entry_tsc(crate::arch::cpu_index()).saturating_sub(start));
        samples.push(end - start);
        interrupts::enable();
    }
    let taken = crate::time::interrupt_count(crate::arch::cpu_index()) - count_before;
    if taken < 200 {
        return Err(format!("only {taken} of 200 timer interrupts arrived"));
    }
    let ticks = median(&mut samples);
    let entry = median(&mut entries);
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "pending timer interrupt taken and returned from, handler included, plus sti/hlt/cli/rdtsc (entry to handler: {entry} {}); {}",
            context.tick_unit(),
            privileged(&["EOI", "IRETQ"])
        ),
    ))
});

kbench!(ipi_round_trip, |context| {
    if smp::cpu_count() < 2 {
        return Err("needs 2 CPUs: cargo run -- --bench ipi_round_trip --smp 2".into());
    }
    fn ping(_frame: &mut traps::TrapFrame) {
        apic::end_of_interrupt();
        apic::send_ipi(smp::apic_id(0), PONG_VECTOR);
    }
    fn pong(_frame: &mut traps::TrapFrame) {
        apic::end_of_interrupt();
        PONGED.store(true, Ordering::Release);
    }
    traps::set_handler(PING_VECTOR, ping);
    traps::set_handler(PONG_VECTOR, pong);
    let target = smp::apic_id(1);
    let mut samples = Vec::new();
    for _ in 0..1000 {
        PONGED.store(false, Ordering::Relaxed);
        let start = tsc::now();
        apic::send_ipi(target, PING_VECTOR);
        while !PONGED.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        samples.push(tsc::now() - start);
    }
    traps::set_handler(PING_VECTOR, null_handler);
    let ticks = median(&mut samples);
    Ok(context.per_operation(
        ticks,
        1,
        format!("cpu0 -> cpu1 -> cpu0, median of 1000; {}", privileged(&["ICR write x2", "EOI x2", "IRETQ x2"])),
    ))
});

kbench!(frame_allocate_free, |context| {
    use crate::mm::frames;
    const COUNT: u64 = 1000;
    let mut taken = alloc::vec::Vec::with_capacity(COUNT as usize);
    let start = tsc::now();
    for _ in 0..COUNT {
        taken.push(frames::allocate().ok_or("out of frames")?);
    }
    let allocate = tsc::now() - start;
    let start = tsc::now();
    for frame in taken.drain(..) {
        frames::deallocate(frame);
    }
    let free = tsc::now() - start;
    let start = tsc::now();
    for _ in 0..COUNT {
        taken.push(frames::allocate_zeroed().ok_or("out of frames")?);
    }
    let zeroed = tsc::now() - start;
    taken.drain(..).for_each(frames::deallocate);
    context.extra("free", &context.per_operation(free, COUNT, privileged(&[])));
    context.extra(
        "allocate_zeroed",
        &context.per_operation(zeroed, COUNT, format!("4 KiB zeroed through the physical window; {}", privileged(&[]))),
    );
    Ok(context.per_operation(
        allocate,
        COUNT,
        format!("one frame from the bitmap under its lock; {}", privileged(&["pushfq/cli/sti"])),
    ))
});
