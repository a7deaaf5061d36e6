//! A spawned future and the states that make its wake-ups exact.
//!
//! ```text
//!             wake                 run_ready pops it
//!   IDLE ─────────────▶ QUEUED ───────────────────▶ POLLING
//!    ▲                                               │  │
//!    │              Pending, not woken meanwhile     │  │ Ready
//!    └───────────────────────────────────────────────┘  ▼
//!                   wake while POLLING: REPOLL ──▶ QUEUED again   DONE
//! ```
//!
//! A wake in QUEUED or REPOLL is absorbed (the task will be polled anyway),
//! in DONE ignored. Only the state word decides who may push the task: the
//! waker that moves it out of IDLE, or the poller that finds REPOLL; so a
//! task is in the ready queue at most once. Cancellation sets a flag beside
//! the state and wakes the task; the executor then drops the future instead
//! of polling it.

use alloc::{boxed::Box, sync::Arc, task::Wake};
use core::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use crate::{
    Shared,
    join::Completion,
    sync::{AtomicU8, Mutex, Ordering},
};

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const POLLING: u8 = 2;
const REPOLL: u8 = 3;
const DONE: u8 = 4;
const STATE: u8 = 0x7;
const CANCEL: u8 = 0x8;

/// A type-erased future whose output has already gone to its join handle.
pub(crate) type Runnable = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(crate) struct Task {
    shared: Arc<Shared>,
    state: AtomicU8,
    /// Taken by the one poller (the state says who); `None` once done.
    future: Mutex<Option<Runnable>>,
    completion: Arc<dyn Completion>,
}

/// What [`Task::run`] did.
pub(crate) enum Ran {
    /// Polled; it waits (or was woken meanwhile and is queued again).
    Pending,
    /// Polled, and it finished.
    Finished,
    /// Cancelled and dropped (after this turn's poll, if `polled`).
    Cancelled { polled: bool },
    /// Nothing to do (not in QUEUED: cannot happen with one poller).
    Skipped,
}

impl Task {
    pub(crate) fn new(shared: Arc<Shared>, future: Runnable, completion: Arc<dyn Completion>) -> Self {
        Self { shared, state: AtomicU8::new(IDLE), future: Mutex::new(Some(future)), completion }
    }

    /// The wake: queue the task unless it is already going to be polled.
    pub(crate) fn schedule(self: &Arc<Self>) {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = match current & STATE {
                IDLE => (current & CANCEL) | QUEUED,
                POLLING => (current & CANCEL) | REPOLL,
                _ => return,
            };
            match self.state.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if next & STATE == QUEUED {
                        self.push();
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Puts the task on its executor's ready queue (the caller moved it to
    /// QUEUED), or drops its future if the executor has gone.
    fn push(self: &Arc<Self>) {
        if self.shared.closed.load(Ordering::Acquire) {
            self.cancel_now();
        } else {
            self.shared.push(self.clone());
        }
    }

    /// Asks for the future to be dropped at its next turn.
    pub(crate) fn cancel(self: &Arc<Self>) {
        if self.state.fetch_or(CANCEL, Ordering::AcqRel) & STATE != DONE {
            self.schedule();
        }
    }

    /// Drops the future at once (its executor is going away).
    pub(crate) fn cancel_now(&self) {
        self.state.store(DONE | CANCEL, Ordering::Release);
        let future = self.future.lock().take();
        if future.is_some() {
            self.shared.live.fetch_sub(1, Ordering::Relaxed);
            drop(future);
            self.completion.cancelled();
        }
    }

    fn finish(&self, cancelled: bool, polled: bool) -> Ran {
        // Still QUEUED or POLLING here, where wakes are absorbed: drop the
        // future and settle the handle first, so that DONE (what
        // `is_released` reports) means all of it has happened; then one
        // atomic step to DONE (a waker never sees it IDLE on the way).
        let future = self.future.lock().take();
        let had_future = future.is_some();
        drop(future);
        if cancelled {
            self.completion.cancelled();
        }
        if had_future {
            self.shared.live.fetch_sub(1, Ordering::Relaxed);
        }
        self.state.swap(DONE, Ordering::AcqRel);
        if cancelled { Ran::Cancelled { polled } } else { Ran::Finished }
    }

    /// One turn: poll the future once (or drop it if cancelled).
    pub(crate) fn run(self: Arc<Self>) -> Ran {
        let current = self.state.load(Ordering::Acquire);
        if current & STATE != QUEUED {
            return Ran::Skipped;
        }
        if current & CANCEL != 0 {
            return self.finish(true, false);
        }
        if self.state.compare_exchange(current, POLLING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            // Only a cancel can change a queued task's word: drop it.
            return self.finish(true, false);
        }
        let waker = Waker::from(self.clone());
        let mut context = Context::from_waker(&waker);
        let poll = {
            let mut slot = self.future.lock();
            match slot.as_mut() {
                Some(future) => future.as_mut().poll(&mut context),
                None => Poll::Ready(()),
            }
        };
        if poll.is_ready() {
            return self.finish(false, true);
        }
        match self.state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ran::Pending,
            Err(actual) if actual & CANCEL != 0 => self.finish(true, true),
            Err(mut actual) => {
                // Woken while polled (REPOLL): queue it again, behind the
                // others already ready; a cancel that comes meanwhile wins.
                loop {
                    if actual & CANCEL != 0 {
                        return self.finish(true, true);
                    }
                    match self.state.compare_exchange(actual, QUEUED, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => break,
                        Err(now) => actual = now,
                    }
                }
                self.push();
                Ran::Pending
            }
        }
    }

    /// Whether the future has finished or been dropped.
    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & STATE == DONE
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}
