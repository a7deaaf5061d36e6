//! RAII guards over a [`Lifetime`]: [`Held`] and [`Retained`], and the
//! [`Reaper`] they hand clean-up to.
//!
//! A guard gives its count back when dropped, and that give-back may be the one
//! that owes the task's clean-up. `Drop` cannot return a value, so each guard
//! borrows a [`Reaper`] when it is made and forwards the [`Cleanup`] token to
//! it: the token can never be lost in a drop. A caller that wants the token
//! itself ends the guard with [`Held::unhold`] or [`Retained::release`], which
//! return it (`#[must_use]`) instead. The kernel wraps these generic guards in
//! its own (Alux's `HoldScope` is `Held` plus "the current task" and a
//! non-critical section).

use core::fmt;

use crate::{Cleanup, HoldError, Lifetime, ReleaseError, RetainError, UnholdError};

/// Receives the [`Cleanup`] token of a task that a guard's drop made dead.
///
/// In the kernel this queues the task for the garbage thread; it runs in
/// whatever context dropped the guard (possibly with interrupts off), so it
/// must not block or allocate. Closures `Fn(Cleanup)` are reapers too.
pub trait Reaper {
    /// Takes over the clean-up of a task. Called at most once per task.
    fn reap(&self, cleanup: Cleanup);
}

impl<F: Fn(Cleanup) + ?Sized> Reaper for F {
    fn reap(&self, cleanup: Cleanup) {
        self(cleanup);
    }
}

/// One hold on a task, given back when dropped.
///
/// While it lives the task cannot be cleaned up and stays retainable even if
/// killed: the guard for the body of a system call.
#[must_use = "dropping a Held at once gives the hold back"]
pub struct Held<'a, R: Reaper + ?Sized> {
    lifetime: &'a Lifetime,
    reaper: &'a R,
}

impl<'a, R: Reaper + ?Sized> Held<'a, R> {
    /// Holds the task; a drop that makes it dead hands the token to `reaper`.
    ///
    /// # Errors
    /// As [`Lifetime::hold`]: the task is killed, or the count would overflow.
    pub fn new(lifetime: &'a Lifetime, reaper: &'a R) -> Result<Self, HoldError> {
        lifetime.hold()?;
        Ok(Self { lifetime, reaper })
    }

    /// The held task's lifetime word.
    #[must_use]
    pub fn lifetime(&self) -> &'a Lifetime {
        self.lifetime
    }

    /// Gives the hold back now and returns the [`Cleanup`] token to the
    /// caller, instead of the reaper, if this made the task dead.
    ///
    /// # Errors
    /// [`UnholdError::Underflow`] only if someone else unheld this guard's hold
    /// with a bare [`Lifetime::unhold`]: the bug is at that call.
    pub fn unhold(self) -> Result<Option<Cleanup>, UnholdError> {
        let lifetime = self.lifetime;
        // The hold is given back here, not by `Drop`.
        core::mem::forget(self);
        lifetime.unhold()
    }

    /// Kills the held task with `status` and gives the hold back (Alux's
    /// `HoldScope::Exit`): the way a system call that caught its task
    /// misbehaving ends it. If this made the task dead the reaper gets the
    /// token. Returns whether `status` is the one kept (no earlier kill).
    pub fn exit(self, status: u64) -> bool {
        // The kill cannot make the task dead (this guard holds it), so its
        // outcome carries no token; the drop below may, and forwards it.
        let first = self.lifetime.kill(status).is_first();
        drop(self);
        first
    }
}

impl<R: Reaper + ?Sized> Drop for Held<'_, R> {
    fn drop(&mut self) {
        match self.lifetime.unhold() {
            Ok(Some(cleanup)) => self.reaper.reap(cleanup),
            Ok(None) => {}
            // Nothing sound to do in a drop; the count is already zero, which
            // is consistent. Fail loudly where it is cheap to.
            Err(error) => {
                if cfg!(debug_assertions) {
                    panic!("Held dropped: {error}");
                }
            }
        }
    }
}

impl<R: Reaper + ?Sized> fmt::Debug for Held<'_, R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Held").field("lifetime", self.lifetime).finish_non_exhaustive()
    }
}

/// One retain on a task, given back when dropped.
///
/// While it lives the task's memory stays: the scheduler keeps one for each
/// running thread of the task.
#[must_use = "dropping a Retained at once gives the retain back"]
pub struct Retained<'a, R: Reaper + ?Sized> {
    lifetime: &'a Lifetime,
    reaper: &'a R,
}

impl<'a, R: Reaper + ?Sized> Retained<'a, R> {
    /// Retains the task; a drop that makes it dead hands the token to `reaper`.
    ///
    /// # Errors
    /// As [`Lifetime::retain`]: the task is killed and nobody holds it, or the
    /// count would overflow.
    pub fn new(lifetime: &'a Lifetime, reaper: &'a R) -> Result<Self, RetainError> {
        lifetime.retain()?;
        Ok(Self { lifetime, reaper })
    }

    /// Takes charge of a retain the caller already owns, such as the creator's
    /// retain that [`Lifetime::new`] is born with. Nothing is counted here.
    pub fn adopt(lifetime: &'a Lifetime, reaper: &'a R) -> Self {
        Self { lifetime, reaper }
    }

    /// The retained task's lifetime word.
    #[must_use]
    pub fn lifetime(&self) -> &'a Lifetime {
        self.lifetime
    }

    /// Gives the retain back now and returns the [`Cleanup`] token to the
    /// caller, instead of the reaper, if this made the task dead.
    ///
    /// # Errors
    /// [`ReleaseError::Underflow`] only if someone else released this guard's
    /// retain with a bare [`Lifetime::release`] (or [`adopt`](Self::adopt) took
    /// a retain that was never there): the bug is at that call.
    pub fn release(self) -> Result<Option<Cleanup>, ReleaseError> {
        let lifetime = self.lifetime;
        // The retain is given back here, not by `Drop`.
        core::mem::forget(self);
        lifetime.release()
    }
}

impl<R: Reaper + ?Sized> Drop for Retained<'_, R> {
    fn drop(&mut self) {
        match self.lifetime.release() {
            Ok(Some(cleanup)) => self.reaper.reap(cleanup),
            Ok(None) => {}
            // As in `Held`'s drop: consistent already, loud where cheap.
            Err(error) => {
                if cfg!(debug_assertions) {
                    panic!("Retained dropped: {error}");
                }
            }
        }
    }
}

impl<R: Reaper + ?Sized> fmt::Debug for Retained<'_, R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Retained").field("lifetime", self.lifetime).finish_non_exhaustive()
    }
}
