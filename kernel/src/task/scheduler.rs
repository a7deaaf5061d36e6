//! The scheduling mechanism: per-CPU run queues, the switch, wake-ups,
//! preemption, migration and the dispatcher loop.
//!
//! Policy lives in `orrery-sched`: each CPU owns one `AnyPolicy` (a
//! built-in policy called directly, or any other behind `dyn Policy`),
//! which only ever sees [`Entity`] values (id, weight, lag, run time). This
//! module is the mechanism around it.
//!
//! # The run-queue lock and the switch
//!
//! Each CPU's run queue (its policy object, current thread, dispatcher) is
//! guarded by one lock taken with interrupts off. `schedule` takes its CPU's
//! lock, puts the outgoing thread where it belongs, picks the next one and
//! switches stacks *holding the lock*; the thread that resumes releases it
//! (`finish_switch`). A thread is therefore saved completely before anyone
//! else can take that lock — and every path that could start a thread
//! elsewhere (waking it, stealing it, changing its CPU) takes that lock
//! first. That is how a thread never runs on two CPUs at once, even while it
//! migrates, with no spinning on a per-thread flag: the lock is the flag.
//!
//! # Lost wake-ups
//!
//! See [`super::thread`]: a waiting thread is visible to wakers (`Blocking`)
//! before it releases the lock of the condition it waits for, and a wake-up
//! that finds it still `Blocking` cancels the wait.

use alloc::{sync::Arc, vec::Vec};
use core::{
    cell::UnsafeCell,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, fence},
};

use orrery_sched::{AnyPolicy, Config, EnqueueReason, Entity, Picked, Policy, PolicyKind, WakeupCheck, placement};

use super::{
    thread::{self, Thread, ThreadId, ThreadKind, ThreadState, WakeReason},
    trace::{self, EventKind},
};
use crate::{
    arch::{
        apic,
        cpu::{MAX_CPUS, cpu_index},
        interrupts, pcid, smp,
        switch::switch_context,
        traps, tsc,
    },
    time,
};

/// Why `schedule` is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// The thread gives way but stays runnable.
    Yield,
    /// The thread's slice ended or a more deserving thread woke.
    Preempt,
    /// The thread waits (it has marked itself `Blocking`).
    Block,
    /// The thread is finished.
    Exit,
}

struct Inner {
    policy: Option<AnyPolicy>,
    dispatcher: *const Thread,
    picked_at: u64,
    /// When the running thread's slice began. Unlike `picked_at` (the start
    /// of the stretch not yet charged), a hand-off does not reset it: the
    /// thread handed the CPU runs out the remaining slice.
    slice_started: u64,
    /// A thread that died in the switch away from it, for the reaper.
    dead: *const Thread,
    /// A thread that may not stay on this CPU, to be placed elsewhere.
    evicted: *const Thread,
}

/// One CPU's scheduling state.
struct CpuScheduler {
    lock: AtomicBool,
    inner: UnsafeCell<Inner>,
    current: AtomicPtr<Thread>,
    need_resched: AtomicBool,
    idle: AtomicBool,
    queued: AtomicU32,
    preempt_count: AtomicU32,
    switches: AtomicU64,
    /// Switches that were IPC hand-offs (see `block_and_switch_to`).
    hand_offs: AtomicU64,
    /// The CPU's executor has futures ready: the next switch goes to the
    /// dispatcher, which polls them (see `super::futures`).
    futures: AtomicBool,
    /// When the policy wants to be asked again whether a thread enqueued
    /// here (new, woken, moved) should preempt the running one (TSC; `u64::MAX`:
    /// no check pending). Written under the lock; armed as an early tick.
    wake_check_at: AtomicU64,
    ready: AtomicBool,
}

// SAFETY: `inner` is only touched with `lock` held (and interrupts off);
// the rest are atomics.
unsafe impl Sync for CpuScheduler {}

static CPUS: [CpuScheduler; MAX_CPUS] = [const {
    CpuScheduler {
        lock: AtomicBool::new(false),
        inner: UnsafeCell::new(Inner {
            policy: None,
            dispatcher: core::ptr::null(),
            picked_at: 0,
            slice_started: 0,
            dead: core::ptr::null(),
            evicted: core::ptr::null(),
        }),
        current: AtomicPtr::new(core::ptr::null_mut()),
        need_resched: AtomicBool::new(false),
        idle: AtomicBool::new(false),
        queued: AtomicU32::new(0),
        preempt_count: AtomicU32::new(0),
        switches: AtomicU64::new(0),
        hand_offs: AtomicU64::new(0),
        futures: AtomicBool::new(false),
        wake_check_at: AtomicU64::new(u64::MAX),
        ready: AtomicBool::new(false),
    }
}; MAX_CPUS];

static TOPOLOGY: spin::Once<placement::Topology> = spin::Once::new();
static POLICY_CONFIG: spin::Once<Config> = spin::Once::new();

impl CpuScheduler {
    #[inline]
    fn lock(&self) {
        if self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0u64;
        while self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.lock.load(Ordering::Relaxed) {
                core::hint::spin_loop();
                spins += 1;
                if spins == 100_000_000 {
                    crate::console::write_fmt_panicking(format_args!(
                        "cpu{}: stuck on the run-queue lock of cpu{}\n",
                        cpu_index(),
                        (self as *const Self as usize - CPUS.as_ptr() as usize) / core::mem::size_of::<Self>()
                    ));
                }
            }
        }
    }

    fn unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }

    /// # Safety
    /// The caller holds `lock` (with interrupts off), and drops the returned
    /// reference before releasing it.
    #[allow(clippy::mut_from_ref, reason = "exclusive access is what the lock grants")]
    unsafe fn inner(&self) -> &mut Inner {
        // SAFETY: per the contract.
        unsafe { &mut *self.inner.get() }
    }
}

fn this_cpu() -> &'static CpuScheduler {
    &CPUS[cpu_index()]
}

/// The thread running on this CPU.
pub fn current() -> &'static Thread {
    // Read in one instruction: a thread preempted and moved to another CPU
    // between reading its CPU index and that CPU's current thread would
    // see whoever runs on its old CPU.
    let pointer = crate::arch::cpu::running_thread() as *const Thread;
    assert!(!pointer.is_null(), "no current thread: the scheduler is not running on this CPU");
    // SAFETY: the current thread is alive while it runs (the table holds it
    // until the reaper, which runs only after it is off every CPU).
    unsafe { &*pointer }
}

/// A strong reference to the thread running on this CPU.
pub fn current_arc() -> Arc<Thread> {
    // See `current`.
    let pointer = crate::arch::cpu::running_thread() as *const Thread;
    assert!(!pointer.is_null(), "no current thread: the scheduler is not running on this CPU");
    // SAFETY: the pointer is the table's `Arc` of the running thread, which
    // stays in the table (and so alive) at least until it has stopped
    // running; taking one more reference needs no table lock.
    unsafe {
        Arc::increment_strong_count(pointer);
        Arc::from_raw(pointer)
    }
}

/// True once this CPU runs the scheduler.
pub fn is_running() -> bool {
    this_cpu().ready.load(Ordering::Acquire)
}

/// The thread CPU `cpu` runs (its dispatcher between threads), if it has
/// started scheduling. Stale as soon as it is read unless that CPU is
/// stopped (the debugger's use).
pub fn current_on(cpu: usize) -> Option<ThreadId> {
    let pointer = CPUS.get(cpu)?.current.load(Ordering::Acquire);
    // SAFETY: a CPU's current thread stays in the table (and so alive) at
    // least until another thread has run there after it; reading its
    // immutable id is sound for as long as that holds, which is the
    // moment of this read.
    (!pointer.is_null()).then(|| unsafe { (*pointer).id() })
}

/// True once CPU `cpu` runs the scheduler.
pub fn is_running_on(cpu: usize) -> bool {
    CPUS[cpu].ready.load(Ordering::Acquire)
}

/// Sets the policy configuration and the CPU topology, and gives every CPU
/// its run queue (on the bootstrap CPU, before any CPU starts scheduling):
/// threads may be queued on a CPU before its dispatcher runs.
pub fn init(config: Config, kind: PolicyKind) {
    POLICY_CONFIG.call_once(|| config);
    for cpu in CPUS.iter().take(smp::cpu_count()) {
        let mut policy = AnyPolicy::new(kind, config).expect("a valid policy configuration");
        // Room for the usual number of threads, so enqueues rarely allocate
        // under the lock.
        let _ = policy.reserve(64);
        interrupts::without(|| {
            cpu.lock();
            // SAFETY: lock held, interrupts off.
            unsafe { cpu.inner() }.policy = Some(policy);
            cpu.unlock();
        });
    }
    TOPOLOGY.call_once(|| {
        let cpus: Vec<placement::CpuInfo> = (0..smp::cpu_count())
            .map(|index| {
                let place = smp::location(index);
                placement::CpuInfo { index: index as u32, package: place.package, core: place.core, smt: place.thread }
            })
            .collect();
        placement::Topology::new(&cpus).expect("the CPU table is a valid topology")
    });
    traps::set_handler(traps::WAKE_VECTOR, |_frame| {
        apic::end_of_interrupt();
        arm_wake_check();
    });
    traps::set_preempt_hook(preempt_point);
}

/// Makes the calling context this CPU's dispatcher thread and starts
/// scheduling here.
pub fn start_cpu(dispatcher: Arc<Thread>) {
    let cpu = this_cpu();
    interrupts::without(|| {
        cpu.lock();
        // SAFETY: lock held, interrupts off.
        let inner = unsafe { cpu.inner() };
        inner.dispatcher = Arc::as_ptr(&dispatcher);
        inner.picked_at = tsc::now();
        inner.slice_started = inner.picked_at;
        dispatcher.descriptor.set_state(ThreadState::Running);
        cpu.current.store(Arc::as_ptr(&dispatcher).cast_mut(), Ordering::Relaxed);
        crate::arch::cpu::set_running_thread(Arc::as_ptr(&dispatcher) as u64);
        cpu.unlock();
    });
    cpu.ready.store(true, Ordering::Release);
    // The table keeps the dispatcher alive for ever.
    drop(dispatcher);
}

/// Picks the next thread to run (lock held): the policy's choice, or the
/// dispatcher.
///
/// # Safety
/// The caller holds `cpu`'s lock.
unsafe fn pick_locked(cpu: &CpuScheduler, inner: &mut Inner) -> *const Thread {
    let policy = inner.policy.as_mut().expect("scheduler started");
    let picked = policy.pick_next();
    cpu.queued.store(policy.len() as u32, Ordering::Relaxed);
    let Some(entity) = picked else {
        return inner.dispatcher;
    };
    // SAFETY: it was queued here, so it is alive.
    let next = unsafe { thread::of_entity(&entity) };
    // SAFETY: the thread was queued here, so this lock covers its fields.
    unsafe {
        *next.descriptor.entity.get() = entity;
        *next.descriptor.token.get() = None;
    }
    // A thread of a killed task still runs once more: it stops at the
    // point where it resumes (a preemption point, or a wait that first
    // takes back its registration).
    next
}

/// What an enqueue asks of the CPU it enqueued on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resched {
    /// Nothing.
    No,
    /// Reschedule now (the new thread preempts the running one).
    Now,
    /// Arm the earlier wake-up check now recorded in `wake_check_at`.
    Check,
}

/// Puts `thread` in `cpu`'s queue (lock held) and returns what `cpu` should
/// do: reschedule now, check again later (the policy's wake-up
/// preemption), or nothing (not asked for `Yielded` and `Preempted`, where
/// the caller is about to pick anyway).
///
/// # Safety
/// The caller holds `cpu`'s lock and owns `thread` (it is in no queue, not
/// running, and its context is saved or not yet started).
unsafe fn enqueue_locked(cpu: &CpuScheduler, target: usize, thread: &Thread, why: EnqueueReason) -> Resched {
    // SAFETY: the caller holds the lock.
    let inner = unsafe { cpu.inner() };
    let policy = inner.policy.as_mut().expect("scheduler started on the target CPU");
    // SAFETY: the caller owns the thread.
    let entity = unsafe { *thread.descriptor.entity.get() };
    let token = match policy.enqueue(entity, why) {
        Ok(token) => token,
        Err(error) => panic!("run queue of cpu{target} cannot grow for thread {}: {}", thread.id().0, error.cause),
    };
    cpu.queued.store(policy.len() as u32, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { *thread.descriptor.token.get() = Some(token) };
    thread.descriptor.cpu.store(target as u32, Ordering::Release);
    thread.descriptor.set_state(ThreadState::Runnable);
    if matches!(why, EnqueueReason::Yielded | EnqueueReason::Preempted) {
        return Resched::No;
    }
    let current = cpu.current.load(Ordering::Relaxed);
    if current.is_null() || core::ptr::eq(current, inner.dispatcher) {
        return Resched::Now;
    }
    // SAFETY: the current thread of a CPU is alive while the lock is held.
    let current = unsafe { &*current };
    // SAFETY: a running thread's entity belongs to its CPU, whose lock we hold.
    let running = unsafe { *current.descriptor.entity.get() };
    let ran = tsc::now().saturating_sub(inner.picked_at);
    if why != EnqueueReason::Wakeup {
        // A new or moved thread waits for the running one's slice like any
        // queued thread, unless the tick's rule lets it in now.
        return if policy.should_preempt(&running, ran) { Resched::Now } else { Resched::No };
    }
    match policy.check_wakeup(&running, ran) {
        WakeupCheck::Preempt => Resched::Now,
        WakeupCheck::AskAt(ran) => {
            let at = inner.picked_at.saturating_add(ran);
            if cpu.wake_check_at.fetch_min(at, Ordering::Relaxed) > at { Resched::Check } else { Resched::No }
        }
        WakeupCheck::RunOn => Resched::No,
    }
}

/// Arms this CPU's pending wake-up check as an early tick (interrupts off).
fn arm_wake_check() {
    let at = this_cpu().wake_check_at.load(Ordering::Relaxed);
    if at != u64::MAX {
        time::advance_slice_deadline(at);
    }
}

/// Tells CPU `target` to reschedule: a flag, and an IPI if it is another CPU.
fn kick(target: usize) {
    CPUS[target].need_resched.store(true, Ordering::Release);
    if target != cpu_index() {
        apic::send_ipi(smp::apic_id(target), traps::WAKE_VECTOR);
    }
}

/// Chooses where a thread that becomes runnable should go: an allowed CPU
/// by Alux's hardware-thread order (idle cores first, busy cores' SMT
/// siblings last), preferring the CPU it last ran on when that is idle.
fn choose_cpu(thread: &Thread) -> usize {
    let allowed = thread.descriptor.allowed();
    let previous = thread.descriptor.cpu();
    let count = smp::cpu_count();
    if count == 1 {
        return 0;
    }
    let ready = |cpu: usize| cpu < count && CPUS[cpu].ready.load(Ordering::Acquire) && allowed.contains(cpu);
    if ready(previous)
        && CPUS[previous].idle.load(Ordering::Acquire)
        && CPUS[previous].queued.load(Ordering::Relaxed) == 0
    {
        return previous;
    }
    let mut loads = [placement::CpuLoad::default(); MAX_CPUS];
    for (cpu, load) in loads.iter_mut().enumerate().take(count) {
        let scheduler = &CPUS[cpu];
        *load = placement::CpuLoad {
            queued: scheduler.queued.load(Ordering::Relaxed),
            running: !scheduler.idle.load(Ordering::Relaxed),
        };
    }
    let topology = TOPOLOGY.get().expect("scheduler::init first");
    match topology.choose_cpu(&loads[..count], &mut |cpu| ready(cpu as usize)) {
        // Between equally loaded CPUs, the one it last ran on (its cache is
        // warm there, and it does not wander).
        Ok(Some(cpu)) if ready(previous) && loads[previous] == loads[cpu as usize] => previous,
        Ok(Some(cpu)) => cpu as usize,
        // No allowed CPU runs yet (early in boot): queue on an allowed one
        // anyway; its dispatcher picks the thread up when it starts. Never
        // outside the affinity.
        _ => (0..count).find(|cpu| allowed.contains(*cpu)).unwrap_or(previous),
    }
}

/// Queues a new thread on the best CPU for it.
pub(super) fn enqueue_new(thread: &Thread) {
    let target = choose_cpu(thread);
    place(thread, target, EnqueueReason::New);
}

/// Enqueues `thread`, which the caller owns, on `target` and kicks it if
/// needed.
fn place(thread: &Thread, target: usize, why: EnqueueReason) {
    let cpu = &CPUS[target];
    let resched = interrupts::without(|| {
        cpu.lock();
        // SAFETY: lock held; the caller owns the thread.
        let resched = unsafe { enqueue_locked(cpu, target, thread, why) };
        cpu.unlock();
        if resched == Resched::Check && target == cpu_index() {
            arm_wake_check();
            return Resched::No;
        }
        resched
    });
    trace::record(EventKind::Wake, thread.id().0, target as u64);
    // Pairs with the fence in the dispatcher's idle check: either it sees
    // the new entry, or this sees it idle and sends the IPI.
    fence(Ordering::SeqCst);
    if resched == Resched::Now || cpu.idle.load(Ordering::SeqCst) {
        kick(target);
    } else if resched == Resched::Check {
        // Its wake-up interrupt arms the check there.
        apic::send_ipi(smp::apic_id(target), traps::WAKE_VECTOR);
    }
}

/// Wakes `thread` if it is waiting (or about to). Returns false if it was
/// not waiting. Wake-ups may be spurious for the woken: waiters re-check
/// their condition.
pub fn wake(thread: &Thread, reason: WakeReason) -> bool {
    loop {
        match thread.state() {
            ThreadState::Blocking => {
                thread.set_wake_reason(reason);
                if thread.descriptor.transition(ThreadState::Blocking, ThreadState::Running) {
                    return true;
                }
            }
            ThreadState::Blocked => {
                if thread.descriptor.transition(ThreadState::Blocked, ThreadState::Waking) {
                    thread.set_wake_reason(reason);
                    // The thread went `Blocked` under its CPU's lock, and that
                    // lock is released only after its context is saved:
                    // passing through the lock orders this after the save.
                    let old = &CPUS[thread.descriptor.cpu()];
                    interrupts::without(|| {
                        old.lock();
                        old.unlock();
                    });
                    let target = choose_cpu(thread);
                    place(thread, target, EnqueueReason::Wakeup);
                    return true;
                }
            }
            _ => return false,
        }
    }
}

/// Wakes the thread with this id, if it is still in wait `generation`
/// (a sleep timer's wake-up).
pub fn wake_timer(id: ThreadId, generation: u64) {
    if let Some(thread) = thread::lookup(id)
        && thread.wait_generation.load(Ordering::Acquire) == generation
    {
        wake(thread, WakeReason::Timeout);
    }
}

/// Whether a sleep timer for wait number `generation` of thread `id` can
/// still wake anything: the thread exists, is in that wait, and has not been
/// woken from it. A timer that cannot is only memory (see
/// `time::add_timer`'s purge).
/// Looks the thread up as [`wake_timer`] does.
pub fn timer_is_live(id: ThreadId, generation: u64) -> bool {
    thread::lookup(id).is_some_and(|thread| {
        thread.wait_generation.load(Ordering::Acquire) == generation
            && matches!(thread.descriptor.state(), ThreadState::Blocking | ThreadState::Blocked)
    })
}

/// What [`block_and_switch_to`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOff {
    /// The current thread is `Blocked` and the target runs in its place
    /// (it is this CPU's current thread now).
    Switched,
    /// The current thread was woken (or killed) before it could sleep: it
    /// carries on; the target was made runnable the ordinary way.
    CarryOn,
    /// No hand-off: the target was woken the ordinary way; the caller blocks
    /// with `schedule(Switch::Block)`.
    Block,
}

/// Blocks the current user thread (already `Blocking`, registered where its
/// waker looks) and hands this CPU straight to `target`, a `Blocked` user
/// thread the caller took off a wait queue instead of waking it (a mailbox
/// doorbell it rang), without going through the run queue: the
/// synchronous-IPC hand-off of L4 and seL4. The target inherits what is left
/// of the current time slice, so a pair of threads calling each other cannot
/// keep the CPU from the rest of its queue beyond one slice.
///
/// Only when `target` last ran on this CPU and may run here; otherwise it is
/// woken the ordinary way.
pub fn block_and_switch_to(target: &Thread) -> HandOff {
    let me = current();
    let here = cpu_index();
    if me.kind != ThreadKind::User
        || target.kind != ThreadKind::User
        || core::ptr::eq(me, target)
        || target.descriptor.cpu() != here
        || !target.descriptor.allowed().contains(here)
    {
        wake(target, WakeReason::Woken);
        return HandOff::Block;
    }
    let saved = interrupts::save_and_disable();
    let cpu = this_cpu();
    cpu.lock();
    // SAFETY: lock held, interrupts off.
    let inner = unsafe { cpu.inner() };
    // Take the target first, under this CPU's lock: a `Blocked` thread moves
    // only by this transition, so once it succeeds nobody else places it.
    // Its registers were saved by this dispatcher before it went `Blocked`
    // (which happened under this lock), so it may run at once.
    if target.descriptor.cpu() != here || !target.descriptor.transition(ThreadState::Blocked, ThreadState::Running) {
        // Woken by someone else meanwhile (a time-out, a kill): nothing left
        // to hand over.
        cpu.unlock();
        interrupts::restore(saved);
        return HandOff::Block;
    }
    if !target.descriptor.allowed().contains(here) {
        // Its affinity moved away from this CPU since the check above: put
        // it back and let the ordinary wake place it where it may run.
        target.descriptor.set_state(ThreadState::Blocked);
        cpu.unlock();
        interrupts::restore(saved);
        wake(target, WakeReason::Woken);
        return HandOff::Block;
    }
    target.set_wake_reason(WakeReason::Woken);
    let killed = me.task.is_killed();
    if killed && me.descriptor.transition(ThreadState::Blocking, ThreadState::Running) {
        me.set_wake_reason(WakeReason::Killed);
    }
    if killed || !me.descriptor.transition(ThreadState::Blocking, ThreadState::Blocked) {
        // Woken (or killed) before it could sleep: it carries on, and the
        // target joins this CPU's queue as any woken thread would.
        // SAFETY: lock held; the target is ours since the transition above.
        match unsafe { enqueue_locked(cpu, here, target, EnqueueReason::Wakeup) } {
            Resched::Now => cpu.need_resched.store(true, Ordering::Relaxed),
            Resched::Check => arm_wake_check(),
            Resched::No => {}
        }
        cpu.unlock();
        interrupts::restore(saved);
        return HandOff::CarryOn;
    }
    // `me` is `Blocked` now; a waker that finds it passes through this lock
    // (see `wake`), so it is not placed anywhere before the switch is done.
    let now = tsc::now();
    let policy = inner.policy.as_mut().expect("started");
    // SAFETY: the current thread's entity belongs to this CPU's lock.
    policy.charge(unsafe { &mut *me.descriptor.entity.get() }, now.saturating_sub(inner.picked_at));
    inner.picked_at = now;
    cpu.current.store((target as *const Thread).cast_mut(), Ordering::Relaxed);
    crate::arch::cpu::set_running_thread(target as *const Thread as u64);
    // Only this CPU counts (under its lock): no locked adds.
    cpu.switches.store(cpu.switches.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    cpu.hand_offs.store(cpu.hand_offs.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    trace::record(EventKind::Block, me.id().0, target.id().0);
    if target.descriptor.page_table_root != me.descriptor.page_table_root {
        // SAFETY: the target's address space lives while its task has live
        // threads; the kernel half maps this code and the dispatcher's stack;
        // interrupts are off.
        unsafe {
            pcid::switch_to_masked(
                target.descriptor.page_table_root,
                target.descriptor.address_space_id,
                target.task.space_generation(),
            )
        };
    }
    cpu.unlock();
    interrupts::restore(saved);
    HandOff::Switched
}

/// Called from the timer interrupt when the running thread's slice is up.
pub fn slice_expired(now: u64) {
    let cpu = this_cpu();
    if !cpu.ready.load(Ordering::Relaxed) {
        return;
    }
    cpu.lock();
    // SAFETY: lock held, interrupts off (timer handler).
    let inner = unsafe { cpu.inner() };
    let current = cpu.current.load(Ordering::Relaxed);
    if !current.is_null() && !core::ptr::eq(current, inner.dispatcher) {
        // SAFETY: the current thread is alive; its entity is ours under the lock.
        let (entity, must_stop) = unsafe { (*(*current).descriptor.entity.get(), (*current).must_stop()) };
        let policy = inner.policy.as_ref().expect("started");
        let ran = now.saturating_sub(inner.picked_at);
        let slice = policy.time_slice(&entity);
        // A chain of hand-offs shares one slice: once it is used up, anyone
        // queued here gets the CPU, however little each link ran.
        let slice_over = now.saturating_sub(inner.slice_started) >= slice && !policy.is_empty();
        // Futures left ready when the dispatcher's last turn ran out of
        // budget: a thread alone here would otherwise run slice after slice
        // (nothing queued to preempt it for) while they wait.
        let futures_waiting = cpu.futures.load(Ordering::Relaxed);
        let mut preempt = must_stop || slice_over || futures_waiting || policy.should_preempt(&entity, ran);
        // A wake-up check that came due (an early tick armed for it): the
        // policy's wake-up preemption, which may let a woken thread in
        // before the slice ends, or asks to be asked again.
        let wake_check_at = cpu.wake_check_at.load(Ordering::Relaxed);
        let mut next_check = wake_check_at;
        if !preempt && wake_check_at <= now {
            next_check = u64::MAX;
            match policy.check_wakeup(&entity, ran) {
                WakeupCheck::Preempt => preempt = true,
                // Not sooner than 50 us from now, whatever a policy answers:
                // the check must not become an interrupt storm.
                WakeupCheck::AskAt(at) => {
                    next_check = inner.picked_at.saturating_add(at).max(now.saturating_add(tsc::hz() / 20_000));
                }
                WakeupCheck::RunOn => {}
            }
        }
        if preempt {
            cpu.need_resched.store(true, Ordering::Relaxed);
            next_check = u64::MAX;
        }
        cpu.wake_check_at.store(next_check, Ordering::Relaxed);
        // The next tick: the end of this slice, or if it is over (nobody
        // to run instead), another one; if a switch was asked for, the
        // switch arms the next thread's, and should the request not be
        // acted on yet (the thread is inside a critical section that ends
        // later), the tick comes again to ask anew. A pending wake-up check
        // comes first.
        let slice_end = inner.slice_started.saturating_add(slice);
        let next = if slice_end > now { slice_end } else { now.saturating_add(slice) };
        time::set_slice_deadline(next.min(next_check));
    }
    cpu.unlock();
}

/// Called on the way out of every interrupt that arrived in kernel mode:
/// switch if a reschedule is due and the interrupted code may be preempted.
pub fn preempt_point() {
    let cpu = this_cpu();

    if !cpu.need_resched.load(Ordering::Relaxed) || !cpu.ready.load(Ordering::Relaxed) {
        return;
    }
    if cpu.preempt_count.load(Ordering::Relaxed) != 0 {
        return;
    }
    // A thread between marking itself Blocking and calling schedule is about
    // to give the CPU up anyway; a user thread's dispatcher reschedules at the
    // top of its loop, never in the middle of handling a trap.
    let current = current();
    if current.state() != ThreadState::Running || current.kind == ThreadKind::User {
        return;
    }
    requeue(Switch::Preempt);
}

/// True when this CPU should reschedule (for the dispatcher's user loop).
pub fn reschedule_due() -> bool {
    this_cpu().need_resched.load(Ordering::Relaxed)
}

/// Gives way to another runnable thread, if any.
pub fn yield_now() {
    requeue(Switch::Yield);
}

/// Puts the running thread back in the queue for `why` (a yield or a
/// preemption) and runs whoever comes next: the lean path when it applies,
/// `schedule` otherwise.
pub fn requeue(why: Switch) {
    debug_assert!(matches!(why, Switch::Yield | Switch::Preempt));
    if !requeue_fast(why) {
        schedule(why);
    }
}

/// The common case of `schedule` on a lean path of its own: a kernel or
/// user thread that yields or is preempted and may stay on this CPU. One
/// policy call charges it, queues it and picks the next; the switch follows
/// with nothing else to decide. Returns false, having changed nothing, when
/// the general path is needed: the dispatcher, a critical section, a thread
/// that must stop or may no longer run here. (Ready kernel futures are
/// handled here: the thread is queued and the dispatcher runs next.)
#[inline(never)]
fn requeue_fast(why: Switch) -> bool {
    let saved = interrupts::save_and_disable();
    let here = cpu_index();
    let cpu = &CPUS[here];
    // SAFETY: the current thread is alive while it runs; with interrupts
    // off it stays this CPU's.
    let previous: &Thread = unsafe { &*(crate::arch::cpu::running_thread() as *const Thread) };
    if previous.kind == ThreadKind::Dispatcher || cpu.preempt_count.load(Ordering::Relaxed) != 0 {
        interrupts::restore(saved);
        return false;
    }
    cpu.lock();
    // Read under the lock: `set_affinity` and `kill_task` change these
    // before they take it to ask for a reschedule, which the store below
    // clears.
    if previous.must_stop() || !previous.descriptor.allowed().contains(here) {
        cpu.unlock();
        interrupts::restore(saved);
        return false;
    }
    cpu.need_resched.store(false, Ordering::Relaxed);
    // SAFETY: lock held, interrupts off.
    let inner = unsafe { cpu.inner() };
    let now = tsc::now();
    let Some(policy) = inner.policy.as_mut() else {
        cpu.unlock();
        interrupts::restore(saved);
        return false;
    };
    let reason = if why == Switch::Yield { EnqueueReason::Yielded } else { EnqueueReason::Preempted };
    // Ready futures go before threads: the dispatcher polls them. Read
    // under the lock and after the request is cleared, as in `schedule`:
    // a `futures_ready` this misses sets the request again.
    if cpu.futures.load(Ordering::Acquire) {
        // SAFETY: the running thread's entity belongs to this CPU's lock.
        policy.charge(unsafe { &mut *previous.descriptor.entity.get() }, now.saturating_sub(inner.picked_at));
        // SAFETY: lock held; the running thread is ours to queue.
        unsafe { enqueue_locked(cpu, here, previous, reason) };
        // SAFETY: the dispatcher lives for ever; lock held, interrupts
        // off, `previous` queued.
        unsafe { switch_away(cpu, here, inner, previous, &*inner.dispatcher, now, u64::MAX, why, saved) };
        return true;
    }
    // SAFETY: the running thread's entity belongs to this CPU's lock. The
    // policy leaves in it the entity of the thread to run next.
    let running = unsafe { &mut *previous.descriptor.entity.get() };
    let (next, slice) = match policy.requeue_and_pick(running, now.saturating_sub(inner.picked_at), reason) {
        Ok(Picked { queued: Some(token), slice }) => {
            let entity = *running;
            // SAFETY: it was queued here, so it is alive.
            let next = unsafe { thread::of_entity(&entity) };
            // SAFETY: `previous` is queued under `token` now; the picked
            // thread left this CPU's queue, so its fields are ours.
            unsafe {
                *previous.descriptor.token.get() = Some(token);
                *next.descriptor.entity.get() = entity;
                *next.descriptor.token.get() = None;
            }
            previous.descriptor.set_state(ThreadState::Runnable);
            (next, slice)
        }
        Ok(Picked { queued: None, slice }) => {
            // Still first in line: it runs on, with a fresh slice.
            inner.picked_at = now;
            inner.slice_started = now;
            cpu.wake_check_at.store(u64::MAX, Ordering::Relaxed);
            time::set_slice_deadline_on(here, now + slice);
            cpu.unlock();
            super::reaper::kick_if_pending();
            interrupts::restore(saved);
            return true;
        }
        Err(_) => unreachable!("the built-in policies requeue without failing"),
    };
    // SAFETY: lock held, interrupts off; `previous` is queued and `next`
    // picked here.
    unsafe { switch_away(cpu, here, inner, previous, next, now, now + slice, why, saved) };
    true
}

/// Waits after the caller marked the thread `Blocking` and made it findable
/// by its waker; returns why it woke. A wake-up that came before this call
/// returns at once. If the task was killed and the thread holds nothing,
/// the caller must undo its registration and call `exit_current`.
pub(super) fn block_current() -> WakeReason {
    assert!(
        current().kind != ThreadKind::User,
        "a blocking wait on behalf of a user thread: system calls that wait must be futures"
    );
    schedule(Switch::Block);
    current().wake_reason()
}

/// Ends the current thread. Its stack is freed after the switch away from
/// it, never here.
pub fn exit_current() -> ! {
    {
        // Retiring must not be cut short by a kill stopping the thread at a
        // preemption point half-way (that would leave the task retained).
        let _critical = PreemptGuard::new();
        super::reaper::retire(current());
    }
    schedule(Switch::Exit);
    unreachable!("a dead thread was resumed");
}

/// The heart of the mechanism: put the current thread away for `why`, pick
/// the next, switch.
pub fn schedule(why: Switch) {
    let saved = interrupts::save_and_disable();
    // The CPU this runs on until the switch (read once: each read is a
    // GS-relative load and a bounds check).
    let here = cpu_index();
    let cpu = &CPUS[here];
    assert!(
        cpu.preempt_count.load(Ordering::Relaxed) == 0 || why == Switch::Preempt,
        "schedule({why:?}) inside a critical section"
    );
    cpu.lock();
    cpu.need_resched.store(false, Ordering::Relaxed);
    // SAFETY: lock held, interrupts off.
    let inner = unsafe { cpu.inner() };
    let now = tsc::now();
    // SAFETY: the current thread is alive while it runs.
    let previous: &Thread = unsafe { &*cpu.current.load(Ordering::Relaxed) };
    let is_dispatcher = core::ptr::eq(previous, inner.dispatcher);
    // Ready kernel futures go before threads: the dispatcher polls them
    // (a bounded batch) and then picks again.
    let to_dispatcher = !is_dispatcher && cpu.futures.load(Ordering::Acquire);
    let mut why = why;
    // The common case, a yield or preemption of a thread that may stay
    // here, takes `requeue_fast` before coming here; this is the rest.
    if !is_dispatcher {
        let policy = inner.policy.as_mut().expect("started");
        // SAFETY: the running thread's entity belongs to this CPU's lock.
        let entity = unsafe { &mut *previous.descriptor.entity.get() };
        policy.charge(entity, now.saturating_sub(inner.picked_at));
        if matches!(why, Switch::Yield | Switch::Preempt) && previous.must_stop() {
            why = Switch::Exit;
        }
        match why {
            Switch::Yield | Switch::Preempt => {
                if previous.descriptor.allowed().contains(here) {
                    let reason = if why == Switch::Yield { EnqueueReason::Yielded } else { EnqueueReason::Preempted };
                    // SAFETY: lock held; the running thread is ours.
                    unsafe { enqueue_locked(cpu, here, previous, reason) };
                } else {
                    // Its affinity moved away from this CPU: park it and let
                    // the next thread place it once its context is saved.
                    previous.descriptor.set_state(ThreadState::Blocked);
                    inner.evicted = previous;
                }
            }
            Switch::Block => {
                // A kill that looked at this thread before it was Blocking
                // only asked its CPU to reschedule; seeing the kill here
                // (the fence in `prepare` pairs with the one in `kill_task`)
                // closes that window: the wait returns Killed instead.
                if previous.task.is_killed()
                    && previous.descriptor.transition(ThreadState::Blocking, ThreadState::Running)
                {
                    previous.set_wake_reason(WakeReason::Killed);
                }
                if !previous.descriptor.transition(ThreadState::Blocking, ThreadState::Blocked) {
                    // Woken before it could sleep: carry on (or stop, if
                    // the wake-up was a kill and nothing is held).
                    inner.picked_at = now;
                    cpu.unlock();
                    interrupts::restore(saved);
                    return;
                }
            }
            Switch::Exit => {
                previous.descriptor.set_state(ThreadState::Dead);
                inner.dead = previous;
            }
        }
    }
    let next = if to_dispatcher {
        // SAFETY: the dispatcher lives for ever.
        unsafe { &*inner.dispatcher }
    } else {
        // SAFETY: lock held; a picked thread stays alive while it is this
        // CPU's to run.
        unsafe { &*pick_locked(cpu, inner) }
    };
    if core::ptr::eq(next, previous) {
        // Only the dispatcher can be picked "again" (a running thread is in
        // no queue), or a yield with nothing else to run re-picks itself.
        previous.descriptor.set_state(ThreadState::Running);
        inner.picked_at = now;
        inner.slice_started = now;
        cpu.wake_check_at.store(u64::MAX, Ordering::Relaxed);
        if !is_dispatcher {
            // It runs on: a fresh slice, or nothing would preempt it again.
            let policy = inner.policy.as_ref().expect("started");
            // SAFETY: the running thread's entity belongs to this CPU's lock.
            let slice = policy.time_slice(unsafe { &*previous.descriptor.entity.get() });
            time::set_slice_deadline_on(here, now + slice);
        }
        cpu.unlock();
        super::reaper::kick_if_pending();
        interrupts::restore(saved);
        if previous.must_stop() && previous.kind == ThreadKind::Kernel {
            exit_current();
        }
        return;
    }
    let slice_end = if core::ptr::eq(next, inner.dispatcher) {
        u64::MAX
    } else {
        let policy = inner.policy.as_ref().expect("started");
        // SAFETY: `next` was just picked here; its entity is ours.
        now + policy.time_slice(unsafe { &*next.descriptor.entity.get() })
    };
    // SAFETY: lock held, interrupts off (`saved` is their state before);
    // `previous` is put away and `next` picked, as `switch_away` requires.
    unsafe { switch_away(cpu, here, inner, previous, next, now, slice_end, why, saved) };
}

/// The switch itself, shared by `schedule` and `requeue_fast`: makes `next`
/// this CPU's running thread until `slice_end`, switches address space,
/// FPU state and stack, and on resuming releases the lock and stops a
/// killed kernel thread.
///
/// # Safety
/// The caller holds `cpu`'s lock with interrupts off (`saved` is their
/// state before), `here` is this CPU, `previous` is the thread that was
/// running and is already put where it belongs (queued, blocked, dead or
/// evicted), and `next` was picked here and is not running anywhere.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "the switch's whole state, passed in registers")]
unsafe fn switch_away(
    cpu: &CpuScheduler,
    here: usize,
    inner: &mut Inner,
    previous: &Thread,
    next: &Thread,
    now: u64,
    slice_end: u64,
    why: Switch,
    saved: interrupts::SavedState,
) {
    next.descriptor.set_state(ThreadState::Running);
    next.descriptor.cpu.store(here as u32, Ordering::Relaxed);
    inner.picked_at = now;
    inner.slice_started = now;
    // A new run: a pending wake-up check was about the previous one. (Its
    // early tick, if armed, comes and finds nothing due: cheaper than a
    // timer write at every switch.)
    cpu.wake_check_at.store(u64::MAX, Ordering::Relaxed);
    cpu.current.store((next as *const Thread).cast_mut(), Ordering::Relaxed);
    crate::arch::cpu::set_running_thread(next as *const Thread as u64);
    // User threads have no stack: they run on the dispatcher's.
    // SAFETY: the dispatcher pointer is set when the CPU starts and lives for
    // ever.
    let dispatcher = unsafe { &*inner.dispatcher };
    let from_stack = if previous.kind == ThreadKind::User { dispatcher } else { previous };
    let to_stack = if next.kind == ThreadKind::User { dispatcher } else { next };
    // Only this CPU counts its switches (under its lock): no locked add.
    cpu.switches.store(cpu.switches.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    time::set_slice_deadline_on(here, slice_end);
    if trace::is_enabled() {
        let kind = match why {
            Switch::Preempt => EventKind::Preempt,
            Switch::Block => EventKind::Block,
            Switch::Yield | Switch::Exit => EventKind::Switch,
        };
        trace::record(kind, previous.id().0, next.id().0);
    }
    if next.descriptor.page_table_root != previous.descriptor.page_table_root {
        // SAFETY: the next thread's address space lives while its task has
        // live threads; the kernel half maps this code and both stacks;
        // interrupts are off.
        unsafe {
            pcid::switch_to_masked(
                next.descriptor.page_table_root,
                next.descriptor.address_space_id,
                next.task.space_generation(),
            )
        };
    }
    // SAFETY: FPU areas are touched only by their thread's CPU while it
    // switches, under the run-queue lock. (User threads' vector registers
    // are saved by their dispatcher when they trap.)
    unsafe {
        if let Some(state) = (*previous.fpu.get()).as_mut() {
            state.save();
        }
        if let Some(state) = (*next.fpu.get()).as_ref() {
            state.restore();
            super::user::fpu_clobbered();
        }
    }
    if core::ptr::eq(from_stack, to_stack) {
        // From the dispatcher to a user thread, or from one user thread to
        // another: the dispatcher's stack carries on, and hands on what the
        // resuming side would.
        let dead = core::mem::replace(&mut inner.dead, core::ptr::null());
        let evicted = core::mem::replace(&mut inner.evicted, core::ptr::null());
        cpu.unlock();
        hand_on(dead, evicted);
        interrupts::restore(saved);
        return;
    }
    // SAFETY: interrupts are off and the lock is held; `to_stack` is not
    // running anywhere (a queued thread, or this CPU's dispatcher while a
    // kernel thread ran), its saved stack pointer came from `switch_context`
    // or `initial_stack`, and `from_stack`'s save slot lives as long as it.
    unsafe { switch_context(from_stack.descriptor.saved_rsp.get(), *to_stack.descriptor.saved_rsp.get()) };
    // Resumed, possibly on another CPU.
    finish_switch();
    interrupts::restore(saved);
    // A kernel thread of a killed task stops here, at a preemption point,
    // unless it waits: the wait returns first so it can take back its
    // registration (see `wait::stop_if_killed`). User threads are stopped by
    // their dispatcher.
    // Not `previous`: when that was a user thread, this stack is its
    // dispatcher's, which resumes as whoever runs on it now.
    let me = current();
    if why != Switch::Block && me.must_stop() && me.kind == ThreadKind::Kernel {
        exit_current();
    }
}

/// The second half of every switch, run by the thread that resumes:
/// releases the run-queue lock the previous thread took, and hands on a
/// dead or evicted previous thread.
#[inline(always)]
pub(super) fn finish_switch() {
    let cpu = this_cpu();
    // SAFETY: the lock is held (taken by the thread that switched to us).
    let inner = unsafe { cpu.inner() };
    if inner.dead.is_null() && inner.evicted.is_null() {
        // The common case: nothing to hand on, nothing to clear.
        cpu.unlock();
        super::reaper::kick_if_pending();
        return;
    }
    let dead = core::mem::replace(&mut inner.dead, core::ptr::null());
    let evicted = core::mem::replace(&mut inner.evicted, core::ptr::null());
    cpu.unlock();
    hand_on_slow(dead, evicted);
}

/// Hands on a thread that died or was evicted in the last switch (the
/// common case, neither, is a check inlined into the switch path).
#[inline]
fn hand_on(dead: *const Thread, evicted: *const Thread) {
    if dead.is_null() && evicted.is_null() {
        super::reaper::kick_if_pending();
    } else {
        hand_on_slow(dead, evicted);
    }
}

#[cold]
#[inline(never)]
fn hand_on_slow(dead: *const Thread, evicted: *const Thread) {
    if !dead.is_null() {
        // SAFETY: a dead thread stays in the table until this removes it.
        super::reaper::free_after_switch(unsafe { &*dead });
    }
    if !evicted.is_null() {
        // SAFETY: as above; an evicted thread is `Blocked` with its context
        // saved, so waking it places it on an allowed CPU.
        wake(unsafe { &*evicted }, WakeReason::Woken);
    }
    super::reaper::kick_if_pending();
}

/// Restricts `thread` to `allowed` CPUs, moving it if it is queued or
/// running elsewhere.
pub fn set_affinity(thread: &Thread, allowed: thread::CpuSet) {
    thread.descriptor.allowed.store(allowed.0, Ordering::Release);
    let cpu_number = thread.descriptor.cpu();
    if allowed.contains(cpu_number) {
        return;
    }
    let cpu = &CPUS[cpu_number];
    let moved = interrupts::without(|| {
        cpu.lock();
        let mut moved = false;
        if thread.state() == ThreadState::Runnable && thread.descriptor.cpu() == cpu_number {
            // SAFETY: lock held and the thread is queued here, so its token
            // and the queue are ours to change.
            let (inner, token) = unsafe { (cpu.inner(), (*thread.descriptor.token.get()).take()) };
            if let Some(entity) = token.and_then(|token| inner.policy.as_mut().expect("started").remove(token)) {
                cpu.queued.store(inner.policy.as_ref().expect("started").len() as u32, Ordering::Relaxed);
                // SAFETY: the thread left the queue: it is ours now.
                unsafe { *thread.descriptor.entity.get() = entity };
                thread.descriptor.set_state(ThreadState::Waking);
                moved = true;
            }
        } else if thread.state() == ThreadState::Running {
            // It notices at its next switch.
            kick(cpu_number);
        }
        cpu.unlock();
        moved
    });
    if moved {
        let target = choose_cpu(thread);
        place(thread, target, EnqueueReason::Migrated);
        trace::record(EventKind::Migrate, thread.id().0, target as u64);
    }
}

/// An idle CPU pulls one thread from the busiest CPU whose queued threads
/// may run here. Returns true if it got one.
pub fn pull_work() -> bool {
    let me = cpu_index();
    let count = smp::cpu_count();
    if count < 2 {
        return false;
    }
    let mut loads = [placement::CpuLoad::default(); MAX_CPUS];
    for (cpu, load) in loads.iter_mut().enumerate().take(count) {
        *load = placement::CpuLoad {
            queued: CPUS[cpu].queued.load(Ordering::Relaxed),
            running: !CPUS[cpu].idle.load(Ordering::Relaxed),
        };
    }
    let topology = TOPOLOGY.get().expect("init");
    let Ok(Some(source)) =
        topology.busiest(&loads[..count], me as u32, 1, &mut |cpu| CPUS[cpu as usize].ready.load(Ordering::Relaxed))
    else {
        return false;
    };
    let source = source as usize;
    if source == me {
        return false;
    }
    let (first, second) = if source < me { (source, me) } else { (me, source) };
    let moved = interrupts::without(|| {
        CPUS[first].lock();
        CPUS[second].lock();
        // SAFETY: both locks held.
        let (from, to) = unsafe { (CPUS[source].inner(), CPUS[me].inner()) };
        let stolen = from.policy.as_mut().expect("started").steal(&mut |entity| {
            // SAFETY: a queued entity's thread is alive.
            unsafe { thread::of_entity(entity) }.descriptor.allowed().contains(me)
        });
        CPUS[source].queued.store(from.policy.as_ref().expect("started").len() as u32, Ordering::Relaxed);
        let mut moved = None;
        if let Some(entity) = stolen {
            // SAFETY: it was queued on `source`, so it is alive.
            let thread = unsafe { thread::of_entity(&entity) };
            // SAFETY: the thread left the source queue; both locks held.
            unsafe {
                *thread.descriptor.entity.get() = entity;
                *thread.descriptor.token.get() = None;
                // The dispatcher runs here (the CPU was idle): it picks next.
                let _ = enqueue_locked(&CPUS[me], me, thread, EnqueueReason::Migrated);
            }
            moved = Some(thread.id());
            let _ = to;
        }
        CPUS[second].unlock();
        CPUS[first].unlock();
        moved
    });
    match moved {
        Some(id) => {
            trace::record(EventKind::Migrate, id.0, me as u64);
            true
        }
        None => false,
    }
}

/// Tells CPU `target` that its executor has futures ready: its next switch
/// goes to its dispatcher (now, if it is idle or a reschedule point comes).
pub(super) fn futures_ready(target: usize) {
    CPUS[target].futures.store(true, Ordering::Release);
    if CPUS[target].ready.load(Ordering::Acquire) {
        kick(target);
    }
}

/// Polls in one dispatcher turn at most this many futures before threads
/// get the CPU again.
const FUTURE_BUDGET: usize = 32;

/// The loop every CPU's dispatcher runs once the scheduler is up: poll
/// ready kernel futures, run whatever thread is runnable, pull work when
/// idle, halt when there is none.
pub fn dispatcher_loop() -> ! {
    let cpu = this_cpu();
    loop {
        // A user thread picked for this CPU runs here, on this stack.
        let running = current();
        if running.kind == ThreadKind::User {
            super::user::run(running);
            continue;
        }
        if cpu.futures.swap(false, Ordering::AcqRel) {
            // Not preemptible until the flag is right again: a reschedule
            // requested meanwhile (a wake-up's kick) would otherwise switch
            // away between the turn and the store below, and with the flag
            // clear and the executor's `notified` still set nobody would
            // bring this dispatcher back while threads are runnable.
            let _turn = PreemptGuard::new();
            if super::futures::run_ready(cpu_index(), FUTURE_BUDGET) {
                // Budget spent with more ready: threads get a turn first.
                cpu.futures.store(true, Ordering::Release);
            }
        }
        schedule(Switch::Yield);
        if current().kind == ThreadKind::User {
            continue;
        }
        if pull_work() {
            continue;
        }
        interrupts::disable();
        cpu.idle.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if cpu.queued.load(Ordering::SeqCst) == 0
            && !cpu.need_resched.load(Ordering::SeqCst)
            && !cpu.futures.load(Ordering::SeqCst)
        {
            trace::record(EventKind::Idle, 0, 0);
            interrupts::enable_and_halt();
        } else {
            interrupts::enable();
        }
        cpu.idle.store(false, Ordering::SeqCst);
    }
}

/// Changes the policy of CPU `target` at run time, moving its queued
/// threads into the new policy in the order they would have run.
pub fn set_policy(target: usize, kind: PolicyKind) -> Result<(), orrery_sched::ConfigError> {
    let mut policy = AnyPolicy::new(kind, *POLICY_CONFIG.get().expect("init"))?;
    let cpu = &CPUS[target];
    let mut moved = Vec::new();
    let _ = policy.reserve(64);
    interrupts::without(|| {
        cpu.lock();
        // SAFETY: lock held.
        let inner = unsafe { cpu.inner() };
        let old = inner.policy.as_mut().expect("started");
        old.drain(&mut moved);
        for entity in moved.drain(..) {
            // SAFETY: it was queued here, so it is alive.
            let thread = unsafe { thread::of_entity(&entity) };
            let token = match policy.enqueue(entity, EnqueueReason::Migrated) {
                Ok(token) => token,
                Err(error) => panic!("policy change on cpu{target}, thread {}: {}", thread.id().0, error.cause),
            };
            // SAFETY: the thread is queued on this CPU, whose lock we hold.
            unsafe { *thread.descriptor.token.get() = Some(token) };
        }
        cpu.queued.store(policy.len() as u32, Ordering::Relaxed);
        inner.policy = Some(policy);
        cpu.unlock();
    });
    Ok(())
}

/// The kind of policy CPU `target` runs.
pub fn policy_of(target: usize) -> PolicyKind {
    let cpu = &CPUS[target];
    interrupts::without(|| {
        cpu.lock();
        // SAFETY: lock held.
        let kind = unsafe { cpu.inner() }.policy.as_ref().expect("started").kind();
        cpu.unlock();
        kind
    })
}

/// Asks CPU `target` to reschedule (used by kill for running threads).
pub(super) fn resched(target: usize) {
    kick(target);
}

/// Critical section: code that must not be preempted (Alux's `@critical`).
/// Guards nest; the outermost one to drop switches if a preemption came due
/// meanwhile. The thread must not block inside one.
pub struct PreemptGuard {
    _not_send: core::marker::PhantomData<*const ()>,
}

impl PreemptGuard {
    /// Enters a critical section.
    pub fn new() -> Self {
        // With interrupts off: a preemption between finding this CPU and
        // counting would move the thread, and the count would land on the
        // CPU it left. (Once counted, it stays here until the drop.)
        interrupts::without(|| this_cpu().preempt_count.fetch_add(1, Ordering::Relaxed));
        PreemptGuard { _not_send: core::marker::PhantomData }
    }

    /// Current nesting depth on this CPU (for tests).
    pub fn depth() -> u32 {
        this_cpu().preempt_count.load(Ordering::Relaxed)
    }
}

impl Default for PreemptGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PreemptGuard {
    fn drop(&mut self) {
        let cpu = this_cpu();
        if cpu.preempt_count.fetch_sub(1, Ordering::Relaxed) == 1 && cpu.need_resched.load(Ordering::Relaxed) {
            preempt_point();
        }
    }
}

/// Switches made by CPU `cpu` so far.
pub fn switch_count(cpu: usize) -> u64 {
    CPUS[cpu].switches.load(Ordering::Relaxed)
}

/// Hand-offs CPU `cpu` has made (switches straight from a blocking user
/// thread to the one it woke).
pub fn hand_off_count(cpu: usize) -> u64 {
    CPUS[cpu].hand_offs.load(Ordering::Relaxed)
}

/// Threads queued on CPU `cpu`.
pub fn queued(cpu: usize) -> usize {
    CPUS[cpu].queued.load(Ordering::Relaxed) as usize
}

/// The policy entity of `thread` as last recorded (its accumulated run time
/// is exact up to its current run). For measurements.
pub fn entity_of(thread: &Thread) -> Entity {
    let cpu = &CPUS[thread.descriptor.cpu()];
    interrupts::without(|| {
        cpu.lock();
        // SAFETY: read under the lock of the thread's CPU.
        let entity = unsafe { *thread.descriptor.entity.get() };
        cpu.unlock();
        entity
    })
}
