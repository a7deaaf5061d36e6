//! Scheduling policies of the Orrery kernel: which runnable thread a CPU runs
//! next, and which CPU new or surplus work should go to.
//!
//! Mechanism below, policy above. The kernel owns threads, stacks, the per-CPU
//! locks, context switching and timers; this crate owns only the decisions, as
//! small safe types behind the [`Policy`] trait. The kernel keeps one policy
//! object per CPU behind that CPU's lock, calls it with interrupts off, and can
//! swap it for another kind at run time ([`new_policy`], [`Policy::drain`]).
//! A preemption or a yield is one call, [`Policy::requeue_and_pick`].
//! A policy never sees a thread, only its [`Entity`]: an id, a weight, and the
//! bookkeeping that must travel with the thread when it moves between CPUs.
//!
//! Everything here is pure logic, `no_std`, free of `unsafe`, deterministic,
//! and tested on the host (`cargo test -p orrery-sched`). No method panics on
//! any sequence of calls the API permits: a stale or foreign [`Token`] is
//! answered with `None`, an allocation failure with a typed error.
//!
//! - [`Fair`]: weighted virtual-runtime fairness (CFS-like): an index-based
//!   red-black tree plus a sorted list for entities that join behind
//!   everybody, O(1) `pick_next` and O(1) `enqueue` behind everybody.
//! - [`RoundRobin`]: FIFO with a fixed slice, an index-based doubly linked list.
//! - [`placement`]: CPU choice for new work and idle pulls on SMT topologies.
//!
//! `docs/sched.md` in the repository describes the contract, the lag scheme
//! and the measured costs.
#![no_std]
#![forbid(unsafe_code)]
// Every public item is part of the kernel's contract with its policies.
#![deny(missing_docs)]

extern crate alloc;

mod any;
mod entity;
mod fair;
pub mod placement;
mod policy;
mod rbtree;
mod round_robin;

pub use any::AnyPolicy;
pub use entity::{DEFAULT_WEIGHT, Entity, ThreadId};
pub use fair::Fair;
pub use policy::{
    Accounting, CapacityError, Config, ConfigError, EnqueueError, EnqueueReason, MAX_SLICE_TSC, Picked, Policy,
    PolicyKind, RequeueError, STEAL_SCAN_LIMIT, Token, WakeupCheck, new_policy,
};
pub use round_robin::RoundRobin;
