//! The Akaros process state machine: which state a process is in, and which
//! moves between states the kernel may make.
//!
//! Orrery's processes follow Akaros ("Barret Rhoden, processes.txt"): a process
//! is *created*, set up by its parent, then made runnable; it runs as a
//! single-core process (`_S`) until it asks for cores and becomes a many-core
//! process (`_M`), whose cores are gang-scheduled. [`ProcState`] names the eight
//! states and [`ProcState::transition`] checks one move against the table
//! below; [`Event`] and [`apply`] let callers say *what happened* (a yield, a
//! preemption) instead of naming raw states; [`AtomicProcState`] holds the state
//! in one byte that any CPU may move with a compare-exchange.
//!
//! This crate is pure logic: it decides whether a move is allowed and records
//! it. Saving contexts, handing out cores and tearing down address spaces are
//! the kernel's work, done around these calls.
//!
//! # Where the table comes from
//!
//! The allowed moves are those of Akaros's `__proc_set_state()`
//! (`kern/src/process.c`), including the two it allows but calls "not thought
//! through yet" (RunnableS → Dying, RunnableM → Dying). Three edges differ from
//! a first reading of the seed text, for the reasons given in
//! `docs/proc.md`: RunnableS → RunnableM and RunnableM → Waiting are *not*
//! allowed (Akaros refuses both), and Waiting → RunningS *is* (a blocking
//! process that finds a wake-up already pending keeps its core).
//!
//! # Example
//!
//! ```
//! use orrery_proc::{AtomicProcState, CoreMode, Event, ProcState, Transition, apply};
//!
//! // The parent starts its child; the scheduler runs it; it asks for cores.
//! let mut state = ProcState::Created;
//! for event in [Event::Start, Event::Run, Event::RequestCores { cores: 4 }] {
//!     state = apply(state, event).unwrap();
//! }
//! assert_eq!(state, ProcState::RunnableM);
//! // A yield means nothing to a process that is not running.
//! assert!(apply(state, Event::Yield).is_err());
//!
//! // Across CPUs: of a waker and the blocker itself, one compare-exchange wins.
//! let word = AtomicProcState::new(ProcState::Waiting);
//! let woken = word.apply(Event::Wake { mode: CoreMode::Single });
//! assert_eq!(woken, Ok(Transition { from: ProcState::Waiting, to: ProcState::RunnableS }));
//! assert!(word.apply(Event::CancelBlock).is_err());
//! ```
#![no_std]
#![forbid(unsafe_code)]

mod atomic;
mod event;

#[cfg(test)]
mod tests;

use core::fmt;

pub use atomic::{AtomicProcState, Transition, TryTransitionError};
pub use event::{CoreMode, Event, apply};

/// The state of a process.
///
/// Each discriminant is one bit, as in Akaros, so a set of states is a `u8`
/// mask and the zero byte is never a valid state (a zeroed [`AtomicProcState`]
/// is caught, not read as `Created`).
///
/// # Transitions
///
/// ```text
///  Created ──1──► RunnableS ──2──► RunningS ──7──► RunnableM ──8──► RunningM
///                   ▲   ▲ ◄───3─────┘ │  ▲           ▲ ◄─────9──────┘ │ │
///                   │   │             4  6          11                │ │
///                   │   │             ▼  │           │                │ │
///                   │   └─────5───── Waiting ────────┘                │ │
///                   │                  ▲                              │ │
///                   │                  └──────────────10──────────────┘ │
///                   └─────────────────────────12────────────────────────┘
///
///  Created, RunnableS, RunningS, Waiting, RunnableM, RunningM ──13…18──► Dying ──19──► DyingAbort
/// ```
///
/// | #     | from → to               | [`Event`]                   | made by (Akaros function)                                  |
/// |-------|-------------------------|-----------------------------|------------------------------------------------------------|
/// | 1     | Created → RunnableS     | `Start`                     | the parent, done setting up the child, runs it: `proc_run` (`proc_wakeup` of a new process) |
/// | 2     | RunnableS → RunningS    | `Run`                       | the scheduler dispatches it on a core (`proc_run_s`)       |
/// | 3     | RunningS → RunnableS    | `Yield`                     | it gives up its core with work left (`proc_yield`, being nice) |
/// | 4     | RunningS → Waiting      | `Block`                     | it blocks in a system call (`proc_yield`, not nice)        |
/// | 5     | Waiting → RunnableS     | `Wake { mode: Single }`     | its event arrives (`proc_wakeup`)                          |
/// | 6     | Waiting → RunningS      | `CancelBlock`               | it finds a wake-up pending just after blocking and keeps its core (`proc_yield`'s `notif_pending` check) |
/// | 7     | RunningS → RunnableM    | `RequestCores { cores ≥ 1 }`| it asks for cores: _S → _M (`proc_change_to_m`)            |
/// | 8     | RunnableM → RunningM    | `Run`                       | the scheduler starts its cores (`__proc_run_m`)            |
/// | 9     | RunningM → RunnableM    | `Preempt`                   | the kernel takes all its cores (`proc_preempt_all`)        |
/// | 10    | RunningM → Waiting      | `YieldLastCore`             | its last core yields with nothing pending (`proc_yield`)   |
/// | 11    | Waiting → RunnableM     | `Wake { mode: Many }`       | an event arrives for a waiting _M (`proc_wakeup`)          |
/// | 12    | RunningM → RunnableS    | `RequestCores { cores: 0 }` | it asks for zero cores: _M → _S (`__proc_change_to_s`)     |
/// | 13–18 | any live state → Dying  | `Kill`                      | `proc_destroy`: cores revoked, files closing               |
/// | 19    | Dying → DyingAbort      | `Reap`                      | destroy finishes: files closed, system calls aborted (`proc_destroy`) |
///
/// Dying and DyingAbort are absorbing apart from 19; the process is freed when
/// its last reference goes, which is not a state.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcState {
    /// Allocated; the parent may still set it up. Never ran.
    Created = 0x01,
    /// Single-core, ready to run, waiting for a core.
    RunnableS = 0x02,
    /// Single-core, running on a core.
    RunningS = 0x04,
    /// Blocked until an event; holds no core.
    Waiting = 0x08,
    /// Being destroyed: cores revoked, files being closed.
    Dying = 0x10,
    /// Destroyed: files closed, outstanding system calls aborted.
    DyingAbort = 0x20,
    /// Many-core, ready to run, waiting for its cores.
    RunnableM = 0x40,
    /// Many-core, running on all its cores at once.
    RunningM = 0x80,
}

use ProcState::{Created, Dying, DyingAbort, RunnableM, RunnableS, RunningM, RunningS, Waiting};

impl ProcState {
    /// All eight states, in discriminant order.
    pub const ALL: [ProcState; 8] = [Created, RunnableS, RunningS, Waiting, Dying, DyingAbort, RunnableM, RunningM];

    /// The state's bit.
    #[must_use]
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// The state whose bit is `bits`, if exactly one state's.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x01 => Created,
            0x02 => RunnableS,
            0x04 => RunningS,
            0x08 => Waiting,
            0x10 => Dying,
            0x20 => DyingAbort,
            0x40 => RunnableM,
            0x80 => RunningM,
            _ => return None,
        })
    }

    /// The states this one may move to, as a mask of [`bits`](Self::bits):
    /// the table in the type's documentation.
    #[must_use]
    pub const fn allowed_targets(self) -> u8 {
        match self {
            // 1, 13
            Created => RunnableS.bits() | Dying.bits(),
            // 2, 14
            RunnableS => RunningS.bits() | Dying.bits(),
            // 3, 4, 7, 15
            RunningS => RunnableS.bits() | Waiting.bits() | RunnableM.bits() | Dying.bits(),
            // 5, 6, 11, 16
            Waiting => RunnableS.bits() | RunningS.bits() | RunnableM.bits() | Dying.bits(),
            // 19
            Dying => DyingAbort.bits(),
            DyingAbort => 0,
            // 8, 17
            RunnableM => RunningM.bits() | Dying.bits(),
            // 9, 10, 12, 18
            RunningM => RunnableM.bits() | Waiting.bits() | RunnableS.bits() | Dying.bits(),
        }
    }

    /// Whether the table allows moving from `self` to `to`. No state may
    /// "move" to itself.
    #[must_use]
    pub const fn can_transition(self, to: ProcState) -> bool {
        self.allowed_targets() & to.bits() != 0
    }

    /// Checks the move from `self` to `to` against the table and returns `to`.
    ///
    /// # Errors
    /// [`TransitionError`] naming both states if the table has no such edge.
    pub const fn transition(self, to: ProcState) -> Result<ProcState, TransitionError> {
        if self.can_transition(to) { Ok(to) } else { Err(TransitionError { from: self, to, event: None }) }
    }

    /// Not being destroyed: neither Dying nor DyingAbort.
    #[must_use]
    pub const fn is_alive(self) -> bool {
        !matches!(self, Dying | DyingAbort)
    }

    /// In a many-core state (RunnableM or RunningM). A waiting many-core
    /// process is Waiting, which does not say which kind it was: the kernel
    /// keeps that separately, and says so in [`Event::Wake`].
    #[must_use]
    pub const fn is_many_core(self) -> bool {
        matches!(self, RunnableM | RunningM)
    }

    /// Ready to run and waiting for a core (RunnableS or RunnableM).
    #[must_use]
    pub const fn is_runnable(self) -> bool {
        matches!(self, RunnableS | RunnableM)
    }

    /// On at least one core (RunningS or RunningM).
    #[must_use]
    pub const fn is_running(self) -> bool {
        matches!(self, RunningS | RunningM)
    }

    /// The Akaros name, e.g. `RUNNABLE_S`, for logs that line up with the
    /// Akaros documentation.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Created => "CREATED",
            RunnableS => "RUNNABLE_S",
            RunningS => "RUNNING_S",
            Waiting => "WAITING",
            Dying => "DYING",
            DyingAbort => "DYING_ABORT",
            RunnableM => "RUNNABLE_M",
            RunningM => "RUNNING_M",
        }
    }
}

impl fmt::Display for ProcState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl TryFrom<u8> for ProcState {
    type Error = InvalidStateBits;

    fn try_from(bits: u8) -> Result<Self, Self::Error> {
        Self::from_bits(bits).ok_or(InvalidStateBits { bits })
    }
}

impl From<ProcState> for u8 {
    fn from(state: ProcState) -> u8 {
        state.bits()
    }
}

/// A byte that is not exactly one [`ProcState`] bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidStateBits {
    /// The offending byte.
    pub bits: u8,
}

impl fmt::Display for InvalidStateBits {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:#04x} is not a process state", self.bits)
    }
}

impl core::error::Error for InvalidStateBits {}

/// A move the table does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionError {
    /// The state the process was in (and still is).
    pub from: ProcState,
    /// The state the move asked for.
    pub to: ProcState,
    /// The event that asked for it, when it came through [`apply`]; `None` for
    /// a raw [`ProcState::transition`]. An event can be refused even where the
    /// table has the edge (a `Yield` from Waiting), so it is kept for the log.
    pub event: Option<Event>,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "process cannot move from {} to {}", self.from, self.to)?;
        if let Some(event) = self.event {
            write!(formatter, " on {event:?}")?;
        }
        Ok(())
    }
}

impl core::error::Error for TransitionError {}
