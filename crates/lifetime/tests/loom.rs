//! Loom models of `orrery-lifetime`: every interleaving (and every weak-memory
//! outcome loom models) of 2–3 threads racing kill, release, unhold and hold.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p orrery-lifetime --release --test loom`.
//! Under that cfg the crate's atomics are loom's (`src/sync.rs`), so these
//! models check the code the kernel runs.
//!
//! Each model also counts, outside loom, which outcomes its executions reached
//! and asserts afterwards that every interesting one was reached at least once:
//! a model that loom explored too narrowly (see `src/sync.rs` for the gap that
//! once made these pass after a single schedule) fails instead of passing.
#![cfg(loom)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};

use loom::sync::Arc;
use loom::thread;
use orrery_lifetime::{Cleanup, HoldError, KillOutcome, Lifetime, Phase};

/// Completes a token, if any, and returns its status.
fn reap(cleanup: Option<Cleanup>) -> Option<u64> {
    cleanup.map(|cleanup| {
        let status = cleanup.status();
        cleanup.complete();
        status
    })
}

/// Kill, release and unhold race to drop the last count: exactly one of them
/// gets the token, and it carries the kill's status. Each of the three wins in
/// some execution.
#[test]
fn exactly_one_cleanup_across_kill_release_and_unhold() {
    static WINNERS: Mutex<[usize; 3]> = Mutex::new([0; 3]);
    loom::model(|| {
        let task = Arc::new(Lifetime::new());
        task.hold().unwrap();
        let killer = {
            let task = Arc::clone(&task);
            thread::spawn(move || reap(task.kill(7).into_cleanup()))
        };
        let releaser = {
            let task = Arc::clone(&task);
            thread::spawn(move || reap(task.release().unwrap()))
        };
        let unholder = reap(task.unhold().unwrap());
        let tokens = [killer.join().unwrap(), releaser.join().unwrap(), unholder];
        let handed_out: Vec<u64> = tokens.iter().flatten().copied().collect();
        assert_eq!(handed_out, [7]);
        assert_eq!(task.counts().phase, Phase::Dead);
        let winner = tokens.iter().position(Option::is_some).unwrap();
        WINNERS.lock().unwrap()[winner] += 1;
    });
    let winners = *WINNERS.lock().unwrap();
    assert!(winners.iter().all(|&count| count > 0), "kill, release and unhold should each win somewhere: {winners:?}");
}

/// Two kills and the last release race: one token, carrying the status of the
/// kill that reported itself first. Both kills win somewhere, and the token
/// goes to a kill in some executions and to the release in others.
#[test]
fn exactly_one_cleanup_with_two_killers() {
    static FIRST_STATUS: Mutex<[usize; 2]> = Mutex::new([0; 2]);
    static TOKEN_TO_RELEASE: AtomicUsize = AtomicUsize::new(0);
    static TOKEN_TO_KILL: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let task = Arc::new(Lifetime::new());
        let killers: Vec<_> = [1, 2]
            .into_iter()
            .map(|status| {
                let task = Arc::clone(&task);
                thread::spawn(move || {
                    let outcome = task.kill(status);
                    let first = outcome.is_first();
                    (first, reap(outcome.into_cleanup()))
                })
            })
            .collect();
        let released = reap(task.release().unwrap());
        let results: Vec<(bool, Option<u64>)> = killers.into_iter().map(|killer| killer.join().unwrap()).collect();
        let winners: Vec<u64> =
            [1, 2].into_iter().zip(&results).filter(|(_, (first, _))| *first).map(|(status, _)| status).collect();
        assert_eq!(winners.len(), 1, "exactly one kill is first");
        let handed_out: Vec<u64> = results.iter().filter_map(|(_, token)| *token).chain(released).collect();
        assert_eq!(handed_out, winners);
        FIRST_STATUS.lock().unwrap()[usize::from(winners[0] == 2)] += 1;
        let counter = if released.is_some() { &TOKEN_TO_RELEASE } else { &TOKEN_TO_KILL };
        counter.fetch_add(1, StdOrdering::Relaxed);
    });
    let first_status = *FIRST_STATUS.lock().unwrap();
    assert!(first_status.iter().all(|&count| count > 0), "{first_status:?}");
    assert!(TOKEN_TO_RELEASE.load(StdOrdering::Relaxed) > 0);
    assert!(TOKEN_TO_KILL.load(StdOrdering::Relaxed) > 0);
}

/// Once a CPU sees the task killed, its holds fail; a hold that succeeded
/// before the kill keeps clean-up away until it is given back.
#[test]
fn no_hold_succeeds_after_the_kill_is_observed() {
    static OBSERVED_KILLED: AtomicUsize = AtomicUsize::new(0);
    static HELD_BEFORE_KILL: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let task = Arc::new(Lifetime::new());
        let killer = {
            let task = Arc::clone(&task);
            thread::spawn(move || {
                // The creator's retain remains, so the kill never cleans up.
                assert!(task.kill(3).into_cleanup().is_none());
            })
        };
        let observed = task.is_killed();
        let held = task.hold();
        if observed {
            assert_eq!(held, Err(HoldError::Killed));
            OBSERVED_KILLED.fetch_add(1, StdOrdering::Relaxed);
        }
        if held.is_ok() {
            HELD_BEFORE_KILL.fetch_add(1, StdOrdering::Relaxed);
            assert!(reap(task.unhold().unwrap()).is_none());
        }
        killer.join().unwrap();
        assert_eq!(task.hold(), Err(HoldError::Killed));
        assert_eq!(reap(task.release().unwrap()), Some(3));
    });
    assert!(OBSERVED_KILLED.load(StdOrdering::Relaxed) > 0, "never saw the kill first");
    assert!(HELD_BEFORE_KILL.load(StdOrdering::Relaxed) > 0, "never held first");
}

/// A kill that lost the race returns only once holds fail, even if the
/// winning kill has not yet published its status.
#[test]
fn a_later_kill_returns_only_when_holds_already_fail() {
    static LOST_BEFORE_PUBLISH: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let task = Arc::new(Lifetime::new());
        let other = {
            let task = Arc::clone(&task);
            thread::spawn(move || task.kill(1).is_first())
        };
        let this_first = match task.kill(2) {
            KillOutcome::First { cleanup } => {
                assert!(cleanup.is_none());
                true
            }
            KillOutcome::AlreadyKilled => false,
        };
        // The winner may still be between its claim and its publish.
        if !this_first && !task.is_killed() {
            LOST_BEFORE_PUBLISH.fetch_add(1, StdOrdering::Relaxed);
        }
        // Whichever won, this thread's kill has returned: no hold now.
        assert_eq!(task.hold(), Err(HoldError::Killed));
        let other_first = other.join().unwrap();
        assert!(other_first ^ this_first);
        assert!(reap(task.release().unwrap()).is_some());
    });
    assert!(
        LOST_BEFORE_PUBLISH.load(StdOrdering::Relaxed) > 0,
        "never returned AlreadyKilled while the winner was mid-kill"
    );
}

/// Any status read after the kill is observed is the first kill's status.
#[test]
fn the_status_read_after_the_kill_is_observed_is_the_first() {
    static SEEN_STATUSES: Mutex<[usize; 2]> = Mutex::new([0; 2]);
    loom::model(|| {
        let task = Arc::new(Lifetime::new());
        let killers: Vec<_> = [10, 20]
            .into_iter()
            .map(|status| {
                let task = Arc::clone(&task);
                thread::spawn(move || task.kill(status).is_first())
            })
            .collect();
        let killed = task.is_killed();
        let seen = task.exit_status();
        if killed {
            assert!(seen.is_some(), "killed implies a status");
        }
        let firsts: Vec<bool> = killers.into_iter().map(|killer| killer.join().unwrap()).collect();
        assert_eq!(firsts.iter().filter(|first| **first).count(), 1);
        let winner = if firsts[0] { 10 } else { 20 };
        if let Some(status) = seen {
            assert_eq!(status, winner);
            SEEN_STATUSES.lock().unwrap()[usize::from(status == 20)] += 1;
        }
        assert_eq!(task.exit_status(), Some(winner));
        assert_eq!(reap(task.release().unwrap()), Some(winner));
    });
    let seen_statuses = *SEEN_STATUSES.lock().unwrap();
    assert!(
        seen_statuses.iter().all(|&count| count > 0),
        "each status should be observed mid-race somewhere: {seen_statuses:?}"
    );
}
