//! The end of threads and tasks: what happens when a thread exits or is
//! stopped, and the reaper (Alux's garbage thread) that frees what is too
//! heavy to free on the switch path.
//!
//! A thread cannot free the stack it runs on. So its death has three parts:
//!
//! 1. [`retire`], on its own stack just before the last switch (when it
//!    exits by itself): it leaves its task's thread list and gives up its
//!    retain of the task. If that ends a task that owns nothing but kernel
//!    threads, the task is finished right there and its joiners woken, so a
//!    joiner often runs straight after.
//! 2. [`free_after_switch`], run by the next thread on the same CPU right
//!    after the switch (so away from the dead stack): the stack goes back to
//!    the stack cache, the FPU area is freed, the thread leaves the table.
//!    A thread stopped at a preemption point (its task was killed) retires
//!    here.
//! 3. The reaper thread, for the heavy rest: tearing down a dead task's
//!    address space and task-set membership, and unmapping stacks the cache
//!    has no room for (which needs a TLB shoot-down across CPUs).

use alloc::{sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use orrery_lifetime::Cleanup;

use super::{
    ExitStatus,
    domain::Task,
    scheduler,
    thread::{self, Thread, ThreadId, WakeReason},
    wait,
};
use crate::{mm::stacks::KernelStack, sync::SpinLock};

struct Work {
    stacks: Vec<KernelStack>,
    tasks: Vec<(Arc<Task>, Cleanup)>,
}

static WORK: SpinLock<Work> = SpinLock::new(Work { stacks: Vec::new(), tasks: Vec::new() });
static PENDING: AtomicBool = AtomicBool::new(false);
static REAPER: AtomicU64 = AtomicU64::new(0);
static REAPED_THREADS: AtomicU64 = AtomicU64::new(0);
static REAPED_TASKS: AtomicU64 = AtomicU64::new(0);
/// Work the reaper took off [`WORK`] and has not finished yet: set under
/// the lock that empties the queue, so [`backlog`] never reads zero while a
/// teardown is under way.
static IN_HAND: AtomicUsize = AtomicUsize::new(0);

/// Part 1 of a thread's death, on its own stack (see the module docs).
pub(super) fn retire(thread: &Thread) {
    if thread.retired.swap(true, Ordering::AcqRel) {
        return;
    }
    let task = &thread.task;
    task.threads.lock().remove(thread.id());
    if task.live_threads.fetch_sub(1, Ordering::AcqRel) == 1 && !task.is_killed() {
        // The last thread returned: the task exits with status 0. (This
        // thread still retains it, so no clean-up token comes from here.)
        let _ = task
            .lifetime
            .kill(ExitStatus::Exited(0).encode())
            .into_cleanup()
            .map(|cleanup| end_task(task.clone(), cleanup));
    }
    match task.lifetime.release() {
        Ok(Some(cleanup)) => end_task(task.clone(), cleanup),
        Ok(None) => {}
        Err(error) => panic!("retiring thread {} of {task:?}: {error}", thread.id().0),
    }
}

/// Finishes a dead task: at once if it owns nothing but threads (no address
/// space, no task set), else on the reaper, which may run the heavy
/// teardown after the dying thread is off every CPU.
fn end_task(task: Arc<Task>, cleanup: Cleanup) {
    if task.owns_memory() {
        clean_up_task(task, cleanup);
    } else {
        finish_task(&task, cleanup);
    }
}

/// Part 2 of a thread's death, run right after the switch away from it by
/// the next thread on that CPU (interrupts off, no run-queue lock held).
pub(super) fn free_after_switch(thread: &Thread) {
    // A thread stopped at a preemption point has not retired yet. Its task's
    // heavy clean-up (if this ends the task) still goes to the reaper.
    if !thread.retired.load(Ordering::Acquire) {
        retire(thread);
    }
    // SAFETY: the thread is dead and off every CPU (this runs after the
    // switch away from it), so nobody else touches its private parts.
    let (stack, fpu, entry, user) = unsafe {
        (
            (*thread.stack.get()).take(),
            (*thread.fpu.get()).take(),
            (*thread.entry.get()).take(),
            (*thread.user.get()).take(),
        )
    };
    drop(fpu);
    drop(entry);
    drop(user);
    if let Some(stack) = stack
        && let Err(stack) = stack.try_cache()
    {
        WORK.lock().stacks.push(stack);
        PENDING.store(true, Ordering::Release);
    }
    REAPED_THREADS.fetch_add(1, Ordering::Relaxed);
    // Last: this may drop the thread itself.
    thread::remove(thread);
}

/// Hands a dead task's clean-up to the reaper and wakes it.
pub(super) fn clean_up_task(task: Arc<Task>, cleanup: Cleanup) {
    WORK.lock().tasks.push((task, cleanup));
    PENDING.store(true, Ordering::Release);
    kick_if_pending();
}

/// Wakes the reaper if work was handed over. Call with no run-queue lock held.
#[inline]
pub(super) fn kick_if_pending() {
    if PENDING.load(Ordering::Acquire) {
        kick();
    }
}

#[cold]
#[inline(never)]
fn kick() {
    if let Some(reaper) = thread::lookup(ThreadId(REAPER.load(Ordering::Acquire))) {
        scheduler::wake(reaper, WakeReason::Woken);
    }
}

/// Starts the reaper thread.
pub(super) fn start() {
    let handle = super::Builder::new("reaper").spawn(reaper_main).expect("memory for the reaper");
    REAPER.store(handle.thread_id().0, Ordering::Release);
    kick_if_pending();
}

fn reaper_main() {
    loop {
        let (stacks, tasks) = {
            let mut work = WORK.lock();
            if work.stacks.is_empty() && work.tasks.is_empty() {
                PENDING.store(false, Ordering::Release);
                wait::block_releasing(Some(work));
                continue;
            }
            IN_HAND.store(work.stacks.len() + work.tasks.len(), Ordering::Release);
            (core::mem::take(&mut work.stacks), core::mem::take(&mut work.tasks))
        };
        // Unmaps each stack and shoots down its translations on every CPU.
        drop(stacks);
        for (task, cleanup) in tasks {
            finish_task(&task, cleanup);
        }
        // Every task reference it held is gone.
        IN_HAND.store(0, Ordering::Release);
    }
}

fn finish_task(task: &Task, cleanup: Cleanup) {
    task.clean_up();
    cleanup.complete();
    REAPED_TASKS.fetch_add(1, Ordering::Relaxed);
}

/// Threads and tasks ended so far.
pub fn reaped() -> (u64, u64) {
    (REAPED_THREADS.load(Ordering::Relaxed), REAPED_TASKS.load(Ordering::Relaxed))
}

/// Work waiting for the reaper or under way (for tests that wait for it to
/// catch up).
pub fn backlog() -> usize {
    let work = WORK.lock();
    work.stacks.len() + work.tasks.len() + IN_HAND.load(Ordering::Acquire)
}
