extern crate std;

use alloc::{sync::Arc, vec::Vec};
use core::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    task::{Context, Poll, Waker},
};
use std::sync::Mutex;

use proptest::prelude::*;

use crate::{Cancelled, Executor, JoinHandle};

/// An executor and how often it asked for its dispatcher.
fn executor() -> (Executor, Arc<AtomicUsize>) {
    let notified = Arc::new(AtomicUsize::new(0));
    let counter = notified.clone();
    (
        Executor::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
        notified,
    )
}

/// A future that finishes after `needed` wake-ups, keeping its last waker
/// where the test can reach it, and counting its polls.
#[derive(Default)]
struct Probe {
    waker: Mutex<Option<Waker>>,
    wakes: AtomicUsize,
    polls: AtomicUsize,
    in_poll: AtomicBool,
    dropped: AtomicBool,
}

impl Probe {
    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if let Some(waker) = self.waker.lock().unwrap().as_ref() {
            waker.wake_by_ref();
        }
    }
}

struct ProbeFuture {
    probe: Arc<Probe>,
    needed: usize,
}

impl Future for ProbeFuture {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<usize> {
        assert!(!self.probe.in_poll.swap(true, Ordering::SeqCst), "polled twice at once");
        self.probe.polls.fetch_add(1, Ordering::SeqCst);
        *self.probe.waker.lock().unwrap() = Some(context.waker().clone());
        let result = if self.probe.wakes.load(Ordering::SeqCst) >= self.needed {
            Poll::Ready(self.probe.polls.load(Ordering::SeqCst))
        } else {
            Poll::Pending
        };
        self.probe.in_poll.store(false, Ordering::SeqCst);
        result
    }
}

impl Drop for ProbeFuture {
    fn drop(&mut self) {
        self.probe.dropped.store(true, Ordering::SeqCst);
    }
}

fn probe(executor: &Executor, needed: usize) -> (Arc<Probe>, JoinHandle<usize>) {
    let probe = Arc::new(Probe::default());
    let handle = executor.spawn(ProbeFuture { probe: probe.clone(), needed });
    (probe, handle)
}

#[test]
fn a_ready_future_runs_once_and_its_output_reaches_the_handle() {
    let (executor, notified) = executor();
    let handle = executor.spawn(async { 5 });
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    assert_eq!(executor.live(), 1);
    let stats = executor.run_ready(10);
    assert_eq!((stats.polled, stats.finished, stats.more), (1, 1, false));
    assert!(handle.is_finished());
    assert_eq!(handle.try_take(), Some(Ok(5)));
    assert_eq!(executor.live(), 0);
    assert!(!executor.has_ready());
}

#[test]
fn a_waiting_future_is_polled_again_only_when_woken() {
    let (executor, notified) = executor();
    let (probe, handle) = probe(&executor, 2);
    assert_eq!(executor.run_ready(10).polled, 1);
    assert_eq!(executor.run_ready(10).polled, 0, "not woken: not polled");
    probe.wake();
    assert_eq!(notified.load(Ordering::SeqCst), 2, "one notification per idle-to-ready");
    assert_eq!(executor.run_ready(10).polled, 1);
    assert!(!handle.is_finished());
    probe.wake();
    let stats = executor.run_ready(10);
    assert_eq!((stats.polled, stats.finished), (1, 1));
    assert_eq!(handle.try_take(), Some(Ok(3)));
    assert!(probe.dropped.load(Ordering::SeqCst), "a finished future is dropped");
}

#[test]
fn many_wakes_while_queued_give_one_poll() {
    let (executor, notified) = executor();
    let (probe, _handle) = probe(&executor, 10);
    executor.run_ready(10);
    for _ in 0..5 {
        probe.wake();
    }
    assert_eq!(notified.load(Ordering::SeqCst), 2);
    assert_eq!(executor.run_ready(10).polled, 1);
}

#[test]
fn a_wake_during_the_poll_polls_again_after_the_others() {
    let (executor, _) = executor();
    let order = Arc::new(Mutex::new(Vec::new()));
    let first = order.clone();
    let mut woke = false;
    let handle = executor.spawn(core::future::poll_fn(move |context| {
        first.lock().unwrap().push('a');
        if woke {
            Poll::Ready(())
        } else {
            woke = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    }));
    let second = order.clone();
    let _other = executor.spawn(async move { second.lock().unwrap().push('b') });
    let stats = executor.run_ready(10);
    assert_eq!((stats.polled, stats.finished), (3, 2));
    assert_eq!(*order.lock().unwrap(), ['a', 'b', 'a']);
    assert_eq!(handle.try_take(), Some(Ok(())));
}

#[test]
fn the_budget_bounds_one_turn_and_order_is_first_ready_first_polled() {
    let (executor, _) = executor();
    let order = Arc::new(Mutex::new(Vec::new()));
    for index in 0..10 {
        let order = order.clone();
        executor.spawn(async move { order.lock().unwrap().push(index) });
    }
    let stats = executor.run_ready(3);
    assert_eq!((stats.polled, stats.more), (3, true));
    assert!(executor.has_ready());
    let stats = executor.run_ready(100);
    assert_eq!((stats.polled, stats.more), (7, false));
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_turn_that_ends_on_its_budget_with_nothing_left_lets_the_next_wake_notify() {
    let (executor, notified) = executor();
    executor.spawn(async {});
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    let stats = executor.run_ready(1);
    assert_eq!((stats.polled, stats.more), (1, false));
    executor.spawn(async {});
    assert_eq!(notified.load(Ordering::SeqCst), 2, "the second spawn was not notified");
}

#[test]
fn a_cancelled_future_is_dropped_without_another_poll() {
    let (executor, _) = executor();
    let (probe, handle) = probe(&executor, 10);
    executor.run_ready(10);
    handle.cancel();
    let stats = executor.run_ready(10);
    assert_eq!((stats.polled, stats.finished), (0, 1));
    assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
    assert!(probe.dropped.load(Ordering::SeqCst));
    assert_eq!(handle.try_take(), Some(Err(Cancelled)));
    assert!(handle.is_released());
    assert_eq!(executor.live(), 0);
    // A late wake finds it done.
    probe.wake();
    assert_eq!(executor.run_ready(10).polled, 0);
}

#[test]
fn a_cancel_while_queued_wins_over_the_poll() {
    let (executor, _) = executor();
    let (probe, handle) = probe(&executor, 0);
    handle.cancel();
    executor.run_ready(10);
    assert_eq!(probe.polls.load(Ordering::SeqCst), 0);
    assert_eq!(handle.try_take(), Some(Err(Cancelled)));
}

#[test]
fn a_cancel_after_the_end_keeps_the_output() {
    let (executor, _) = executor();
    let handle = executor.spawn(async { 7 });
    executor.run_ready(10);
    handle.cancel();
    executor.run_ready(10);
    assert_eq!(handle.try_take(), Some(Ok(7)));
}

#[test]
fn a_dropped_handle_detaches_and_the_future_runs_on() {
    let (executor, _) = executor();
    let (probe, handle) = probe(&executor, 1);
    drop(handle);
    executor.run_ready(10);
    probe.wake();
    let stats = executor.run_ready(10);
    assert_eq!(stats.finished, 1);
    assert!(probe.dropped.load(Ordering::SeqCst));
}

#[test]
fn a_future_can_await_another_ones_handle() {
    let (executor, _) = executor();
    let (probe, inner) = probe(&executor, 1);
    let outer = executor.spawn(async move { inner.await.map(|polls| polls * 10) });
    executor.run_ready(10);
    assert!(!outer.is_finished());
    probe.wake();
    executor.run_ready(10);
    assert_eq!(outer.try_take(), Some(Ok(Ok(20))));
}

#[test]
fn dropping_the_executor_drops_queued_and_later_woken_futures() {
    let (executor, _) = executor();
    let (waiting, _waiting_handle) = probe(&executor, 5);
    let (queued, _queued_handle) = probe(&executor, 5);
    // First ready, first polled: `waiting` is polled and waits, `queued`
    // stays in the queue.
    executor.run_ready(1);
    assert_eq!(waiting.polls.load(Ordering::SeqCst), 1);
    assert_eq!(queued.polls.load(Ordering::SeqCst), 0);
    drop(executor);
    assert!(queued.dropped.load(Ordering::SeqCst), "a queued future goes with the executor");
    assert!(!waiting.dropped.load(Ordering::SeqCst));
    waiting.wake();
    assert!(waiting.dropped.load(Ordering::SeqCst), "a wake after the executor went drops the future");
}

#[test]
fn wakes_from_many_threads_are_never_lost_or_doubled() {
    const FUTURES: usize = 16;
    const WAKES: usize = 200;
    let (executor, _) = executor();
    let probes: Vec<_> = (0..FUTURES).map(|_| probe(&executor, WAKES)).collect();
    let wakers_done = Arc::new(AtomicUsize::new(0));
    // Four threads wake while this one polls.
    let wakers: Vec<_> = (0..4)
        .map(|thread| {
            let probes: Vec<_> = probes.iter().map(|(probe, _)| probe.clone()).collect();
            let done = wakers_done.clone();
            std::thread::spawn(move || {
                for round in 0..WAKES * FUTURES / 4 {
                    probes[(round * 4 + thread) % FUTURES].wake();
                    if round % 16 == 0 {
                        std::thread::yield_now();
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    loop {
        let finished = wakers_done.load(Ordering::SeqCst) == 4;
        executor.run_ready(8);
        if finished && !executor.has_ready() {
            break;
        }
    }
    for waker in wakers {
        waker.join().unwrap();
    }
    // Every future has had its WAKES wake-ups and nothing is queued: each
    // must have been polled after its last wake-up, and so finished.
    assert_eq!(executor.live(), 0, "a wake-up was lost");
    for (probe, handle) in &probes {
        let polls = probe.polls.load(Ordering::SeqCst);
        assert!(polls <= WAKES + 1, "polled {polls} times for {WAKES} wakes");
        assert!(matches!(handle.try_take(), Some(Ok(_))));
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Spawn { needed: usize },
    Wake(usize),
    Cancel(usize),
    Run(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4).prop_map(|needed| Op::Spawn { needed }),
        (0usize..8).prop_map(Op::Wake),
        (0usize..8).prop_map(Op::Cancel),
        (0usize..5).prop_map(Op::Run),
    ]
}

/// A probe, its handle, and the model's view: (due for a poll, done,
/// cancelled, wake-ups needed).
type Modelled = (Arc<Probe>, JoinHandle<usize>, bool, bool, bool, usize);

proptest! {
    /// Against a model: a future is polled once when spawned and once after
    /// each batch of wakes, never after it finished or was cancelled; the
    /// live count and every handle agree with the model.
    #[test]
    fn the_executor_matches_a_model(ops in proptest::collection::vec(op(), 1..80)) {
        let (executor, notified) = executor();
        // Per future: probe, handle, model (pending poll?, done?, cancelled?).
        let mut futures: Vec<Modelled> = Vec::new();
        // The dispatcher's view: whether it must come back (told by
        // `notify` since its last turn, or that turn said `more`).
        let mut notifications = notified.load(Ordering::SeqCst);
        let mut must_come_back = false;
        for op in ops {
            match op {
                Op::Spawn { needed } => {
                    let (probe, handle) = probe(&executor, needed);
                    futures.push((probe, handle, true, false, false, needed));
                }
                Op::Wake(index) => {
                    if let Some((probe, _, due, done, _, _)) = futures.get_mut(index) {
                        probe.wake();
                        // Before its first poll there is no waker yet: the
                        // wake only counts; it is due anyway.
                        if !*done { *due = true; }
                    }
                }
                Op::Cancel(index) => {
                    if let Some((_, handle, due, done, cancelled, _)) = futures.get_mut(index) {
                        handle.cancel();
                        if !*done { *cancelled = true; *due = true; }
                    }
                }
                Op::Run(budget) => {
                    let before: Vec<usize> = futures.iter().map(|(p, ..)| p.polls.load(Ordering::SeqCst)).collect();
                    let due_count = futures.iter().filter(|f| f.2 && !f.3).count();
                    let stats = executor.run_ready(budget);
                    notifications = notified.load(Ordering::SeqCst);
                    must_come_back = stats.more;
                    prop_assert!(stats.polled <= budget);
                    prop_assert!(stats.polled + stats.finished >= due_count.min(budget) || stats.polled == budget);
                    for (index, (probe, handle, due, done, cancelled, needed)) in futures.iter_mut().enumerate() {
                        let polls = probe.polls.load(Ordering::SeqCst);
                        if polls > before[index] {
                            prop_assert_eq!(polls, before[index] + 1, "one poll per turn");
                            prop_assert!(*due && !*done && !*cancelled, "polled without a reason");
                            *due = false;
                            if probe.wakes.load(Ordering::SeqCst) >= *needed {
                                *done = true;
                            }
                        }
                        if *cancelled && !*done && handle.is_finished() {
                            *done = true;
                            *due = false;
                            prop_assert!(probe.dropped.load(Ordering::SeqCst));
                        }
                        if *done && !*cancelled {
                            prop_assert!(handle.is_finished());
                        }
                    }
                }
            }
            // Ready work is never left where the dispatcher would not look.
            if notified.load(Ordering::SeqCst) != notifications {
                notifications = notified.load(Ordering::SeqCst);
                must_come_back = true;
            }
            prop_assert!(!executor.has_ready() || must_come_back, "ready futures and nobody told");
        }
        // Drain: everything due gets its poll.
        while executor.has_ready() {
            executor.run_ready(100);
        }
        let live = futures.iter().filter(|f| !f.1.is_finished()).count();
        prop_assert_eq!(executor.live(), live);
    }
}
