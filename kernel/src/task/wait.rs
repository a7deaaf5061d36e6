//! Waiting: wait queues, sleeping until a deadline, and blocking with an
//! atomically released lock (Alux's `SetTimeout`/`SetInfiniteTimeout` with
//! `unlock`).
//!
//! Every wait follows the same protocol (see [`super::thread`]): register
//! where the waker will find the thread and mark it `Blocking`, release the
//! caller's lock, then switch. A wake-up at any point after the thread became
//! findable is seen, so none is lost. Wake-ups can be spurious (a late timer
//! of an earlier wait is filtered out, but a waker that already took the
//! thread off a queue may still wake its next wait): callers re-check their
//! condition, as with any condition variable.

use alloc::{collections::VecDeque, sync::Arc};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{
    scheduler,
    thread::{Thread, ThreadState, WakeReason},
};
use crate::{
    arch::{interrupts, tsc},
    sync::{SpinLock, SpinLockGuard},
    time,
};

/// Threads waiting for something.
pub struct WaitQueue {
    waiters: SpinLock<Waiters>,
    /// How many entries `waiters` holds, stored under its lock at every
    /// change, so that [`WaitQueue::remove`] can tell without the lock that
    /// there is nothing to remove.
    queued: AtomicUsize,
}

/// The locked queue; stores the entry count when dropped.
struct Locked<'a> {
    waiters: SpinLockGuard<'a, Waiters>,
    queued: &'a AtomicUsize,
}

impl core::ops::Deref for Locked<'_> {
    type Target = Waiters;

    fn deref(&self) -> &Waiters {
        &self.waiters
    }
}

impl core::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Waiters {
        &mut self.waiters
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.queued.store(self.waiters.len(), Ordering::Release);
    }
}

/// A FIFO of waiting threads whose first entry is kept inline: most queues
/// (a joiner, a server waiting for a request) hold one waiter at a time, and
/// then waiting takes no heap memory.
struct Waiters {
    first: Option<Arc<Thread>>,
    rest: VecDeque<Arc<Thread>>,
}

impl Waiters {
    const fn new() -> Self {
        Self { first: None, rest: VecDeque::new() }
    }

    fn push_back(&mut self, thread: Arc<Thread>) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(thread);
        } else {
            self.rest.push_back(thread);
        }
    }

    fn pop_front(&mut self) -> Option<Arc<Thread>> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Removes `thread`'s entries from the rest of the queue, returning them
    /// (to be dropped outside the lock).
    fn remove_from_rest(&mut self, thread: &Thread) -> alloc::vec::Vec<Arc<Thread>> {
        let mut removed = alloc::vec::Vec::new();
        self.rest.retain(|waiter| {
            if core::ptr::eq(&**waiter, thread) {
                removed.push(waiter.clone());
                false
            } else {
                true
            }
        });
        removed
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks the current thread as about to wait and returns its new wait
/// generation.
fn prepare(thread: &Thread) -> u64 {
    thread.set_wake_reason(super::thread::WakeReason::Woken);
    let generation = thread.wait_generation.fetch_add(1, Ordering::AcqRel) + 1;
    thread.descriptor.set_state(ThreadState::Blocking);
    // Pairs with the fence in `kill_task`: either the killer sees this
    // thread Blocking (and wakes it), or `schedule` sees the kill.
    core::sync::atomic::fence(Ordering::SeqCst);
    generation
}

fn arm_timer(thread: &Thread, deadline: Option<u64>, generation: u64) {
    if let Some(deadline) = deadline
        && time::add_timer(deadline, thread.id(), generation).is_err()
    {
        // No memory for the timer: time out at once rather than sleep
        // for ever.
        scheduler::wake(thread, WakeReason::Timeout);
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { waiters: SpinLock::new(Waiters::new()), queued: AtomicUsize::new(0) }
    }

    fn lock(&self) -> Locked<'_> {
        Locked { waiters: self.waiters.lock(), queued: &self.queued }
    }

    /// Waits until woken (or until `deadline_tsc`, if given), releasing
    /// `guard` once the thread is registered. Returns why it woke; the lock
    /// is not taken again.
    pub fn wait_releasing<T: ?Sized>(
        &self,
        guard: Option<SpinLockGuard<'_, T>>,
        deadline_tsc: Option<u64>,
    ) -> WakeReason {
        // Only the queue owns a reference: this frame may be abandoned if
        // the task is killed, so it must own nothing.
        let me = scheduler::current();
        let generation = {
            let mut waiters = self.lock();
            waiters.push_back(scheduler::current_arc());
            prepare(me)
        };
        arm_timer(me, deadline_tsc, generation);
        drop(guard);
        let reason = scheduler::block_current();
        if reason != WakeReason::Woken {
            self.remove(me);
        }
        stop_if_killed(me);
        reason
    }

    /// Takes `thread` off the queue (its wait ended some other way).
    #[inline]
    pub fn remove(&self, thread: &Thread) {
        // The usual case of a wait that ended by a wake-up or a hand-off:
        // whoever took the thread off emptied the queue. The thread's own
        // registration (an earlier store of a count of at least one, by this
        // CPU or before the thread's death) is never read stale here, so a
        // count of 0 means the thread is not queued. Inlined, so that this
        // look costs no call.
        if self.queued.load(Ordering::Acquire) != 0 {
            self.remove_queued(thread);
        }
    }

    /// [`remove`](Self::remove) when the queue holds anyone.
    #[inline(never)]
    fn remove_queued(&self, thread: &Thread) {
        let mut waiters = self.lock();
        let first = if waiters.first.as_ref().is_some_and(|first| core::ptr::eq(&**first, thread)) {
            waiters.first.take()
        } else {
            None
        };
        // The usual case, nobody else queued (a waker took everyone), needs
        // no search. What was taken is dropped outside the lock: it may be
        // the last reference.
        let rest = if waiters.rest.is_empty() { alloc::vec::Vec::new() } else { waiters.remove_from_rest(thread) };
        drop(waiters);
        drop(first);
        drop(rest);
    }

    /// Puts `thread` on the queue unless it is there already: for system-call
    /// futures, whose thread the dispatcher parks after a pending poll. The
    /// future must look at its condition again after registering.
    #[inline(always)]
    pub fn register(&self, thread: Arc<Thread>) {
        let mut waiters = self.lock();
        // The usual queue holds nobody else: no search of the rest.
        let present = waiters.first.as_ref().is_some_and(|first| Arc::ptr_eq(first, &thread))
            || (!waiters.rest.is_empty() && waiters.rest.iter().any(|waiter| Arc::ptr_eq(waiter, &thread)));
        if !present {
            waiters.push_back(thread);
        }
    }

    /// Waits until woken or until `deadline_tsc`.
    pub fn wait(&self, deadline_tsc: Option<u64>) -> WakeReason {
        self.wait_releasing::<()>(None, deadline_tsc)
    }

    /// Waits while `condition` holds for the value behind `lock`, releasing
    /// the lock while asleep; returns the guard with the condition false, or
    /// `Err(reason)` on time-out or kill.
    pub fn wait_while<'a, T>(
        &self,
        lock: &'a SpinLock<T>,
        deadline_tsc: Option<u64>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> Result<SpinLockGuard<'a, T>, WakeReason> {
        loop {
            let mut guard = lock.lock();
            if !condition(&mut guard) {
                return Ok(guard);
            }
            match self.wait_releasing(Some(guard), deadline_tsc) {
                WakeReason::Woken => {}
                other => {
                    // A last look: the condition may have changed just as
                    // the deadline passed.
                    let mut guard = lock.lock();
                    return if condition(&mut guard) { Err(other) } else { Ok(guard) };
                }
            }
        }
    }

    /// Wakes the longest-waiting thread. Returns false if none was waiting.
    pub fn wake_one(&self) -> bool {
        loop {
            let Some(thread) = self.lock().pop_front() else { return false };
            if scheduler::wake(&thread, WakeReason::Woken) {
                return true;
            }
            // It had already been woken (time-out, kill): try the next.
        }
    }

    /// Takes the waiting thread off the queue without waking it, if it is
    /// the only one: the caller must then wake it or run it (a hand-off,
    /// see [`scheduler::block_and_switch_to`]). With several waiters, takes
    /// none.
    pub fn take_sole(&self) -> Option<Arc<Thread>> {
        let mut waiters = self.lock();
        if waiters.rest.is_empty() { waiters.first.take() } else { None }
    }

    /// Wakes every waiting thread; returns how many were woken.
    pub fn wake_all(&self) -> usize {
        // Only those waiting now: a woken thread that waits again at once
        // joins the next round, not this one.
        let mut waiters = core::mem::replace(&mut *self.lock(), Waiters::new());
        let mut woken = 0;
        while let Some(thread) = waiters.pop_front() {
            if scheduler::wake(&thread, WakeReason::Woken) {
                woken += 1;
            }
        }
        woken
    }

    /// Threads waiting now.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Arms a timer that wakes the current thread at `deadline_tsc` (for
/// system-call futures with a deadline; the wake-up makes the dispatcher
/// poll the future again).
pub fn arm_timer_for_current(deadline_tsc: u64) {
    let me = scheduler::current();
    let generation = me.wait_generation.load(Ordering::Acquire);
    arm_timer(me, Some(deadline_tsc), generation);
}

/// Marks the current thread about to wait (for [`super::futures::block_on`],
/// which polls between this and [`block_prepared`]).
pub(super) fn prepare_current() {
    interrupts::without(|| prepare(scheduler::current()));
}

/// Undoes [`prepare_current`]: the condition held after all.
pub(super) fn cancel_current() {
    let me = scheduler::current();
    // A waker may have done it already.
    let _ = me.descriptor.transition(ThreadState::Blocking, ThreadState::Running);
}

/// Blocks after [`prepare_current`]; returns why it woke.
pub(super) fn block_prepared() -> WakeReason {
    scheduler::block_current()
}

/// Ends the current thread if its task was killed and it holds nothing;
/// called by every wait once it has taken back its registration.
fn stop_if_killed(me: &Thread) {
    if me.must_stop() {
        scheduler::exit_current();
    }
}

/// Sleeps until the TSC reaches `deadline_tsc` or the thread is woken.
pub fn sleep_until(deadline_tsc: u64) -> WakeReason {
    sleep_until_releasing::<()>(deadline_tsc, None)
}

/// Sleeps until `deadline_tsc` (or a wake-up), releasing `guard` once the
/// sleep is registered, so a waker that takes the lock after it cannot miss
/// the sleeper.
pub fn sleep_until_releasing<T: ?Sized>(deadline_tsc: u64, guard: Option<SpinLockGuard<'_, T>>) -> WakeReason {
    if deadline_tsc <= tsc::now() {
        drop(guard);
        return WakeReason::Timeout;
    }
    let me = scheduler::current();
    let generation = interrupts::without(|| prepare(me));
    arm_timer(me, Some(deadline_tsc), generation);
    drop(guard);
    let reason = scheduler::block_current();
    stop_if_killed(me);
    reason
}

/// Sleeps for `nanos` nanoseconds.
pub fn sleep_for_nanos(nanos: u64) -> WakeReason {
    sleep_until(tsc::now() + tsc::nanos_to_ticks(nanos))
}

/// Blocks until another thread wakes this one with [`super::wake`],
/// releasing `guard` once the thread is findable. The caller must have
/// published its thread id to the waker (under the same lock) before.
pub fn block_releasing<T: ?Sized>(guard: Option<SpinLockGuard<'_, T>>) -> WakeReason {
    let me = scheduler::current();
    interrupts::without(|| prepare(me));
    drop(guard);
    let reason = scheduler::block_current();
    stop_if_killed(me);
    reason
}
