//! Cost of the executor's two hot paths, on one thread, against the
//! executors people would otherwise reach for: `async-executor` (smol's,
//! thread-safe like this one: `Send` futures, wakers usable from anywhere)
//! and `futures`' `LocalPool` (single-threaded).
//!
//! Run with `cargo bench -p orrery-executor`; figures are recorded in
//! `docs/executor.md`.
//!
//! - `spawn_run_take`: spawn a future that is ready at once, run it, take its
//!   output through the join handle (the life of a one-shot kernel job).
//! - `wake_poll`: one future waits for events; each iteration wakes it from
//!   outside and runs the executor until nothing is ready (the wake-up, the
//!   poll it causes and the look that finds nothing more: the life of a
//!   kernel service between events).

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_executor::LocalPool;
use futures_util::task::LocalSpawnExt;
use orrery_executor::Executor;

/// A future that is never done: it keeps the waker of its first poll where
/// the benchmark can wake it, and returns `Pending`.
struct WaitsForEvents {
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Future for WaitsForEvents {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let mut waker = self.waker.lock().expect("not poisoned");
        if waker.is_none() {
            *waker = Some(context.waker().clone());
        }
        Poll::Pending
    }
}

/// A waiting future and the slot its waker will be in.
fn waiting() -> (WaitsForEvents, Arc<Mutex<Option<Waker>>>) {
    let waker = Arc::new(Mutex::new(None));
    (WaitsForEvents { waker: waker.clone() }, waker)
}

/// The waker a [`WaitsForEvents`] left, once it has been polled.
fn waker_of(slot: &Mutex<Option<Waker>>) -> Waker {
    slot.lock().expect("not poisoned").clone().expect("polled once")
}

fn spawn_run_take(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("spawn_run_take");
    group.bench_function("orrery-executor", |bencher| {
        let executor = Executor::new(|| {});
        bencher.iter(|| {
            let handle = executor.spawn(async { black_box(7_u64) });
            executor.run_ready(usize::MAX);
            black_box(handle.try_take())
        });
    });
    group.bench_function("async-executor", |bencher| {
        let executor = async_executor::Executor::new();
        let mut context = Context::from_waker(Waker::noop());
        bencher.iter(|| {
            let mut task = executor.spawn(async { black_box(7_u64) });
            while executor.try_tick() {}
            black_box(Pin::new(&mut task).poll(&mut context))
        });
    });
    group.bench_function("futures LocalPool", |bencher| {
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        bencher.iter(|| {
            let handle = spawner.spawn_local_with_handle(async { black_box(7_u64) }).expect("the pool runs");
            black_box(pool.run_until(handle))
        });
    });
    group.finish();
}

fn wake_poll(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("wake_poll");
    group.bench_function("orrery-executor", |bencher| {
        let executor = Executor::new(|| {});
        let (future, slot) = waiting();
        let _handle = executor.spawn(future);
        executor.run_ready(usize::MAX);
        let waker = waker_of(&slot);
        bencher.iter(|| {
            waker.wake_by_ref();
            black_box(executor.run_ready(usize::MAX))
        });
    });
    group.bench_function("async-executor", |bencher| {
        let executor = async_executor::Executor::new();
        let (future, slot) = waiting();
        executor.spawn(future).detach();
        while executor.try_tick() {}
        let waker = waker_of(&slot);
        bencher.iter(|| {
            waker.wake_by_ref();
            while black_box(executor.try_tick()) {}
        });
    });
    group.bench_function("futures LocalPool", |bencher| {
        let mut pool = LocalPool::new();
        let (future, slot) = waiting();
        pool.spawner().spawn_local(future).expect("the pool runs");
        pool.run_until_stalled();
        let waker = waker_of(&slot);
        bencher.iter(|| {
            waker.wake_by_ref();
            pool.run_until_stalled();
        });
    });
    group.finish();
}

criterion_group!(benches, spawn_run_take, wake_poll);
criterion_main!(benches);
