//! The atomics the shared slots are made of, switched to loom's under `--cfg loom`.
//!
//! Everything that touches shared memory names `crate::sync::{AtomicU32,
//! AtomicU64, Ordering}` and [`peek`], so the loom models in `tests/loom.rs`
//! explore the very code clients and servers run, not a copy of it. The
//! mailbox's local scan cursors are not shared memory and use `core`'s atomics
//! directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The read that precedes a compare-exchange on a slot's control word: a
/// plain load.
#[cfg(not(loom))]
pub(crate) fn peek(word: &AtomicU64, ordering: Ordering) -> u64 {
    word.load(ordering)
}

/// Under loom the read is a read-modify-write that changes nothing.
///
/// Loom 0.7's partial-order reduction remembers only the last access to each
/// atomic: after a thread loads the control word and then compare-exchanges
/// it, loom does not try another thread's operation between the two unless
/// the first access conflicts (the gap `orrery-lifetime`'s `src/sync.rs`
/// describes, tokio-rs/loom#392). Making the read an RMW makes the conflict
/// visible, so "the client cancels between the server's scan and its claim"
/// is explored. What is lost is only a stale first read, which here can only
/// make the following compare-exchange fail, a path the models reach anyway.
#[cfg(loom)]
pub(crate) fn peek(word: &AtomicU64, ordering: Ordering) -> u64 {
    word.fetch_or(0, ordering)
}
