//! Loom models of `orrery-executor`: every interleaving (and every
//! weak-memory outcome loom models) of the poller racing wakers, a cancel,
//! the executor's drop and a join handle's poll.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p orrery-executor --release --test loom`.
//! Under that cfg the crate's atomics, mutexes and ready queue are loom's
//! (`src/sync.rs`), so these models check the task state machine the kernel
//! runs.
//!
//! Each model also counts which outcomes its executions reached and asserts
//! afterwards that every interesting one was reached at least once, so a
//! model that loom explored too narrowly fails instead of passing.
#![cfg(loom)]

use std::{
    future::Future,
    pin::Pin,
    sync::Mutex as StdMutex,
    task::{Context, Poll, Wake, Waker},
};

use loom::{
    sync::{
        Arc, Mutex, Notify,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
};
use orrery_executor::{Cancelled, Executor};

/// What a test future and the thread that wakes it share.
#[derive(Default)]
struct Shared {
    /// The condition the future waits for.
    ready: AtomicBool,
    /// The waker of the future's last poll.
    waker: Mutex<Option<Waker>>,
    polls: AtomicUsize,
    drops: AtomicUsize,
}

impl Shared {
    /// What an interrupt handler or another CPU does: make the condition
    /// true, then wake whoever waits for it.
    fn complete(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        let waker = self.waker.lock().unwrap().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Waits for `shared.ready` (forever when `forever`), the usual way:
/// register the waker, then look at the condition.
struct WaitFor {
    shared: Arc<Shared>,
    forever: bool,
}

impl Future for WaitFor {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<usize> {
        let polls = self.shared.polls.fetch_add(1, Ordering::SeqCst) + 1;
        *self.shared.waker.lock().unwrap() = Some(context.waker().clone());
        if !self.forever && self.shared.ready.load(Ordering::SeqCst) { Poll::Ready(polls) } else { Poll::Pending }
    }
}

impl Drop for WaitFor {
    fn drop(&mut self) {
        self.shared.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// The executor with a `notify` that unparks the dispatcher, as the
/// kernel's raises its CPU's flag and sends an IPI. (A blocking primitive,
/// not a spin on a flag: loom then reports a lost notification as a
/// deadlock.)
fn executor() -> (Executor, Arc<Notify>) {
    let notify = Arc::new(Notify::new());
    let unpark = notify.clone();
    (Executor::new(move || unpark.notify()), notify)
}

/// The dispatcher: polls, and when nothing is ready sleeps until `notify`,
/// until `done`.
fn dispatch(executor: &Executor, notify: &Notify, done: impl Fn() -> bool) {
    loop {
        executor.run_ready(4);
        if done() {
            return;
        }
        notify.wait();
    }
}

/// A wake from another thread, at any point of the poll, is never lost:
/// the future finishes, having been polled once (the condition already
/// true) or twice.
#[test]
fn a_wake_racing_the_poll_is_never_lost() {
    static POLLS: StdMutex<[usize; 3]> = StdMutex::new([0; 3]);
    loom::model(|| {
        let (executor, notify) = executor();
        let shared = Arc::new(Shared::default());
        let handle = executor.spawn(WaitFor { shared: shared.clone(), forever: false });
        let waker = {
            let shared = shared.clone();
            thread::spawn(move || shared.complete())
        };
        dispatch(&executor, &notify, || handle.is_finished());
        waker.join().unwrap();
        let polls = handle.try_take().expect("finished").expect("not cancelled");
        assert!(handle.is_released());
        assert_eq!(shared.drops.load(Ordering::SeqCst), 1, "the future was dropped once");
        assert_eq!(executor.live(), 0);
        POLLS.lock().unwrap()[polls.min(2)] += 1;
    });
    let polls = *POLLS.lock().unwrap();
    assert!(polls[1] > 0 && polls[2] > 0, "both orders explored: {polls:?}");
}

/// A cancel races a wake and the poll: the future is dropped exactly once,
/// the handle reports `Cancelled`, and the executor holds nothing after.
#[test]
fn a_cancel_racing_a_wake_and_the_poll_drops_the_future_once() {
    static CANCELLED_AFTER_POLL: StdMutex<[usize; 2]> = StdMutex::new([0; 2]);
    // Three threads: every interleaving with up to three preemptions (the
    // unbounded space takes hours), the bound loom's authors recommend.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let (executor, notify) = executor();
        let shared = Arc::new(Shared::default());
        let handle = Arc::new(executor.spawn(WaitFor { shared: shared.clone(), forever: true }));
        let canceller = {
            let handle = handle.clone();
            thread::spawn(move || handle.cancel())
        };
        let waker = {
            let shared = shared.clone();
            thread::spawn(move || shared.wake())
        };
        dispatch(&executor, &notify, || handle.is_finished());
        canceller.join().unwrap();
        waker.join().unwrap();
        assert_eq!(handle.try_take(), Some(Err(Cancelled)));
        assert!(handle.is_released());
        assert_eq!(shared.drops.load(Ordering::SeqCst), 1, "the future was dropped once");
        assert_eq!(executor.live(), 0);
        // The waker may still hold a reference; dropping it must not poll.
        shared.wake();
        executor.run_ready(4);
        let polled = shared.polls.load(Ordering::SeqCst);
        CANCELLED_AFTER_POLL.lock().unwrap()[polled.min(1)] += 1;
    });
    let outcomes = *CANCELLED_AFTER_POLL.lock().unwrap();
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "cancelled before and after a poll: {outcomes:?}");
}

/// The executor is dropped while another thread wakes a waiting future:
/// whichever comes first, the future is dropped exactly once and nothing
/// stays queued (a task left in the queue would keep it alive for ever).
#[test]
fn a_wake_racing_the_executors_drop_still_drops_the_future() {
    loom::model(|| {
        let (executor, _notify) = executor();
        let shared = Arc::new(Shared::default());
        let handle = executor.spawn(WaitFor { shared: shared.clone(), forever: true });
        executor.run_ready(4);
        assert_eq!(shared.polls.load(Ordering::SeqCst), 1);
        let waker = {
            let shared = shared.clone();
            thread::spawn(move || shared.wake())
        };
        drop(executor);
        waker.join().unwrap();
        assert_eq!(shared.drops.load(Ordering::SeqCst), 1, "the future was dropped once");
        assert_eq!(handle.try_take(), Some(Err(Cancelled)));
        assert!(handle.is_released());
    });
}

/// Wakes a flag, for a join handle polled outside any executor.
struct Flag(std::sync::atomic::AtomicBool);

impl Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A thread polls the join handle while the executor finishes the future:
/// either that poll sees the output or its waker is woken.
#[test]
fn a_join_handle_polled_during_completion_is_woken_or_ready() {
    static OUTCOMES: StdMutex<[usize; 2]> = StdMutex::new([0; 2]);
    loom::model(|| {
        let (executor, notify) = executor();
        let shared = Arc::new(Shared::default());
        shared.ready.store(true, Ordering::SeqCst);
        let handle = executor.spawn(WaitFor { shared: shared.clone(), forever: false });
        let joiner = thread::spawn(move || {
            let flag = std::sync::Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            let mut handle = handle;
            let first = Pin::new(&mut handle).poll(&mut Context::from_waker(&waker));
            (first.is_ready(), flag, handle)
        });
        dispatch(&executor, &notify, || true);
        let (ready, flag, handle) = joiner.join().unwrap();
        assert!(handle.is_finished());
        let woken = flag.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(ready || woken, "a pending join handle was never woken");
        OUTCOMES.lock().unwrap()[usize::from(ready)] += 1;
    });
    let outcomes = *OUTCOMES.lock().unwrap();
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "pending-then-woken and ready both reached: {outcomes:?}");
}
