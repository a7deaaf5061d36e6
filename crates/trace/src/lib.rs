//! The scheduling trace: what each CPU's scheduler did, recorded cheaply in the
//! kernel and read back on the host.
//!
//! Three layers, each usable alone:
//!
//! 1. **Record.** Each CPU owns a [`Ring`] of fixed-size [`Event`]s (32 bytes,
//!    `#[repr(C)]`). The scheduler pushes to its own CPU's ring with
//!    interrupts off, so a push is a plain store through `&mut`: no atomics, no
//!    locks, no allocation. A full ring overwrites its oldest event and counts
//!    it in [`Ring::dropped`].
//! 2. **Carry.** [`encode_line`] turns an event into one short text line the
//!    kernel writes to the serial port; [`decode_line`] reads it back on the
//!    host, rejecting garbage (other log lines, serial noise) with a typed
//!    [`DecodeError`] instead of panicking.
//! 3. **Show** (host only, feature `std`). `chrome::write_json` turns
//!    decoded events into Chrome trace-event JSON, which Perfetto and
//!    `chrome://tracing` open: one track per CPU, one slice per stretch a
//!    thread ran, and a marker per wake-up, block, migration and preemption.
//!
//! ```
//! use orrery_trace::{Event, EventKind, Ring, decode_line, encode_line};
//!
//! let mut ring = Ring::<2>::new();
//! ring.push(Event::new(0x100, EventKind::Switch, 0, 1, 2));
//! ring.push(Event::new(0x180, EventKind::Wake, 0, 3, 1));
//! ring.push(Event::new(0x200, EventKind::Switch, 0, 2, 3));
//! assert_eq!(ring.dropped(), 1);
//!
//! let mut line = String::new();
//! let newest = ring.iter().last().unwrap();
//! encode_line(newest, &mut line).unwrap();
//! assert_eq!(line, "T 0 200 switch 2 3");
//! assert_eq!(decode_line(&line), Ok(*newest));
//! ```
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod chrome;
mod line;
mod ring;

#[cfg(test)]
mod tests;

use core::fmt;

pub use line::{DecodeError, Field, MAX_LINE_LEN, decode_line, encode_line};
pub use ring::{Iter, Ring};

/// One scheduling event, as stored in a [`Ring`].
///
/// The layout is fixed (`#[repr(C)]`, 32 bytes: `tsc` at 0, `kind` at 8, `cpu`
/// at 10, `a` at 16, `b` at 24) so a debugger or a raw memory dump can read
/// rings too. What `a` and `b` hold depends on [`kind`](Self::kind); see
/// [`EventKind`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// Time stamp counter of the recording CPU when the event happened.
    pub tsc: u64,
    /// What happened.
    pub kind: EventKind,
    /// The CPU that recorded the event.
    pub cpu: u16,
    /// First operand: usually a thread id (for a switch, the previous thread).
    pub a: u64,
    /// Second operand: for a switch the next thread, for a wake-up or a
    /// migration the target CPU.
    pub b: u64,
}

const _: () = assert!(core::mem::size_of::<Event>() == 32);
const _: () = assert!(core::mem::align_of::<Event>() == 8);

impl Event {
    /// An event of `kind` on `cpu` at `tsc` with operands `a` and `b`.
    #[must_use]
    pub const fn new(tsc: u64, kind: EventKind, cpu: u16, a: u64, b: u64) -> Self {
        Self { tsc, kind, cpu, a, b }
    }

    /// The value a [`Ring`]'s unused slots hold. Never returned by
    /// [`Ring::iter`].
    const UNUSED: Self = Self::new(0, EventKind::Custom, 0, 0, 0);
}

/// What an [`Event`] records, and what its operands mean.
///
/// Discriminants start at 1 so a zeroed record is never a valid event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The CPU switched threads. `a`: the thread that stopped, `b`: the thread
    /// that starts.
    Switch = 1,
    /// A thread became runnable. `a`: the thread, `b`: the CPU whose run queue
    /// it joined.
    Wake = 2,
    /// The running thread blocked. `a`: the thread, `b`: what it waits on
    /// (kernel-defined; 0 if nothing in particular).
    Block = 3,
    /// A thread moved to another CPU's run queue. `a`: the thread, `b`: the
    /// destination CPU.
    Migrate = 4,
    /// The running thread was preempted. `a`: the thread, `b`: why
    /// (kernel-defined; 0 for the time slice ending).
    Preempt = 5,
    /// A thread was created. `a`: the new thread, `b`: the thread that created
    /// it (0 if none).
    Spawn = 6,
    /// A thread exited. `a`: the thread, `b`: its exit status.
    Exit = 7,
    /// The CPU went idle. `a`: the thread that ran last (0 if none), `b`: 0.
    Idle = 8,
    /// Anything else, for ad-hoc tracing. `a`, `b`: free.
    Custom = 9,
}

impl EventKind {
    /// Every kind, in discriminant order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Switch,
        EventKind::Wake,
        EventKind::Block,
        EventKind::Migrate,
        EventKind::Preempt,
        EventKind::Spawn,
        EventKind::Exit,
        EventKind::Idle,
        EventKind::Custom,
    ];

    /// The lowercase word used in the line encoding, e.g. `switch`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Switch => "switch",
            EventKind::Wake => "wake",
            EventKind::Block => "block",
            EventKind::Migrate => "migrate",
            EventKind::Preempt => "preempt",
            EventKind::Spawn => "spawn",
            EventKind::Exit => "exit",
            EventKind::Idle => "idle",
            EventKind::Custom => "custom",
        }
    }

    /// The kind whose [`name`](Self::name) is `name`, exactly.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The kind whose discriminant is `byte`.
    #[must_use]
    pub const fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => EventKind::Switch,
            2 => EventKind::Wake,
            3 => EventKind::Block,
            4 => EventKind::Migrate,
            5 => EventKind::Preempt,
            6 => EventKind::Spawn,
            7 => EventKind::Exit,
            8 => EventKind::Idle,
            9 => EventKind::Custom,
            _ => return None,
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}
