//! The atomics `orrery-lifetime` is built on, switched to loom's under `--cfg loom`.
//!
//! Everything else in the crate names `crate::sync::{AtomicU64, Ordering}` and
//! [`first_read`], so the loom models in `tests/loom.rs` explore the very code
//! the kernel runs, not a copy of it.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU64, Ordering};

/// The read that starts a compare-exchange loop: a plain relaxed load.
#[cfg(not(loom))]
pub(crate) fn first_read(word: &AtomicU64) -> u64 {
    word.load(Ordering::Relaxed)
}

/// Under loom the first read is a read-modify-write that changes nothing.
///
/// Loom 0.7's partial-order reduction remembers only the last access to each
/// atomic. When a thread loads a word and then compare-exchanges it, the
/// exchange's "last access" is that thread's own load, so loom never tries
/// running the exchange before another thread's earlier load of the word, and
/// a model whose observer loads while a killer runs `kill` explores a single
/// schedule (tokio-rs/loom#392 is the same gap). An RMW first makes the
/// conflict visible. What is lost is only the exploration of a *stale* first
/// guess, which is harmless here: a stale guess can make a compare-exchange
/// fail and retry, and the errors decided on it without an exchange rest on
/// facts that never revert (a requested kill stays requested; a killed task
/// with no hold never gains one) or on counts the caller itself owns.
#[cfg(loom)]
pub(crate) fn first_read(word: &AtomicU64) -> u64 {
    word.fetch_or(0, Ordering::Relaxed)
}
