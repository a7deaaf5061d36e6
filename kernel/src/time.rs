//! Per-CPU time: the local APIC timer, sleep timers, and the scheduler's
//! time-slice deadline.
//!
//! Each CPU arms its one hardware timer for the earliest of three
//! deadlines: the end of the running thread's time slice, the earliest sleep
//! timer queued on this CPU, and an optional periodic tick (used by tests).
//! A sleeping thread's timer lives on the CPU where it went to sleep; when it
//! expires, the thread is woken wherever the scheduler then places it.

use alloc::collections::BinaryHeap;
use core::{
    cell::UnsafeCell,
    cmp::Reverse,
    sync::atomic::{AtomicU64, Ordering},
    task::Waker,
};

use crate::{
    arch::{apic, cpu::MAX_CPUS, cpu_index, interrupts, traps, tsc},
    task::{self, ThreadId},
};

/// A sleep timer: wake `thread` at `deadline` if it is still in wait
/// number `generation`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    deadline: u64,
    thread: u64,
    generation: u64,
}

/// A future's timer: wake `waker` at `deadline` (ties broken by `sequence`).
struct WakerTimer {
    deadline: u64,
    sequence: u64,
    waker: Waker,
}

impl PartialEq for WakerTimer {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.sequence) == (other.deadline, other.sequence)
    }
}

impl Eq for WakerTimer {}

impl PartialOrd for WakerTimer {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WakerTimer {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.deadline, self.sequence).cmp(&(other.deadline, other.sequence))
    }
}

struct CpuTime {
    /// Sleep timers, earliest first. Touched only by the owning CPU with
    /// interrupts off.
    timers: UnsafeCell<BinaryHeap<Reverse<Timer>>>,
    /// Futures' timers, earliest first; as `timers`.
    waker_timers: UnsafeCell<BinaryHeap<Reverse<WakerTimer>>>,
    waker_sequence: AtomicU64,
    /// `timers`' length at which `add_timer` next purges timers that can
    /// no longer wake anything; as `timers`.
    purge_at: UnsafeCell<usize>,
    slice_deadline: AtomicU64,
    periodic_tsc: AtomicU64,
    periodic_next: AtomicU64,
    armed: AtomicU64,
    interrupts: AtomicU64,
    last_entry_tsc: AtomicU64,
}

// SAFETY: `timers` is only touched by its own CPU with interrupts off.
unsafe impl Sync for CpuTime {}

static CPUS: [CpuTime; MAX_CPUS] = [const {
    CpuTime {
        timers: UnsafeCell::new(BinaryHeap::new()),
        waker_timers: UnsafeCell::new(BinaryHeap::new()),
        waker_sequence: AtomicU64::new(0),
        purge_at: UnsafeCell::new(PURGE_SLACK),
        slice_deadline: AtomicU64::new(u64::MAX),
        periodic_tsc: AtomicU64::new(0),
        periodic_next: AtomicU64::new(u64::MAX),
        armed: AtomicU64::new(u64::MAX),
        interrupts: AtomicU64::new(0),
        last_entry_tsc: AtomicU64::new(0),
    }
}; MAX_CPUS];

fn this() -> &'static CpuTime {
    &CPUS[cpu_index()]
}

/// Arms the hardware timer for the earliest pending deadline (interrupts off).
fn rearm(cpu: &CpuTime) {
    // SAFETY: own CPU, interrupts off (all callers).
    let timer = unsafe { (*cpu.timers.get()).peek().map_or(u64::MAX, |Reverse(timer)| timer.deadline) };
    // SAFETY: as above.
    let waker_timer = unsafe { (*cpu.waker_timers.get()).peek().map_or(u64::MAX, |Reverse(timer)| timer.deadline) };
    let next = timer
        .min(waker_timer)
        .min(cpu.slice_deadline.load(Ordering::Relaxed))
        .min(cpu.periodic_next.load(Ordering::Relaxed));
    if next == cpu.armed.load(Ordering::Relaxed) {
        return;
    }
    cpu.armed.store(next, Ordering::Relaxed);
    if next == u64::MAX {
        apic::cancel_deadline();
    } else {
        apic::set_deadline(next);
    }
}

fn timer_interrupt(_frame: &mut traps::TrapFrame) {
    let cpu = this();
    let now = tsc::now();
    cpu.last_entry_tsc.store(now, Ordering::Relaxed);
    cpu.interrupts.fetch_add(1, Ordering::Relaxed);
    cpu.armed.store(u64::MAX, Ordering::Relaxed);
    apic::end_of_interrupt();
    let period = cpu.periodic_tsc.load(Ordering::Relaxed);
    if period != 0 && now >= cpu.periodic_next.load(Ordering::Relaxed) {
        // Whole periods from the previous deadline, so the rate does not
        // drift with interrupt latency.
        let mut next = cpu.periodic_next.load(Ordering::Relaxed) + period;
        if next <= now {
            next = now + period;
        }
        cpu.periodic_next.store(next, Ordering::Relaxed);
    }
    // Expired sleep timers.
    loop {
        // SAFETY: own CPU, interrupts off in the handler.
        let timers = unsafe { &mut *cpu.timers.get() };
        match timers.peek() {
            Some(Reverse(timer)) if timer.deadline <= now => {
                let timer = *timer;
                timers.pop();
                task::scheduler::wake_timer(ThreadId(timer.thread), timer.generation);
            }
            _ => break,
        }
    }
    // Expired futures' timers.
    loop {
        // SAFETY: own CPU, interrupts off in the handler; the borrow ends
        // before the wake-up runs.
        let expired = unsafe {
            let timers = &mut *cpu.waker_timers.get();
            match timers.peek() {
                Some(Reverse(timer)) if timer.deadline <= now => timers.pop(),
                _ => None,
            }
        };
        match expired {
            Some(Reverse(timer)) => timer.waker.wake(),
            None => break,
        }
    }
    if now >= cpu.slice_deadline.load(Ordering::Relaxed) {
        cpu.slice_deadline.store(u64::MAX, Ordering::Relaxed);
        task::scheduler::slice_expired(now);
    }
    rearm(cpu);
}

/// Installs the timer interrupt handler.
pub fn init() {
    traps::set_handler(traps::TIMER_VECTOR, timer_interrupt);
}

/// Sets when the running thread's time slice ends on this CPU
/// (`u64::MAX`: no limit). Interrupts must be off.
///
/// The hardware timer is reprogrammed only when the new deadline is earlier
/// than the one armed: a later deadline lets the armed interrupt come early,
/// and the handler, finding the slice not over, arms the right time. So a
/// burst of switches (yields, wake-ups) costs no timer write each.
pub fn set_slice_deadline(deadline: u64) {
    set_slice_deadline_on(cpu_index(), deadline);
}

/// [`set_slice_deadline`] for a caller that knows it runs on CPU `here`.
#[inline]
pub(crate) fn set_slice_deadline_on(here: usize, deadline: u64) {
    let cpu = &CPUS[here];
    cpu.slice_deadline.store(deadline, Ordering::Relaxed);
    if deadline < cpu.armed.load(Ordering::Relaxed) {
        rearm(cpu);
    }
}

/// Brings this CPU's slice deadline forward to `deadline` if that is
/// earlier (a check the scheduler wants before the slice ends). Interrupts
/// must be off.
pub(crate) fn advance_slice_deadline(deadline: u64) {
    let cpu = this();
    if deadline < cpu.slice_deadline.load(Ordering::Relaxed) {
        cpu.slice_deadline.store(deadline, Ordering::Relaxed);
        if deadline < cpu.armed.load(Ordering::Relaxed) {
            rearm(cpu);
        }
    }
}

/// No memory was left to queue a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// Sleep timers beyond twice the live ones before `add_timer` purges.
const PURGE_SLACK: usize = 32;

/// Queues a sleep timer on this CPU: at `deadline`, wake `thread` if it is
/// still in wait number `generation`. Fails only when memory is exhausted.
///
/// A timer whose thread was woken early, or killed, stays queued until its
/// deadline and then does nothing. So that such timers (a far deadline, a
/// loop of early wake-ups, sleeping processes killed) cannot pile up, the
/// queue is purged of them whenever it reaches twice its length after the
/// last purge plus [`PURGE_SLACK`]: it never holds more than about twice the
/// live timers, and the purge costs amortised O(1) per timer.
pub fn add_timer(deadline: u64, thread: ThreadId, generation: u64) -> Result<(), OutOfMemory> {
    interrupts::without(|| {
        let cpu = this();
        // SAFETY: own CPU, interrupts off.
        let (timers, purge_at) = unsafe { (&mut *cpu.timers.get(), &mut *cpu.purge_at.get()) };
        if timers.len() >= *purge_at {
            timers.retain(|Reverse(timer)| task::scheduler::timer_is_live(ThreadId(timer.thread), timer.generation));
            *purge_at = 2 * timers.len() + PURGE_SLACK;
        }
        timers.try_reserve(1).map_err(|_| OutOfMemory)?;
        timers.push(Reverse(Timer { deadline, thread: thread.0, generation }));
        rearm(cpu);
        Ok(())
    })
}

/// Names a queued future's timer, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakerTimerKey {
    cpu: usize,
    sequence: u64,
}

/// Queues a future's timer on this CPU: at `deadline`, wake `waker` (from
/// the timer interrupt). Fails only when memory is exhausted.
pub fn add_waker_timer(deadline: u64, waker: Waker) -> Result<WakerTimerKey, OutOfMemory> {
    interrupts::without(|| {
        let here = cpu_index();
        let cpu = &CPUS[here];
        // SAFETY: own CPU, interrupts off.
        let timers = unsafe { &mut *cpu.waker_timers.get() };
        timers.try_reserve(1).map_err(|_| OutOfMemory)?;
        let sequence = cpu.waker_sequence.fetch_add(1, Ordering::Relaxed);
        timers.push(Reverse(WakerTimer { deadline, sequence, waker }));
        rearm(cpu);
        Ok(WakerTimerKey { cpu: here, sequence })
    })
}

/// Takes a future's timer off its queue before it fires, dropping its
/// waker. Only the CPU that queued it can (its queue has no lock); on any
/// other CPU this does nothing and returns false, and the timer fires at its
/// deadline with a spurious wake-up. Also false if it already fired.
pub fn cancel_waker_timer(key: WakerTimerKey) -> bool {
    interrupts::without(|| {
        if key.cpu != cpu_index() {
            return false;
        }
        // SAFETY: own CPU, interrupts off. The removed timer's waker is
        // dropped after the borrow of the queue ends (dropping it may drop a
        // future that cancels its own timer).
        let removed = unsafe {
            let timers = &mut *CPUS[key.cpu].waker_timers.get();
            let mut entries = core::mem::take(timers).into_vec();
            let removed = entries
                .iter()
                .position(|Reverse(timer)| timer.sequence == key.sequence)
                .map(|index| entries.swap_remove(index));
            *timers = BinaryHeap::from(entries);
            removed
        };
        removed.is_some()
    })
}

/// Starts a periodic tick of `period_tsc` ticks on this CPU (0 stops it).
pub fn set_periodic(period_tsc: u64) {
    interrupts::without(|| {
        let cpu = this();
        cpu.periodic_tsc.store(period_tsc, Ordering::Relaxed);
        cpu.periodic_next.store(if period_tsc == 0 { u64::MAX } else { tsc::now() + period_tsc }, Ordering::Relaxed);
        rearm(cpu);
    });
}

/// Timer interrupts CPU `cpu` has taken since boot.
pub fn interrupt_count(cpu: usize) -> u64 {
    CPUS[cpu].interrupts.load(Ordering::Relaxed)
}

/// TSC at the start of CPU `cpu`'s last timer interrupt handler.
pub fn last_entry_tsc(cpu: usize) -> u64 {
    CPUS[cpu].last_entry_tsc.load(Ordering::Relaxed)
}

/// Sleep timers queued on this CPU (for tests).
pub fn pending_timers() -> usize {
    // SAFETY: own CPU, interrupts off.
    interrupts::without(|| unsafe { (*this().timers.get()).len() })
}

/// Futures' timers queued on this CPU (for tests).
pub fn pending_waker_timers() -> usize {
    // SAFETY: own CPU, interrupts off.
    interrupts::without(|| unsafe { (*this().waker_timers.get()).len() })
}
