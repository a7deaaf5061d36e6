//! Sequential tests of [`Lifetime`]: one test per rule, then a property test
//! that runs random operation sequences against a plain model of the rules.
//! The concurrent guarantees are proven separately by the loom models in
//! `tests/loom.rs`.

extern crate std;

use std::cell::RefCell;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

/// Completes a token the test expected, returning its status.
fn take(cleanup: Option<Cleanup>) -> u64 {
    let cleanup = cleanup.expect("expected the Cleanup token");
    let status = cleanup.status();
    cleanup.complete();
    status
}

fn counts(retains: u32, holds: u32, phase: Phase) -> Counts {
    Counts { retains, holds, phase }
}

#[test]
fn born_alive_with_the_creators_retain() {
    let task = Lifetime::new();
    assert_eq!(task.counts(), counts(1, 0, Phase::Alive));
    assert!(!task.is_killed());
    assert_eq!(task.exit_status(), None);
}

#[test]
fn retains_and_holds_count_up_and_down() {
    let task = Lifetime::new();
    task.retain().unwrap();
    task.hold().unwrap();
    task.hold().unwrap();
    assert_eq!(task.counts(), counts(2, 2, Phase::Alive));
    assert!(task.unhold().unwrap().is_none());
    assert!(task.release().unwrap().is_none());
    assert_eq!(task.counts(), counts(1, 1, Phase::Alive));
}

#[test]
fn a_live_task_with_no_count_is_not_cleaned_up_until_killed() {
    let task = Lifetime::new();
    assert!(task.release().unwrap().is_none());
    assert_eq!(task.counts(), counts(0, 0, Phase::Alive));
    // Not killed, so it can still be retained (say, found in the task table).
    task.retain().unwrap();
    assert!(task.release().unwrap().is_none());
    // The kill itself finds no count left, so the kill cleans up (transition 3).
    match task.kill(4) {
        KillOutcome::First { cleanup } => assert_eq!(take(cleanup), 4),
        KillOutcome::AlreadyKilled => panic!("first kill reported as later"),
    }
    assert_eq!(task.counts(), counts(0, 0, Phase::Dead));
}

#[test]
fn kill_while_held_defers_cleanup_until_unhold() {
    let task = Lifetime::new();
    task.hold().unwrap();
    assert!(task.release().unwrap().is_none());
    let outcome = task.kill(7);
    assert!(outcome.is_first());
    assert!(outcome.into_cleanup().is_none(), "a hold remains");
    assert_eq!(task.counts(), counts(0, 1, Phase::Killed));
    assert_eq!(take(task.unhold().unwrap()), 7);
    assert_eq!(task.counts(), counts(0, 0, Phase::Dead));
}

#[test]
fn kill_while_retained_defers_cleanup_until_release() {
    let task = Lifetime::new();
    assert!(task.kill(3).into_cleanup().is_none());
    assert_eq!(take(task.release().unwrap()), 3);
}

#[test]
fn hold_after_kill_fails() {
    let task = Lifetime::new();
    task.hold().unwrap();
    assert!(task.kill(1).is_first());
    assert_eq!(task.hold(), Err(HoldError::Killed));
    assert_eq!(task.counts(), counts(1, 1, Phase::Killed));
}

#[test]
fn retain_after_kill_succeeds_only_while_held() {
    let task = Lifetime::new();
    task.hold().unwrap();
    assert!(task.kill(1).is_first());
    task.retain().unwrap();
    assert_eq!(task.counts(), counts(2, 1, Phase::Killed));
    assert!(task.unhold().unwrap().is_none());
    assert_eq!(task.retain(), Err(RetainError::Killed));
    assert_eq!(task.counts(), counts(2, 0, Phase::Killed));
}

#[test]
fn the_first_kill_status_is_kept() {
    let task = Lifetime::new();
    assert!(task.kill(10).is_first());
    assert!(matches!(task.kill(20), KillOutcome::AlreadyKilled));
    assert!(task.is_killed());
    assert_eq!(task.exit_status(), Some(10));
    assert_eq!(take(task.release().unwrap()), 10);
    assert_eq!(task.exit_status(), Some(10), "status outlives the counts");
}

#[test]
fn exactly_one_cleanup_and_everything_fails_after() {
    let task = Lifetime::new();
    task.hold().unwrap();
    assert!(task.kill(5).into_cleanup().is_none());
    assert!(task.release().unwrap().is_none());
    assert_eq!(take(task.unhold().unwrap()), 5);
    // DEAD is absorbing: nothing counts, nothing hands out a second token.
    assert_eq!(task.retain(), Err(RetainError::Killed));
    assert_eq!(task.hold(), Err(HoldError::Killed));
    assert_eq!(task.release().unwrap_err(), ReleaseError::Underflow);
    assert_eq!(task.unhold().unwrap_err(), UnholdError::Underflow);
    assert!(matches!(task.kill(6), KillOutcome::AlreadyKilled));
    assert_eq!(task.counts(), counts(0, 0, Phase::Dead));
    assert_eq!(task.exit_status(), Some(5));
}

#[test]
fn underflow_is_an_error_and_changes_nothing() {
    let task = Lifetime::with_counts(0, 0);
    assert_eq!(task.release().unwrap_err(), ReleaseError::Underflow);
    assert_eq!(task.unhold().unwrap_err(), UnholdError::Underflow);
    assert_eq!(task.counts(), counts(0, 0, Phase::Alive));
    // Holds do not borrow from retains, nor the other way round.
    let task = Lifetime::with_counts(1, 0);
    assert_eq!(task.unhold().unwrap_err(), UnholdError::Underflow);
    let task = Lifetime::with_counts(0, 1);
    assert_eq!(task.release().unwrap_err(), ReleaseError::Underflow);
    assert_eq!(task.counts(), counts(0, 1, Phase::Alive));
}

#[test]
fn retain_overflow_is_an_error_not_a_wrap() {
    let task = Lifetime::with_counts(MAX_RETAINS, 0);
    assert_eq!(task.retain(), Err(RetainError::Overflow));
    assert_eq!(task.counts(), counts(MAX_RETAINS, 0, Phase::Alive));
    assert!(task.release().unwrap().is_none());
    task.retain().unwrap();
    assert_eq!(task.counts(), counts(MAX_RETAINS, 0, Phase::Alive));
}

#[test]
fn hold_overflow_is_an_error_not_a_spill_into_the_flags() {
    let task = Lifetime::with_counts(1, MAX_HOLDS);
    assert_eq!(task.hold(), Err(HoldError::Overflow));
    assert_eq!(task.counts(), counts(1, MAX_HOLDS, Phase::Alive));
    assert!(!task.is_killed());
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "dropped without Cleanup::complete")]
fn dropping_an_uncompleted_cleanup_panics_in_debug_builds() {
    let task = Lifetime::new();
    let cleanup = task.kill(1).into_cleanup();
    assert!(cleanup.is_none());
    let cleanup = task.release().unwrap();
    drop(cleanup);
}

/// A reaper that records the statuses it was handed.
#[derive(Default)]
struct Recorder(RefCell<Vec<u64>>);

impl Reaper for Recorder {
    fn reap(&self, cleanup: Cleanup) {
        self.0.borrow_mut().push(cleanup.status());
        cleanup.complete();
    }
}

#[test]
fn held_guard_forwards_the_cleanup_to_the_reaper_on_drop() {
    let task = Lifetime::new();
    let reaper = Recorder::default();
    let held = Held::new(&task, &reaper).unwrap();
    assert!(task.release().unwrap().is_none());
    assert!(task.kill(8).into_cleanup().is_none());
    assert!(reaper.0.borrow().is_empty());
    drop(held);
    assert_eq!(*reaper.0.borrow(), [8]);
    assert_eq!(task.counts().phase, Phase::Dead);
}

#[test]
fn held_guard_unhold_returns_the_token_instead() {
    let task = Lifetime::new();
    let reaper = Recorder::default();
    let held = Held::new(&task, &reaper).unwrap();
    assert!(task.release().unwrap().is_none());
    assert!(task.kill(2).into_cleanup().is_none());
    assert_eq!(take(held.unhold().unwrap()), 2);
    assert!(reaper.0.borrow().is_empty(), "the reaper is bypassed");
}

#[test]
fn held_guard_exit_kills_and_lets_go() {
    let task = Lifetime::new();
    let reaper = Recorder::default();
    let held = Held::new(&task, &reaper).unwrap();
    assert_eq!(held.lifetime().counts(), counts(1, 1, Phase::Alive));
    assert!(held.exit(11));
    assert_eq!(task.counts(), counts(1, 0, Phase::Killed));
    assert!(reaper.0.borrow().is_empty(), "the creator's retain remains");
    // A second exit finds the task killed: its status is not kept.
    let task = Lifetime::new();
    let held = Held::new(&task, &reaper).unwrap();
    assert!(task.kill(1).into_cleanup().is_none());
    assert!(!held.exit(2));
    assert_eq!(task.exit_status(), Some(1));
}

#[test]
fn guards_cannot_be_made_on_a_killed_task() {
    let task = Lifetime::new();
    let reaper = Recorder::default();
    assert!(task.kill(1).into_cleanup().is_none());
    assert_eq!(Held::new(&task, &reaper).unwrap_err(), HoldError::Killed);
    assert_eq!(Retained::new(&task, &reaper).unwrap_err(), RetainError::Killed);
    assert_eq!(task.counts(), counts(1, 0, Phase::Killed));
}

#[test]
fn retained_guard_adopts_the_creators_retain_and_reaps_on_drop() {
    let task = Lifetime::new();
    let reaper = |cleanup: Cleanup| {
        assert_eq!(cleanup.status(), 12);
        cleanup.complete();
    };
    let creator = Retained::adopt(&task, &reaper);
    let scheduler = Retained::new(&task, &reaper).unwrap();
    assert_eq!(task.counts(), counts(2, 0, Phase::Alive));
    assert!(task.kill(12).into_cleanup().is_none());
    assert!(scheduler.release().unwrap().is_none());
    drop(creator);
    assert_eq!(task.counts(), counts(0, 0, Phase::Dead));
}

/// One call on the lifetime word.
#[derive(Clone, Copy, Debug)]
enum Operation {
    Retain,
    Release,
    Hold,
    Unhold,
    Kill(u64),
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        3 => Just(Operation::Retain),
        3 => Just(Operation::Release),
        3 => Just(Operation::Hold),
        3 => Just(Operation::Unhold),
        1 => any::<u64>().prop_map(Operation::Kill),
    ]
}

/// Counts that are either small or within a few steps of a limit, so random
/// sequences reach underflow and overflow alike.
fn count(limit: u32) -> impl Strategy<Value = u32> {
    prop_oneof![0..4_u32, (limit - 3)..=limit]
}

/// The rules, written as plainly as possible.
#[derive(Debug)]
struct Model {
    retains: u32,
    holds: u32,
    status: Option<u64>,
    dead: bool,
}

/// What one operation should return. `Some(cleanup)` means "cleans up".
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Retain(Result<(), RetainError>),
    Release(Result<bool, ReleaseError>),
    Hold(Result<(), HoldError>),
    Unhold(Result<bool, UnholdError>),
    Kill { first: bool, cleans_up: bool },
}

impl Model {
    fn killed(&self) -> bool {
        self.status.is_some()
    }

    /// After a decrement or a kill: does the task die now?
    fn settle(&mut self) -> bool {
        if self.killed() && !self.dead && self.retains == 0 && self.holds == 0 {
            self.dead = true;
            true
        } else {
            false
        }
    }

    fn apply(&mut self, operation: Operation) -> Expected {
        match operation {
            Operation::Retain => Expected::Retain(if self.killed() && self.holds == 0 {
                Err(RetainError::Killed)
            } else if self.retains == MAX_RETAINS {
                Err(RetainError::Overflow)
            } else {
                self.retains += 1;
                Ok(())
            }),
            Operation::Release => Expected::Release(if self.retains == 0 {
                Err(ReleaseError::Underflow)
            } else {
                self.retains -= 1;
                Ok(self.settle())
            }),
            Operation::Hold => Expected::Hold(if self.killed() {
                Err(HoldError::Killed)
            } else if self.holds == MAX_HOLDS {
                Err(HoldError::Overflow)
            } else {
                self.holds += 1;
                Ok(())
            }),
            Operation::Unhold => Expected::Unhold(if self.holds == 0 {
                Err(UnholdError::Underflow)
            } else {
                self.holds -= 1;
                Ok(self.settle())
            }),
            Operation::Kill(status) => {
                if self.killed() {
                    Expected::Kill { first: false, cleans_up: false }
                } else {
                    self.status = Some(status);
                    Expected::Kill { first: true, cleans_up: self.settle() }
                }
            }
        }
    }

    fn phase(&self) -> Phase {
        match (self.killed(), self.dead) {
            (_, true) => Phase::Dead,
            (true, false) => Phase::Killed,
            (false, _) => Phase::Alive,
        }
    }
}

/// Runs one operation on the real word, completing any token it returns and
/// reporting its status in `cleanups`.
fn run(task: &Lifetime, operation: Operation, cleanups: &mut Vec<u64>) -> Expected {
    let mut note = |cleanup: Option<Cleanup>| match cleanup {
        Some(cleanup) => {
            cleanups.push(cleanup.status());
            cleanup.complete();
            true
        }
        None => false,
    };
    match operation {
        Operation::Retain => Expected::Retain(task.retain()),
        Operation::Release => Expected::Release(task.release().map(&mut note)),
        Operation::Hold => Expected::Hold(task.hold()),
        Operation::Unhold => Expected::Unhold(task.unhold().map(&mut note)),
        Operation::Kill(status) => {
            let outcome = task.kill(status);
            let first = outcome.is_first();
            Expected::Kill { first, cleans_up: note(outcome.into_cleanup()) }
        }
    }
}

proptest! {
    #[test]
    fn random_sequences_follow_the_model(
        retains in count(MAX_RETAINS),
        holds in count(MAX_HOLDS),
        operations in prop::collection::vec(operation(), 0..64),
    ) {
        let task = Lifetime::with_counts(retains, holds);
        let mut model = Model { retains, holds, status: None, dead: false };
        let mut cleanups = Vec::new();
        for operation in operations {
            let expected = model.apply(operation);
            let actual = run(&task, operation, &mut cleanups);
            prop_assert_eq!(&actual, &expected, "after {:?}", operation);
            prop_assert_eq!(
                task.counts(),
                Counts { retains: model.retains, holds: model.holds, phase: model.phase() }
            );
            prop_assert_eq!(task.exit_status(), model.status);
            prop_assert_eq!(task.is_killed(), model.killed());
        }
        // Exactly one token, carrying the first status, iff the task died.
        let expected_cleanups: Vec<u64> = model.status.filter(|_| model.dead).into_iter().collect();
        prop_assert_eq!(cleanups, expected_cleanups);
    }
}
