//! The synchronisation the executor is made of, switched to loom's under
//! `--cfg loom`.
//!
//! Everything shared between the poller and wakers names `crate::sync`, so
//! the loom models in `tests/loom.rs` explore the executor's own code. Under
//! loom the lock-free ready queue becomes a locked `VecDeque` (crossbeam's
//! queue is not built on loom's atomics); the task state machine, the
//! notification flag, the closed flag and the join states are what the
//! models check, and they are unchanged.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence};

/// A mutex whose `lock` returns the guard (spin's, or loom's unwrapped).
#[cfg(not(loom))]
pub(crate) type Mutex<T> = spin::Mutex<T>;

#[cfg(loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().expect("no thread panics while holding it")
    }
}

/// The ready queue: lock-free, so a waker never waits for the poller.
#[cfg(not(loom))]
pub(crate) type Queue<T> = crossbeam_queue::SegQueue<T>;

#[cfg(loom)]
pub(crate) struct Queue<T>(Mutex<alloc::collections::VecDeque<T>>);

#[cfg(loom)]
impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(alloc::collections::VecDeque::new()))
    }

    pub(crate) fn push(&self, value: T) {
        self.0.lock().push_back(value);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        self.0.lock().pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}
