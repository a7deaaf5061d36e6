//! Per-CPU timer ticks on top of the local APIC timer.
//!
//! Each CPU can run a periodic tick (the scheduler's time slice clock) and
//! counts the timer interrupts it takes, which the tests read to prove that
//! every CPU's timer works.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{apic, cpu::MAX_CPUS, cpu_index, traps, tsc};

struct CpuTimer {
    interrupts: AtomicU64,
    period_tsc: AtomicU64,
    next_deadline: AtomicU64,
}

static TIMERS: [CpuTimer; MAX_CPUS] = [const {
    CpuTimer { interrupts: AtomicU64::new(0), period_tsc: AtomicU64::new(0), next_deadline: AtomicU64::new(0) }
}; MAX_CPUS];

/// When each CPU's last timer interrupt handler started, for the benchmark.
static LAST_ENTRY_TSC: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn timer_interrupt(_frame: &mut traps::TrapFrame) {
    let cpu = cpu_index();
    let timer = &TIMERS[cpu];
    LAST_ENTRY_TSC[cpu].store(tsc::now(), Ordering::Relaxed);
    timer.interrupts.fetch_add(1, Ordering::Relaxed);
    let period = timer.period_tsc.load(Ordering::Relaxed);
    if period != 0 {
        // Deadlines advance by whole periods from the previous one, so the
        // tick rate does not drift with interrupt latency.
        let now = tsc::now();
        let mut next = timer.next_deadline.load(Ordering::Relaxed) + period;
        if next <= now {
            next = now + period;
        }
        timer.next_deadline.store(next, Ordering::Relaxed);
        apic::set_deadline(next);
    }
    apic::end_of_interrupt();
}

/// Installs the timer interrupt handler.
pub fn init() {
    traps::set_handler(traps::TIMER_VECTOR, timer_interrupt);
}

/// Starts a periodic tick of `period_tsc` ticks on this CPU (0 stops it).
pub fn set_periodic(period_tsc: u64) {
    let timer = &TIMERS[cpu_index()];
    timer.period_tsc.store(period_tsc, Ordering::Relaxed);
    if period_tsc == 0 {
        apic::cancel_deadline();
    } else {
        let next = tsc::now() + period_tsc;
        timer.next_deadline.store(next, Ordering::Relaxed);
        apic::set_deadline(next);
    }
}

/// TSC at the start of CPU `cpu`'s last timer interrupt handler.
pub fn last_entry_tsc(cpu: usize) -> u64 {
    LAST_ENTRY_TSC[cpu].load(Ordering::Relaxed)
}

/// Timer interrupts CPU `cpu` has taken since boot.
pub fn interrupt_count(cpu: usize) -> u64 {
    TIMERS[cpu].interrupts.load(Ordering::Relaxed)
}
