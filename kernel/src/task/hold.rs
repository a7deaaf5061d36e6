//! Hold scopes (Alux): code in the middle of work on its task holds the
//! task, so a kill waits until the work is done.
//!
//! A thread outside any hold scope may be stopped at any preemption point
//! once its task is killed, and its stack is discarded. So code that owns
//! memory on its stack (a `Vec` in a local, a lock it must release) runs in
//! a hold scope: a kill then takes effect when the outermost scope ends, and
//! waits inside the scope return [`WakeReason::Killed`](super::WakeReason)
//! so the code can finish early.

use core::sync::atomic::Ordering;

use super::{ExitStatus, domain::Task, scheduler};

/// Holds the current task for as long as it lives.
pub struct HoldScope {
    _not_send: core::marker::PhantomData<*const ()>,
}

impl HoldScope {
    /// Holds the current task. If the task has been killed it cannot be held
    /// any more, and the current thread ends here (Alux's semantics): the
    /// caller, outside any scope, has nothing to clean up.
    pub fn new() -> Self {
        let thread = scheduler::current();
        // The depth goes up first: from here on a kill cannot stop the
        // thread between taking the hold and recording it (which would leak
        // the hold and keep the task from being cleaned up).
        thread.hold_depth.fetch_add(1, Ordering::Relaxed);
        if thread.task.lifetime.hold().is_err() {
            thread.hold_depth.fetch_sub(1, Ordering::Relaxed);
            scheduler::exit_current();
        }
        HoldScope { _not_send: core::marker::PhantomData }
    }

    /// The task held.
    pub fn task(&self) -> &'static Task {
        &scheduler::current().task
    }

    /// True once the held task has been killed (finish quickly).
    pub fn killed(&self) -> bool {
        self.task().is_killed()
    }

    /// Ends the current task with `status` and this thread with it; the
    /// hold is released on the way (Alux's `HoldScope::Exit`).
    pub fn exit(self, status: u64) -> ! {
        super::kill_task(&scheduler::current().task, ExitStatus::Exited(status));
        drop(self);
        scheduler::exit_current()
    }
}

impl Default for HoldScope {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HoldScope {
    fn drop(&mut self) {
        let thread = scheduler::current();
        // The mirror image of `new`: release the hold while the depth still
        // protects the thread, then lower the depth.
        match thread.task.lifetime.unhold() {
            Ok(Some(cleanup)) => super::reaper::clean_up_task(thread.task.clone(), cleanup),
            Ok(None) => {}
            Err(error) => panic!("hold scope of {:?}: {error}", thread.task),
        }
        let depth = thread.hold_depth.fetch_sub(1, Ordering::Relaxed) - 1;
        if depth == 0 && thread.task.is_killed() {
            // Killed while held: the kill takes effect now.
            scheduler::exit_current();
        }
    }
}
