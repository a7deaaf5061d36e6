//! What happened to a process ([`Event`]), and where that takes it ([`apply`]).
//!
//! The kernel's process code speaks of events ("it blocked", "preempt it")
//! rather than of raw states, so a caller cannot ask for a move that the table
//! allows but that the event does not mean: a `Yield` never wakes a waiting
//! process, although Waiting → RunnableS is an edge. Every move [`apply`] makes
//! is an edge of [`ProcState`]'s table; the tests check that, and that every
//! edge has an event.

use crate::ProcState::{self, Created, Dying, DyingAbort, RunnableM, RunnableS, RunningM, RunningS, Waiting};
use crate::TransitionError;

/// Whether a process runs on one core or is gang-scheduled on many.
///
/// A Waiting process could be either, and the state does not say which, so a
/// [`Event::Wake`] carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoreMode {
    /// A single-core process (`_S`).
    Single,
    /// A many-core process (`_M`).
    Many,
}

/// Something that happened to a process. The edge numbers refer to the table
/// in [`ProcState`]'s documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The parent made the new process runnable: 1.
    Start,
    /// The scheduler gave it its core(s): 2 (RunnableS), 8 (RunnableM).
    Run,
    /// A running core gave itself up: 3 for a single-core process. For a
    /// many-core process that keeps other cores this changes no state; the
    /// last core uses [`YieldLastCore`](Self::YieldLastCore).
    Yield,
    /// It blocked waiting for an event: 4.
    Block,
    /// Having published Waiting, it found its wake-up already pending and
    /// keeps running: 6. A waker on another CPU racing it uses `Wake`; the
    /// compare-exchange in [`AtomicProcState`](crate::AtomicProcState) picks one.
    CancelBlock,
    /// Its event arrived: 5 (single-core), 11 (many-core).
    Wake {
        /// What kind of process is waiting.
        mode: CoreMode,
    },
    /// It asked for `cores` cores: 7 when a single-core process asks for at
    /// least one, 12 when a many-core process asks for none. A running
    /// many-core process asking for more changes no state.
    RequestCores {
        /// Cores wanted in total.
        cores: u32,
    },
    /// The last core of a many-core process yielded with nothing pending: 10.
    YieldLastCore,
    /// The kernel took all the cores of a running many-core process: 9.
    Preempt,
    /// It is being destroyed: 13–18, from any live state.
    Kill,
    /// Destruction finished closing and aborting: 19.
    Reap,
}

/// The state a process in `state` reaches when `event` happens.
///
/// The result is always an edge of the table, except for the two events that
/// leave a running many-core process where it is (`Yield` of a core that is not
/// the last, `RequestCores` of one or more): those return `RunningM` again.
///
/// # Errors
/// [`TransitionError`] with the event, the state, and the state the event
/// would have led to, if the event cannot happen in `state`. The state is
/// unchanged.
pub fn apply(state: ProcState, event: Event) -> Result<ProcState, TransitionError> {
    // Each arm says from which states the event is allowed and where it leads;
    // for a refused event, `to` is where it would lead, for the error message.
    let (allowed, to) = match event {
        Event::Start => (state == Created, RunnableS),
        Event::Run if state == RunnableM => (true, RunningM),
        Event::Run => (state == RunnableS, RunningS),
        Event::Yield if state == RunningM => (true, RunningM),
        Event::Yield => (state == RunningS, RunnableS),
        Event::Block => (state == RunningS, Waiting),
        Event::CancelBlock => (state == Waiting, RunningS),
        Event::Wake { mode: CoreMode::Single } => (state == Waiting, RunnableS),
        Event::Wake { mode: CoreMode::Many } => (state == Waiting, RunnableM),
        Event::RequestCores { cores: 0 } => (state == RunningM, RunnableS),
        Event::RequestCores { .. } if state == RunningM => (true, RunningM),
        Event::RequestCores { .. } => (state == RunningS, RunnableM),
        Event::YieldLastCore => (state == RunningM, Waiting),
        Event::Preempt => (state == RunningM, RunnableM),
        Event::Kill => (state.is_alive(), Dying),
        Event::Reap => (state == Dying, DyingAbort),
    };
    if allowed {
        debug_assert!(to == state || state.can_transition(to));
        Ok(to)
    } else {
        Err(TransitionError { from: state, to, event: Some(event) })
    }
}
