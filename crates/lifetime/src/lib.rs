//! The lifetime word of a kernel task: retain count, hold count and kill (after Alux).
//!
//! A task in Orrery can be killed at any time by any CPU, yet it must not be
//! freed while a CPU still runs one of its threads or a system call is halfway
//! through its memory. [`Lifetime`] decides, without locks, *when* clean-up may
//! start and *who* starts it; the kernel's task type embeds one, and the
//! garbage thread (the reaper) frees tasks whose [`Cleanup`] token it receives.
//!
//! # The two counts
//!
//! - A **retain** keeps the task's memory alive. The scheduler retains a task
//!   before running one of its threads, so clean-up can never run under a live
//!   thread. A retain fails once the task is killed *and* no hold remains.
//! - A **hold** also keeps the task from being cleaned up, and in addition keeps
//!   it retainable after a kill: a thread that holds its own task inside a system
//!   call can finish the call (and retain the task for the scheduler) even when
//!   another CPU kills the task meanwhile. A hold fails once the task is killed.
//! - [`Lifetime::kill`] is a *request*: it records the first kill's status and
//!   marks the task killed. Clean-up starts only when the task is killed and both
//!   counts are zero, and exactly one caller (the [`release`](Lifetime::release),
//!   [`unhold`](Lifetime::unhold) or [`kill`](Lifetime::kill) that reaches that
//!   point) receives the [`Cleanup`] token. After that every retain and hold
//!   fails, forever.
//!
//! # State machine
//!
//! ```text
//!              retain / release / hold / unhold move the counts
//!                 ┌─────┐
//!                 ▼     │
//!   new() ──►  ALIVE ───┘            1 retain, 0 holds at birth (the creator's retain)
//!                 │
//!                 │ (1) kill: claims the status slot
//!                 ▼
//!              KILLING               holds fail; retains fail unless a hold remains
//!                 │
//!      ┌──────────┴───────────┐
//!      │ (2) kill publishes   │ (3) kill publishes with no count left:
//!      │     the status       │     kill returns the Cleanup
//!      ▼                      │
//!   KILLED ───────────────────┤      is_killed() and exit_status() report the kill
//!      (4) release or unhold  │
//!      takes the last count:  │
//!      it returns the Cleanup ▼
//!                           DEAD     absorbing: retain/hold fail, release/unhold underflow
//! ```
//!
//! Transitions (1)–(3) are the two compare-exchange steps of one
//! [`Lifetime::kill`] call; (4) is made by [`Lifetime::release`] or
//! [`Lifetime::unhold`]. Releases and unholds during KILLING that drop the
//! counts to zero do not clean up: the kill in flight sees the zero counts when
//! it publishes, and takes transition (3) instead. So exactly one CAS ever sets
//! DEAD, and only the caller whose CAS it was holds a [`Cleanup`].
//!
//! # Why a kill takes two steps
//!
//! The exit status is 64 bits and the counts fill the other word, so the status
//! lives in a second atomic. An observer that sees the task killed must read the
//! *first* kill's status, so the status must be written before the killed bit is
//! published; but two killers writing it before either publishes would race on
//! the status itself. The first step therefore claims the slot (KILLING) in the
//! count word, the claimant writes the status, and the second step publishes
//! KILLED with release ordering. A second killer that sees the claim returns
//! [`KillOutcome::AlreadyKilled`] at once rather than waiting for the claimant
//! (which may be interrupted on its CPU: waiting could deadlock), and holds
//! already fail during the claim, so no new hold can sneak in after any kill
//! returned.
//!
//! # Word layout
//!
//! | bits   | meaning                                           |
//! |--------|---------------------------------------------------|
//! | 0–31   | retain count (32 bits)                            |
//! | 32–60  | hold count (29 bits)                              |
//! | 61     | KILLING: a kill claimed the status slot           |
//! | 62     | KILLED: the status is published                   |
//! | 63     | DEAD: the [`Cleanup`] token was handed out        |
//!
//! Overflow of either count is an error ([`RetainError::Overflow`],
//! [`HoldError::Overflow`]), never a wrap. Releasing or unholding below zero is
//! a bug of the caller; it returns [`ReleaseError::Underflow`] or
//! [`UnholdError::Underflow`] and leaves the word unchanged rather than
//! panicking in what may be an interrupt handler.
//!
//! # Example
//!
//! (Compiled but not run as a doctest: under `--cfg loom` the crate's atomics
//! work only inside a loom model. The unit tests run the same steps.)
//!
//! ```no_run
//! use orrery_lifetime::{HoldError, KillOutcome, Lifetime};
//!
//! let task = Lifetime::new(); // the creator's retain
//! task.hold().unwrap(); // a system call holds its task
//! // Another CPU kills the task: it is held, so nobody cleans up yet.
//! assert!(matches!(task.kill(9), KillOutcome::First { cleanup: None }));
//! assert_eq!(task.hold(), Err(HoldError::Killed));
//! task.retain().unwrap(); // still allowed: a hold remains
//! assert!(task.unhold().unwrap().is_none()); // two retains remain
//! assert!(task.release().unwrap().is_none());
//! let cleanup = task.release().unwrap().expect("the last release cleans up");
//! assert_eq!(cleanup.status(), 9);
//! cleanup.complete(); // the reaper freed the task
//! ```
#![no_std]
#![forbid(unsafe_code)]

mod guard;
mod sync;

#[cfg(all(test, not(loom)))]
mod tests;

use core::convert::Infallible;
use core::fmt;

pub use guard::{Held, Reaper, Retained};
use sync::{AtomicU64, Ordering};

/// Most retains a task can carry at once.
pub const MAX_RETAINS: u32 = u32::MAX;
/// Most holds a task can carry at once (29 bits of the word).
pub const MAX_HOLDS: u32 = (1 << HOLD_BITS) - 1;

const RETAIN_ONE: u64 = 1;
const RETAIN_MASK: u64 = 0xFFFF_FFFF;
const HOLD_SHIFT: u32 = 32;
const HOLD_BITS: u32 = 29;
const HOLD_ONE: u64 = 1 << HOLD_SHIFT;
const HOLD_MASK: u64 = (MAX_HOLDS as u64) << HOLD_SHIFT;
const KILLING: u64 = 1 << 61;
const KILLED: u64 = 1 << 62;
const DEAD: u64 = 1 << 63;

/// One value of the lifetime word, decoded on demand.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn retains(self) -> u32 {
        (self.0 & RETAIN_MASK) as u32
    }

    fn holds(self) -> u32 {
        ((self.0 & HOLD_MASK) >> HOLD_SHIFT) as u32
    }

    /// A kill has been claimed or published: holds fail from here on.
    fn kill_requested(self) -> bool {
        self.0 & (KILLING | KILLED) != 0
    }

    fn killed(self) -> bool {
        self.0 & KILLED != 0
    }

    /// Once published, a kill with no count left makes the task dead.
    /// Marks DEAD if so, and says whether it did.
    fn settle(self) -> (Word, bool) {
        if self.killed() && self.retains() == 0 && self.holds() == 0 {
            (Word(self.0 | DEAD), true)
        } else {
            (self, false)
        }
    }

    fn phase(self) -> Phase {
        if self.0 & DEAD != 0 {
            Phase::Dead
        } else if self.0 & KILLED != 0 {
            Phase::Killed
        } else if self.0 & KILLING != 0 {
            Phase::Killing
        } else {
            Phase::Alive
        }
    }
}

/// The lifetime word of one task. See the [crate documentation](crate) for the
/// rules and the state machine.
///
/// Every method is lock-free and may be called from any CPU, with interrupts on
/// or off, including from an interrupt handler that interrupted another call on
/// the same CPU.
pub struct Lifetime {
    /// Counts and phase bits, laid out as in the crate documentation.
    word: AtomicU64,
    /// The first kill's status. Written once, by the kill that claimed the slot,
    /// before that kill publishes KILLED; read only after KILLED is observed.
    status: AtomicU64,
}

impl Lifetime {
    /// A live task with one retain (its creator's) and no hold.
    #[must_use]
    pub fn new() -> Self {
        Self::from_word(RETAIN_ONE)
    }

    fn from_word(word: u64) -> Self {
        Self { word: AtomicU64::new(word), status: AtomicU64::new(0) }
    }

    /// A live task with the given counts, for tests that need to start near
    /// the limits.
    #[cfg(all(test, not(loom)))]
    fn with_counts(retains: u32, holds: u32) -> Self {
        assert!(holds <= MAX_HOLDS);
        Self::from_word(u64::from(retains) | (u64::from(holds) << HOLD_SHIFT))
    }

    /// Takes one retain.
    ///
    /// # Errors
    /// - [`RetainError::Killed`] once the task is killed and no hold remains.
    /// - [`RetainError::Overflow`] if [`MAX_RETAINS`] retains are already taken.
    pub fn retain(&self) -> Result<(), RetainError> {
        // Relaxed: like `Arc::clone`, taking a count needs no data from other
        // CPUs; the caller reached the task through something that already
        // synchronised (a task table, a running thread).
        self.modify(Ordering::Relaxed, |word| {
            if word.kill_requested() && word.holds() == 0 {
                Err(RetainError::Killed)
            } else if word.retains() == MAX_RETAINS {
                Err(RetainError::Overflow)
            } else {
                Ok((Word(word.0 + RETAIN_ONE), ()))
            }
        })
    }

    /// Gives back one retain. Returns the [`Cleanup`] token if this was the
    /// last count of a killed task (transition 4).
    ///
    /// # Errors
    /// [`ReleaseError::Underflow`] if no retain was taken: a bug of the caller.
    /// The word is left unchanged.
    pub fn release(&self) -> Result<Option<Cleanup>, ReleaseError> {
        self.modify(Ordering::AcqRel, |word| {
            if word.retains() == 0 { Err(ReleaseError::Underflow) } else { Ok(Word(word.0 - RETAIN_ONE).settle()) }
        })
        .map(|dead| dead.then(|| self.cleanup()))
    }

    /// Takes one hold.
    ///
    /// # Errors
    /// - [`HoldError::Killed`] once a kill has been requested (even one still
    ///   publishing its status).
    /// - [`HoldError::Overflow`] if [`MAX_HOLDS`] holds are already taken.
    pub fn hold(&self) -> Result<(), HoldError> {
        // Relaxed for the same reason as `retain`.
        self.modify(Ordering::Relaxed, |word| {
            if word.kill_requested() {
                Err(HoldError::Killed)
            } else if word.holds() == MAX_HOLDS {
                Err(HoldError::Overflow)
            } else {
                Ok((Word(word.0 + HOLD_ONE), ()))
            }
        })
    }

    /// Gives back one hold. Returns the [`Cleanup`] token if this was the last
    /// count of a killed task (transition 4).
    ///
    /// # Errors
    /// [`UnholdError::Underflow`] if no hold was taken: a bug of the caller.
    /// The word is left unchanged.
    pub fn unhold(&self) -> Result<Option<Cleanup>, UnholdError> {
        self.modify(Ordering::AcqRel, |word| {
            if word.holds() == 0 { Err(UnholdError::Underflow) } else { Ok(Word(word.0 - HOLD_ONE).settle()) }
        })
        .map(|dead| dead.then(|| self.cleanup()))
    }

    /// Requests that the task die with `status`.
    ///
    /// The first kill's status is kept; later kills change nothing and return
    /// [`KillOutcome::AlreadyKilled`]. The first kill returns
    /// [`KillOutcome::First`], carrying the [`Cleanup`] token if no retain and
    /// no hold remained (transition 3).
    ///
    /// A later kill may return while the first is still between its two steps
    /// (on another CPU, or interrupted on this one); holds already fail then,
    /// and [`is_killed`](Self::is_killed) turns true when the first kill returns.
    pub fn kill(&self, status: u64) -> KillOutcome {
        // (1) Claim. Relaxed: the claim publishes nothing; the status written
        // next is published by the release in step (2).
        let claim = self.modify(Ordering::Relaxed, |word| {
            if word.kill_requested() { Err(()) } else { Ok((Word(word.0 | KILLING), ())) }
        });
        if claim.is_err() {
            return KillOutcome::AlreadyKilled;
        }
        // Only the claimant ever writes the status, so a plain store suffices;
        // the release below orders it before KILLED.
        self.status.store(status, Ordering::Relaxed);
        // (2)/(3) Publish. Release: whoever acquires KILLED reads this status.
        // Acquire: if this publish finds no count left, the releases that
        // dropped them happen before the clean-up this call hands out.
        let published =
            self.modify(Ordering::AcqRel, |word| Ok::<_, Infallible>(Word((word.0 & !KILLING) | KILLED).settle()));
        let dead = match published {
            Ok(dead) => dead,
            Err(never) => match never {},
        };
        KillOutcome::First { cleanup: dead.then(|| self.cleanup()) }
    }

    /// Whether a kill has been published. When this returns `true`,
    /// [`exit_status`](Self::exit_status) returns the first kill's status.
    #[must_use]
    pub fn is_killed(&self) -> bool {
        Word(self.word.load(Ordering::Acquire)).killed()
    }

    /// The first kill's status, once that kill is published.
    #[must_use]
    pub fn exit_status(&self) -> Option<u64> {
        // Acquire pairs with the release that published KILLED (or with any
        // later read-modify-write in its release sequence), so the status
        // store that preceded it is visible.
        if Word(self.word.load(Ordering::Acquire)).killed() { Some(self.status.load(Ordering::Relaxed)) } else { None }
    }

    /// A snapshot of the word, for tests and debugging output. Stale as soon as
    /// it is returned when other CPUs use the task.
    #[must_use]
    pub fn counts(&self) -> Counts {
        let word = Word(self.word.load(Ordering::Acquire));
        Counts { retains: word.retains(), holds: word.holds(), phase: word.phase() }
    }

    /// The token for the caller whose compare-exchange set DEAD. That CAS
    /// acquired KILLED (directly or through its release sequence), so the
    /// status is visible.
    fn cleanup(&self) -> Cleanup {
        Cleanup { status: self.status.load(Ordering::Relaxed), armed: true }
    }

    /// The compare-exchange loop behind every operation: `decide` maps the
    /// current word to the next word and a result, or refuses with an error;
    /// the word is stored with `success` ordering only if nobody changed it
    /// meanwhile, else `decide` runs again on the fresh value.
    fn modify<T, E>(&self, success: Ordering, mut decide: impl FnMut(Word) -> Result<(Word, T), E>) -> Result<T, E> {
        // A relaxed first read is enough for deciding: the compare-exchange
        // only succeeds on the latest value, data is ordered by `success`, and
        // an error decided on a stale value rests on a fact that never reverts
        // (see `sync::first_read`).
        let mut current = Word(sync::first_read(&self.word));
        loop {
            let (next, value) = decide(current)?;
            match self.word.compare_exchange_weak(current.0, next.0, success, Ordering::Relaxed) {
                Ok(_) => return Ok(value),
                Err(actual) => current = Word(actual),
            }
        }
    }
}

impl Default for Lifetime {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Lifetime {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Lifetime")
            .field("counts", &self.counts())
            .field("exit_status", &self.exit_status())
            .finish()
    }
}

/// Where a task is in the state machine of the [crate documentation](crate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not killed.
    Alive,
    /// A kill claimed the status slot and is about to publish it.
    Killing,
    /// Killed; some retain or hold remains.
    Killed,
    /// Killed with no count left; the [`Cleanup`] token was handed out.
    Dead,
}

/// A snapshot returned by [`Lifetime::counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Retains taken and not released.
    pub retains: u32,
    /// Holds taken and not unheld.
    pub holds: u32,
    /// Where the task is in its state machine.
    pub phase: Phase,
}

/// Permission, and duty, to clean up one task: handed to exactly one caller,
/// the one whose release, unhold or kill left a killed task with no count.
///
/// The holder must pass it to the reaper (the garbage thread), which frees the
/// task and then calls [`complete`](Self::complete). Dropping it instead would
/// leak the task; `#[must_use]` catches the obvious cases at compile time, and
/// in builds with debug assertions dropping an uncompleted token panics, so
/// the subtle ones fail tests. `core::mem::forget` remains the explicit way to
/// leak one on purpose.
#[must_use = "a Cleanup is the only permission to free the task: hand it to the reaper"]
#[derive(Debug)]
pub struct Cleanup {
    status: u64,
    /// Cleared by `complete`; a drop while set is a lost clean-up.
    armed: bool,
}

impl Cleanup {
    /// The status of the kill that doomed the task.
    #[must_use]
    pub fn status(&self) -> u64 {
        self.status
    }

    /// Marks the clean-up done. The reaper calls this after freeing the task.
    pub fn complete(mut self) {
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        debug_assert!(
            !self.armed,
            "a Cleanup token (kill status {}) was dropped without Cleanup::complete: the task leaks",
            self.status
        );
    }
}

/// What [`Lifetime::kill`] did.
#[must_use = "the first kill may carry the Cleanup token"]
#[derive(Debug)]
pub enum KillOutcome {
    /// This call's status is the one kept.
    First {
        /// The token, if no retain and no hold remained at the kill.
        cleanup: Option<Cleanup>,
    },
    /// An earlier kill's status stands; this call changed nothing.
    AlreadyKilled,
}

impl KillOutcome {
    /// Whether this call's status is the one kept.
    #[must_use]
    pub fn is_first(&self) -> bool {
        matches!(self, Self::First { .. })
    }

    /// The [`Cleanup`] token, if this call made the task dead.
    pub fn into_cleanup(self) -> Option<Cleanup> {
        match self {
            Self::First { cleanup } => cleanup,
            Self::AlreadyKilled => None,
        }
    }
}

/// Why [`Lifetime::retain`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetainError {
    /// The task is killed and no hold keeps it retainable.
    Killed,
    /// [`MAX_RETAINS`] retains are already taken.
    Overflow,
}

/// Why [`Lifetime::hold`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldError {
    /// A kill has been requested.
    Killed,
    /// [`MAX_HOLDS`] holds are already taken.
    Overflow,
}

/// Why [`Lifetime::release`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseError {
    /// No retain was taken: the caller released one it did not own.
    Underflow,
}

/// Why [`Lifetime::unhold`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnholdError {
    /// No hold was taken: the caller unheld one it did not own.
    Underflow,
}

impl fmt::Display for RetainError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Killed => "cannot retain a killed task that nobody holds",
            Self::Overflow => "retain count would overflow",
        })
    }
}

impl fmt::Display for HoldError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Killed => "cannot hold a killed task",
            Self::Overflow => "hold count would overflow",
        })
    }
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("released a task that has no retain")
    }
}

impl fmt::Display for UnholdError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("unheld a task that has no hold")
    }
}

impl core::error::Error for RetainError {}
impl core::error::Error for HoldError {}
impl core::error::Error for ReleaseError {}
impl core::error::Error for UnholdError {}
