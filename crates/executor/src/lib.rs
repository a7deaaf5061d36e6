//! A per-core executor for kernel futures.
//!
//! Each CPU's dispatcher owns one [`Executor`]: kernel services and timers
//! are futures spawned onto it, and the dispatcher polls the ready ones
//! between threads, on its own stack (Hermit's kernel thread per core running
//! futures). The executor is the portable half: the ready queue, the task
//! states that make wake-ups exact (a wake while queued is absorbed, a wake
//! while polling polls again, a wake after the end is ignored), join handles
//! and cancellation. The kernel supplies one hook, `notify`, called when the
//! executor goes from nothing ready to something ready, so it can get the
//! dispatcher onto the CPU (a flag and an IPI).
//!
//! Wakers may run on any CPU and in interrupt handlers: waking pushes onto a
//! lock-free queue and never waits for the dispatcher. A future is polled
//! only by its executor's [`run_ready`](Executor::run_ready), one poll at a
//! time; its output goes to its [`JoinHandle`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod join;
mod sync;
mod task;

use alloc::{boxed::Box, sync::Arc};
use core::future::Future;

pub use join::{Cancelled, JoinHandle};
use sync::{AtomicBool, AtomicUsize, Ordering, Queue, fence};
use task::Task;

/// What the kernel does when an executor gets work: make sure its
/// dispatcher runs soon.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// The part wakers reach: the ready queue and the notification hook.
struct Shared {
    ready: Queue<Arc<Task>>,
    /// Set while the dispatcher has been told and has not yet emptied the
    /// queue: `notify` is called once per idle-to-ready transition.
    notified: AtomicBool,
    notify: Notify,
    /// Set when the executor is dropped: a task woken later drops its
    /// future instead of queueing.
    closed: AtomicBool,
    /// Tasks spawned and not yet finished or dropped.
    live: AtomicUsize,
}

impl Shared {
    fn push(&self, task: Arc<Task>) {
        self.ready.push(task);
        // The executor may have been dropped between the caller's look at
        // `closed` and the push, its queue already drained: then nobody
        // would ever take this task (and the task would keep the queue
        // alive through its `Arc<Shared>`). The fence pairs with the one in
        // `Drop`: either the drop's drain sees the task, or this load sees
        // `closed` and drains it here.
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            self.drain();
            return;
        }
        if !self.notified.swap(true, Ordering::AcqRel) {
            (self.notify)();
        }
    }

    /// Called by the poller when it found the queue empty: lets the next
    /// wake notify again. Returns false if a task arrived meanwhile (the
    /// poller goes on; `notified` stays set).
    fn rearm(&self) -> bool {
        // A task pushed between the poller's look and the clearing was
        // pushed while `notified` was still set, so nobody told us: clear,
        // then look once more. A waker pushes, then sets the flag: without
        // the fences (here and in `push`) both could read the other's old
        // value, and the task would sit queued with nobody told. Every
        // change of the flag is a read-modify-write, so all of them are in
        // one order.
        self.notified.swap(false, Ordering::AcqRel);
        fence(Ordering::SeqCst);
        if self.ready.is_empty() {
            return true;
        }
        self.notified.swap(true, Ordering::AcqRel);
        false
    }

    /// Drops every queued task's future (the executor is gone).
    fn drain(&self) {
        while let Some(task) = self.ready.pop() {
            task.cancel_now();
        }
    }
}

/// One core's executor.
pub struct Executor {
    shared: Arc<Shared>,
}

/// What one [`Executor::run_ready`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Polls made.
    pub polled: usize,
    /// Futures that finished or were cancelled and dropped.
    pub finished: usize,
    /// Whether ready futures remain (the budget ran out).
    pub more: bool,
}

impl Executor {
    /// An executor that calls `notify` when it gets work.
    pub fn new(notify: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            shared: Arc::new(Shared {
                ready: Queue::new(),
                notified: AtomicBool::new(false),
                notify: Box::new(notify),
                closed: AtomicBool::new(false),
                live: AtomicUsize::new(0),
            }),
        }
    }

    /// Spawns `future`; it is polled first by the next
    /// [`run_ready`](Self::run_ready). Dropping the handle detaches the
    /// future (it runs on); [`JoinHandle::cancel`] stops it.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (runnable, mut handle) = join::pair(future);
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        let task = Arc::new(Task::new(self.shared.clone(), runnable, handle.state()));
        handle.set_task(task.clone());
        task.schedule();
        handle
    }

    /// Polls ready futures, at most `budget` polls, in the order they became
    /// ready. A future woken while it is being polled is polled again (in a
    /// later turn, after the others already ready).
    pub fn run_ready(&self, budget: usize) -> RunStats {
        let mut stats = RunStats::default();
        loop {
            if stats.polled == budget {
                // Out of budget: if nothing is left, this turn ends as an
                // empty one does (or the next wake would find `notified`
                // still set and tell nobody); if something is, the caller
                // must come back without being told (`more`).
                stats.more = !self.shared.ready.is_empty() || !self.shared.rearm();
                return stats;
            }
            let Some(task) = self.shared.ready.pop() else {
                if self.shared.rearm() {
                    return stats;
                }
                continue;
            };
            let polled = match task.run() {
                task::Ran::Pending => true,
                task::Ran::Finished => {
                    stats.finished += 1;
                    true
                }
                task::Ran::Cancelled { polled } => {
                    stats.finished += 1;
                    polled
                }
                task::Ran::Skipped => false,
            };
            if polled {
                stats.polled += 1;
            }
        }
    }

    /// Whether a future is ready to be polled.
    pub fn has_ready(&self) -> bool {
        !self.shared.ready.is_empty()
    }

    /// Futures spawned here that have not finished or been cancelled.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Queued futures are dropped now; a future woken later drops itself
        // instead of queueing (see `Task::push`).
        self.shared.closed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.shared.drain();
    }
}

#[cfg(test)]
mod tests;
