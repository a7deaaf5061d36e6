//! Join handles: a spawned future's output, awaited or taken.

use alloc::{boxed::Box, sync::Arc};
use core::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use crate::{
    sync::{AtomicU8, Mutex, Ordering},
    task::{Runnable, Task},
};

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const CANCELLED: u8 = 2;

/// How a task tells its handle it was dropped unfinished.
pub(crate) trait Completion: Send + Sync {
    fn cancelled(&self);
}

/// Where a future's output waits for its handle.
pub(crate) struct JoinState<T> {
    status: AtomicU8,
    output: Mutex<Option<T>>,
    waker: Mutex<Option<Waker>>,
}

impl<T> JoinState<T> {
    fn settle(&self, status: u8) {
        self.status.store(status, Ordering::Release);
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

impl<T: Send> Completion for JoinState<T> {
    fn cancelled(&self) {
        if self.status.load(Ordering::Acquire) == RUNNING {
            self.settle(CANCELLED);
        }
    }
}

/// The future was cancelled before it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancelled;

/// A spawned future's handle: await it (or [`try_take`](Self::try_take))
/// for the output; [`cancel`](Self::cancel) to stop it. Dropping the handle
/// detaches the future, which runs to its end.
pub struct JoinHandle<T> {
    state: Arc<JoinState<T>>,
    task: Option<Arc<Task>>,
}

/// The erased future to spawn and the handle for its output.
pub(crate) fn pair<F>(future: F) -> (Runnable, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let state =
        Arc::new(JoinState { status: AtomicU8::new(RUNNING), output: Mutex::new(None), waker: Mutex::new(None) });
    let shared = state.clone();
    let runnable: Runnable = Box::pin(async move {
        let output = future.await;
        *shared.output.lock() = Some(output);
        shared.settle(FINISHED);
    });
    (runnable, JoinHandle { state, task: None })
}

impl<T: Send + 'static> JoinHandle<T> {
    pub(crate) fn state(&self) -> Arc<dyn Completion> {
        self.state.clone()
    }

    pub(crate) fn set_task(&mut self, task: Arc<Task>) {
        self.task = Some(task);
    }

    /// Whether the future has finished or been cancelled.
    pub fn is_finished(&self) -> bool {
        self.state.status.load(Ordering::Acquire) != RUNNING
    }

    /// The output, if the future has finished and it was not taken yet;
    /// `Err(Cancelled)` if it was cancelled.
    pub fn try_take(&self) -> Option<Result<T, Cancelled>> {
        match self.state.status.load(Ordering::Acquire) {
            FINISHED => self.state.output.lock().take().map(Ok),
            CANCELLED => Some(Err(Cancelled)),
            _ => None,
        }
    }

    /// Stops the future: it is dropped at its next turn without being
    /// polled again (at once if it is not running). Awaiting the handle
    /// then gives `Err(Cancelled)`, unless it had finished already.
    pub fn cancel(&self) {
        if let Some(task) = &self.task {
            task.cancel();
        }
    }

    /// Whether the executor has let go of the future (finished or dropped).
    pub fn is_released(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_done())
    }
}

impl<T: Send + 'static> Future for JoinHandle<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.try_take() {
            return Poll::Ready(result);
        }
        *self.state.waker.lock() = Some(context.waker().clone());
        // Settled between the look and the registration: look again.
        match self.try_take() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}
