//! Kernel futures on each CPU's executor.
//!
//! Every CPU's dispatcher owns an [`orrery_executor::Executor`]. Kernel
//! services and timers are futures spawned onto one; the dispatcher polls
//! the ready ones on its own stack, between threads, as it runs user threads
//! and the system-call futures they wait in (Hermit's kernel thread per core
//! running futures). A future that becomes ready makes its CPU's next switch
//! go to the dispatcher (`scheduler::futures_ready`), so busy threads cannot
//! starve it; the dispatcher polls a bounded batch, then threads run again.
//!
//! Futures never block: they wait by returning `Pending` and are woken by
//! wakers, which may run on any CPU and in interrupt handlers. A kernel
//! thread waits for a future with [`block_on`].

use alloc::{sync::Arc, task::Wake, vec::Vec};
use core::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use orrery_executor::Executor;
pub use orrery_executor::{Cancelled, JoinHandle};

use super::{
    scheduler,
    thread::{ThreadId, ThreadKind},
};
use crate::{
    arch::{cpu_index, smp, tsc},
    time,
};

static EXECUTORS: spin::Once<Vec<Executor>> = spin::Once::new();

/// Makes every CPU's executor (before any CPU schedules).
pub(super) fn init() {
    EXECUTORS
        .call_once(|| (0..smp::cpu_count()).map(|cpu| Executor::new(move || scheduler::futures_ready(cpu))).collect());
}

fn executor(cpu: usize) -> &'static Executor {
    &EXECUTORS.get().expect("task::init first")[cpu]
}

/// Spawns `future` on CPU `cpu`'s executor; it first runs when that CPU's
/// dispatcher next gets the CPU. Panics if `cpu` is not online.
pub fn spawn_on<F>(cpu: usize, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    executor(cpu).spawn(future)
}

/// Spawns `future` on this CPU's executor.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_on(cpu_index(), future)
}

/// Polls up to `budget` of this CPU's ready futures (the dispatcher's
/// turn); true if more are ready.
pub(super) fn run_ready(cpu: usize, budget: usize) -> bool {
    // Polls are short and never block: like a bottom half, a batch is not
    // preempted (a preempted dispatcher would resume only when its CPU is
    // otherwise idle).
    let _batch = scheduler::PreemptGuard::new();
    executor(cpu).run_ready(budget).more
}

/// Futures alive on CPU `cpu`'s executor.
pub fn live(cpu: usize) -> usize {
    executor(cpu).live()
}

/// Wakes a thread by id.
struct ThreadWaker(ThreadId);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        super::wake(self.0);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        super::wake(self.0);
    }
}

/// A waker that wakes thread `id` (if it is waiting).
pub fn thread_waker(id: ThreadId) -> Waker {
    Waker::from(Arc::new(ThreadWaker(id)))
}

/// Runs `future` to its end on the calling kernel thread, sleeping while it
/// waits. Returns `None` if the thread's task was killed meanwhile (the
/// future is dropped; the caller should return and let the thread stop).
pub fn block_on<F: Future>(future: F) -> Option<F::Output> {
    let me = scheduler::current();
    assert!(me.kind == ThreadKind::Kernel, "block_on in a user thread: system calls that wait are futures");
    let waker = thread_waker(me.id());
    let mut context = Context::from_waker(&waker);
    let mut future = core::pin::pin!(future);
    loop {
        // Visible to wakers before the poll, so a wake-up during the poll
        // is not lost (see `wait`).
        super::wait::prepare_current();
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            super::wait::cancel_current();
            return Some(output);
        }
        if super::wait::block_prepared() == super::WakeReason::Killed || me.must_stop() {
            return None;
        }
    }
}

/// A future that completes at a TSC deadline (a timer on the CPU that
/// polls it). Dropped before its deadline, it takes its timer back, so
/// futures that race a far deadline against something else do not leave
/// timers (and the wakers they hold) queued.
pub struct Sleep {
    deadline: u64,
    armed: Option<(Waker, time::WakerTimerKey)>,
}

/// Completes at `deadline_tsc`.
pub fn sleep_until(deadline_tsc: u64) -> Sleep {
    Sleep { deadline: deadline_tsc, armed: None }
}

/// Completes `nanos` nanoseconds from now.
pub fn sleep_for_nanos(nanos: u64) -> Sleep {
    sleep_until(tsc::now() + tsc::nanos_to_ticks(nanos))
}

impl Sleep {
    /// Cancels the queued timer if it has not fired yet.
    fn disarm(&mut self) {
        if let Some((_, key)) = self.armed.take()
            && tsc::now() < self.deadline
        {
            // On another CPU than the one that queued it this does nothing:
            // the timer then fires once, spuriously.
            let _ = time::cancel_waker_timer(key);
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if tsc::now() >= self.deadline {
            return Poll::Ready(());
        }
        // One timer per waker: a poll with the same waker (a spurious
        // wake-up) does not queue another; one with a new waker replaces it.
        if self.armed.as_ref().is_none_or(|(armed, _)| !armed.will_wake(context.waker())) {
            self.disarm();
            match time::add_waker_timer(self.deadline, context.waker().clone()) {
                Ok(key) => self.armed = Some((context.waker().clone(), key)),
                Err(time::OutOfMemory) => {
                    // No memory for a timer: poll again soon rather than
                    // sleep for ever.
                    context.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        Poll::Pending
    }
}

/// Resolves on the first poll after [`Signal::set`]: a one-shot event a
/// thread or an interrupt handler sets and a future awaits.
pub struct Signal {
    set: core::sync::atomic::AtomicBool,
    waker: crate::sync::SpinLock<Option<Waker>>,
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    /// An unset signal.
    pub const fn new() -> Self {
        Self { set: core::sync::atomic::AtomicBool::new(false), waker: crate::sync::SpinLock::new(None) }
    }

    /// Sets it and wakes the future awaiting it.
    pub fn set(&self) {
        self.set.store(true, core::sync::atomic::Ordering::Release);
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.set.load(core::sync::atomic::Ordering::Acquire)
    }

    /// A future that completes once it is set.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

/// Awaiting a [`Signal`].
pub struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_set() {
            return Poll::Ready(());
        }
        *self.signal.waker.lock() = Some(context.waker().clone());
        // Set between the look and the registration: look again.
        if self.signal.is_set() { Poll::Ready(()) } else { Poll::Pending }
    }
}
