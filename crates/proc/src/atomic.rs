//! [`AtomicProcState`]: a process's state in one byte that any CPU may move.
//!
//! A process is touched from many CPUs at once: its own (blocking, yielding),
//! the scheduler's (running it), and any CPU that wakes, preempts or kills it.
//! Every move is a compare-exchange from the state the caller believes in, so
//! of two racing moves exactly one lands, and the loser learns what happened
//! instead (Akaros serialises the same races with its `proc_lock`).

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::{Event, ProcState, TransitionError, apply};

/// A [`ProcState`] shared between CPUs.
///
/// Orderings: a successful move is acquire-release, so whatever the mover wrote
/// before it (the saved context before `Yield`, the granted cores before `Run`)
/// is visible to whoever makes or observes a later move; loads acquire.
pub struct AtomicProcState {
    bits: AtomicU8,
}

/// A move that landed: from which state to which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before the move.
    pub from: ProcState,
    /// The state after it (equal to `from` for the events that keep a running
    /// many-core process where it is).
    pub to: ProcState,
}

/// Why [`AtomicProcState::try_transition`] did not move the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryTransitionError {
    /// The table has no such edge; nothing was attempted.
    Forbidden(TransitionError),
    /// The state was not `expected` but `actual`: another CPU moved it first.
    Raced {
        /// The state the caller expected.
        expected: ProcState,
        /// The state found instead (left as it was).
        actual: ProcState,
        /// The state the caller asked for.
        to: ProcState,
    },
}

impl AtomicProcState {
    /// A state word holding `state`.
    #[must_use]
    pub const fn new(state: ProcState) -> Self {
        Self { bits: AtomicU8::new(state.bits()) }
    }

    /// The current state.
    #[must_use]
    #[inline]
    pub fn load(&self) -> ProcState {
        decode(self.bits.load(Ordering::Acquire))
    }

    /// Moves from `from` to `to` if the table allows it and the state is still
    /// `from`.
    ///
    /// # Errors
    /// - [`TryTransitionError::Forbidden`] if the table has no such edge.
    /// - [`TryTransitionError::Raced`] if the state was no longer `from`.
    #[inline]
    pub fn try_transition(&self, from: ProcState, to: ProcState) -> Result<(), TryTransitionError> {
        from.transition(to).map_err(TryTransitionError::Forbidden)?;
        self.bits
            .compare_exchange(from.bits(), to.bits(), Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|actual| TryTransitionError::Raced { expected: from, actual: decode(actual), to })
    }

    /// Applies `event` to whatever the state is now, retrying if another CPU
    /// moves it meanwhile; returns the move made.
    ///
    /// # Errors
    /// [`TransitionError`] if the event cannot happen in the state found; the
    /// state is left as found.
    pub fn apply(&self, event: Event) -> Result<Transition, TransitionError> {
        let mut from = self.load();
        loop {
            let to = apply(from, event)?;
            match self.bits.compare_exchange_weak(from.bits(), to.bits(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Transition { from, to }),
                Err(actual) => from = decode(actual),
            }
        }
    }

    /// True when the state is `state`: one load and compare, without
    /// decoding the word (for a caller that only moves it when it differs).
    #[must_use]
    #[inline]
    pub fn is(&self, state: ProcState) -> bool {
        self.bits.load(Ordering::Acquire) == state.bits()
    }

    /// See [`ProcState::is_alive`].
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.load().is_alive()
    }

    /// See [`ProcState::is_many_core`].
    #[must_use]
    pub fn is_many_core(&self) -> bool {
        self.load().is_many_core()
    }

    /// See [`ProcState::is_runnable`].
    #[must_use]
    pub fn is_runnable(&self) -> bool {
        self.load().is_runnable()
    }
}

impl fmt::Debug for AtomicProcState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_tuple("AtomicProcState").field(&self.load()).finish()
    }
}

/// Decodes a byte this module stored. Only `ProcState::bits` values are ever
/// stored (by `new` and by moves the table checked), so another byte means the
/// memory was overwritten from outside: stop rather than act on it.
#[inline]
fn decode(bits: u8) -> ProcState {
    match ProcState::from_bits(bits) {
        Some(state) => state,
        None => panic!("process state word holds {bits:#04x}: memory corrupted"),
    }
}

impl fmt::Display for TryTransitionError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forbidden(error) => error.fmt(formatter),
            Self::Raced { expected, actual, to } => {
                write!(formatter, "process was {actual}, not {expected}, when moving it to {to}")
            }
        }
    }
}

impl core::error::Error for TryTransitionError {}

impl From<TransitionError> for TryTransitionError {
    fn from(error: TransitionError) -> Self {
        Self::Forbidden(error)
    }
}
