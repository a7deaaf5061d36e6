//! Tests of the process state machine: the table checked exhaustively against
//! an independent list of edges, the event layer checked case by case, random
//! event sequences checked for staying inside the table, and the atomic word
//! raced from real threads.

extern crate std;

use std::sync::Barrier;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use ProcState::*;

/// The 19 edges of the table in `ProcState`'s documentation, written out
/// independently of `allowed_targets`.
const EDGES: [(ProcState, ProcState); 19] = [
    (Created, RunnableS),  // 1
    (RunnableS, RunningS), // 2
    (RunningS, RunnableS), // 3
    (RunningS, Waiting),   // 4
    (Waiting, RunnableS),  // 5
    (Waiting, RunningS),   // 6
    (RunningS, RunnableM), // 7
    (RunnableM, RunningM), // 8
    (RunningM, RunnableM), // 9
    (RunningM, Waiting),   // 10
    (Waiting, RunnableM),  // 11
    (RunningM, RunnableS), // 12
    (Created, Dying),      // 13
    (RunnableS, Dying),    // 14
    (RunningS, Dying),     // 15
    (Waiting, Dying),      // 16
    (RunnableM, Dying),    // 17
    (RunningM, Dying),     // 18
    (Dying, DyingAbort),   // 19
];

#[test]
fn every_pair_of_states_matches_the_documented_table() {
    let mut checked = 0;
    for from in ProcState::ALL {
        for to in ProcState::ALL {
            let expected = EDGES.contains(&(from, to));
            assert_eq!(from.can_transition(to), expected, "{from} -> {to}");
            match from.transition(to) {
                Ok(state) => {
                    assert!(expected, "{from} -> {to} allowed but not in the table");
                    assert_eq!(state, to);
                }
                Err(error) => {
                    assert!(!expected, "{from} -> {to} in the table but refused");
                    assert_eq!(error, TransitionError { from, to, event: None });
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 64);
}

#[test]
fn edges_where_the_documents_differ_follow_akaros_code() {
    // Akaros's proc_change_to_m refuses a process that is not running.
    assert!(!RunnableS.can_transition(RunnableM));
    // A runnable many-core process has no core to yield and cannot block.
    assert!(!RunnableM.can_transition(Waiting));
    // proc_yield's notif_pending check: blocked, then keeps its core.
    assert!(Waiting.can_transition(RunningS));
}

#[test]
fn dying_states_are_absorbing_except_dying_to_dying_abort() {
    for to in ProcState::ALL {
        assert_eq!(Dying.can_transition(to), to == DyingAbort, "Dying -> {to}");
        assert!(!DyingAbort.can_transition(to), "DyingAbort -> {to}");
    }
}

#[test]
fn states_are_single_bits_and_round_trip() {
    let mut seen = 0_u8;
    for state in ProcState::ALL {
        assert_eq!(state.bits().count_ones(), 1);
        assert_eq!(seen & state.bits(), 0, "{state} shares a bit");
        seen |= state.bits();
        assert_eq!(ProcState::from_bits(state.bits()), Some(state));
        assert_eq!(ProcState::try_from(state.bits()), Ok(state));
        assert_eq!(u8::from(state), state.bits());
    }
    assert_eq!(seen, 0xFF);
    assert_eq!(ProcState::from_bits(0), None);
    assert_eq!(ProcState::try_from(0x03), Err(InvalidStateBits { bits: 0x03 }));
}

#[test]
fn predicates_match_their_definitions() {
    let alive: Vec<_> = ProcState::ALL.into_iter().filter(|s| s.is_alive()).collect();
    assert_eq!(alive, [Created, RunnableS, RunningS, Waiting, RunnableM, RunningM]);
    let many: Vec<_> = ProcState::ALL.into_iter().filter(|s| s.is_many_core()).collect();
    assert_eq!(many, [RunnableM, RunningM]);
    let runnable: Vec<_> = ProcState::ALL.into_iter().filter(|s| s.is_runnable()).collect();
    assert_eq!(runnable, [RunnableS, RunnableM]);
    let running: Vec<_> = ProcState::ALL.into_iter().filter(|s| s.is_running()).collect();
    assert_eq!(running, [RunningS, RunningM]);
}

#[test]
fn errors_name_the_states_and_the_event() {
    use core::fmt::Write;
    let mut text = std::string::String::new();
    write!(text, "{}", Created.transition(RunningM).unwrap_err()).unwrap();
    assert_eq!(text, "process cannot move from CREATED to RUNNING_M");
    text.clear();
    write!(text, "{}", apply(Waiting, Event::Yield).unwrap_err()).unwrap();
    assert_eq!(text, "process cannot move from WAITING to RUNNABLE_S on Yield");
}

/// Every event the tests try, with the parameters that change its meaning.
const EVENTS: [Event; 14] = [
    Event::Start,
    Event::Run,
    Event::Yield,
    Event::Block,
    Event::CancelBlock,
    Event::Wake { mode: CoreMode::Single },
    Event::Wake { mode: CoreMode::Many },
    Event::RequestCores { cores: 0 },
    Event::RequestCores { cores: 1 },
    Event::RequestCores { cores: u32::MAX },
    Event::YieldLastCore,
    Event::Preempt,
    Event::Kill,
    Event::Reap,
];

/// The (state, event) pairs `apply` accepts, and where each leads. Everything
/// else must be refused.
fn expected_apply(state: ProcState, event: Event) -> Option<ProcState> {
    let single = CoreMode::Single;
    let many = CoreMode::Many;
    Some(match (state, event) {
        (Created, Event::Start) => RunnableS,
        (RunnableS, Event::Run) => RunningS,
        (RunningS, Event::Yield) => RunnableS,
        (RunningS, Event::Block) => Waiting,
        (Waiting, Event::Wake { mode }) if mode == single => RunnableS,
        (Waiting, Event::CancelBlock) => RunningS,
        (RunningS, Event::RequestCores { cores }) if cores > 0 => RunnableM,
        (RunnableM, Event::Run) => RunningM,
        (RunningM, Event::Preempt) => RunnableM,
        (RunningM, Event::YieldLastCore) => Waiting,
        (Waiting, Event::Wake { mode }) if mode == many => RunnableM,
        (RunningM, Event::RequestCores { cores: 0 }) => RunnableS,
        (RunningM, Event::RequestCores { .. }) => RunningM,
        (RunningM, Event::Yield) => RunningM,
        (state, Event::Kill) if state.is_alive() => Dying,
        (Dying, Event::Reap) => DyingAbort,
        _ => return None,
    })
}

#[test]
fn apply_matches_the_event_table_case_by_case() {
    let mut accepted = 0;
    for state in ProcState::ALL {
        for event in EVENTS {
            match (apply(state, event), expected_apply(state, event)) {
                (Ok(to), Some(expected)) => {
                    assert_eq!(to, expected, "{state} on {event:?}");
                    accepted += 1;
                }
                (Err(error), None) => {
                    assert_eq!(error.from, state);
                    assert_eq!(error.event, Some(event));
                }
                (actual, expected) => {
                    panic!("{state} on {event:?}: got {actual:?}, expected {expected:?}")
                }
            }
        }
    }
    // 13 moves along edges 1–12 (edge 7 tried with 1 and u32::MAX cores),
    // 3 RunningM self-loops (Yield, RequestCores with 1 and u32::MAX),
    // 6 kills (13–18) and 1 reap (19).
    assert_eq!(accepted, 23);
}

#[test]
fn every_move_apply_makes_is_an_edge_or_a_documented_self_loop() {
    for state in ProcState::ALL {
        for event in EVENTS {
            if let Ok(to) = apply(state, event) {
                let self_loop = state == RunningM && to == RunningM;
                assert!(EDGES.contains(&(state, to)) || self_loop, "{state} on {event:?} -> {to}");
            }
        }
    }
}

#[test]
fn every_edge_has_an_event() {
    for (from, to) in EDGES {
        assert!(EVENTS.iter().any(|&event| apply(from, event) == Ok(to)), "no event makes {from} -> {to}");
    }
}

#[test]
fn a_process_lives_through_both_modes_and_dies() {
    let events = [
        Event::Start,
        Event::Run,
        Event::Block,
        Event::Wake { mode: CoreMode::Single },
        Event::Run,
        Event::RequestCores { cores: 4 },
        Event::Run,
        Event::Yield,
        Event::Preempt,
        Event::Run,
        Event::YieldLastCore,
        Event::Wake { mode: CoreMode::Many },
        Event::Run,
        Event::RequestCores { cores: 0 },
        Event::Kill,
        Event::Reap,
    ];
    let mut state = Created;
    let mut path = Vec::new();
    for event in events {
        state = apply(state, event).unwrap();
        path.push(state);
    }
    assert_eq!(
        path,
        [
            RunnableS, RunningS, Waiting, RunnableS, RunningS, RunnableM, RunningM, RunningM, RunnableM, RunningM,
            Waiting, RunnableM, RunningM, RunnableS, Dying, DyingAbort,
        ]
    );
}

#[test]
fn atomic_try_transition_moves_refuses_and_reports_races() {
    let word = AtomicProcState::new(Created);
    assert_eq!(word.try_transition(Created, RunnableS), Ok(()));
    assert_eq!(word.load(), RunnableS);
    assert!(word.is(RunnableS) && ProcState::ALL.iter().filter(|&&state| word.is(state)).count() == 1);
    assert!(word.is_runnable() && word.is_alive() && !word.is_many_core());
    assert_eq!(
        word.try_transition(RunnableS, RunnableM),
        Err(TryTransitionError::Forbidden(TransitionError { from: RunnableS, to: RunnableM, event: None }))
    );
    assert_eq!(
        word.try_transition(Waiting, RunnableS),
        Err(TryTransitionError::Raced { expected: Waiting, actual: RunnableS, to: RunnableS })
    );
    assert_eq!(word.load(), RunnableS, "refused moves change nothing");
}

#[test]
fn atomic_apply_reports_the_move() {
    let word = AtomicProcState::new(RunnableM);
    assert_eq!(word.apply(Event::Run), Ok(Transition { from: RunnableM, to: RunningM }));
    assert!(word.is_many_core());
    assert_eq!(word.apply(Event::Reap).unwrap_err().event, Some(Event::Reap));
    assert_eq!(word.load(), RunningM);
}

#[test]
fn racing_waker_and_canceller_exactly_one_wins() {
    for _ in 0..200 {
        let word = AtomicProcState::new(Waiting);
        let barrier = Barrier::new(2);
        let (woke, cancelled) = std::thread::scope(|scope| {
            let waker = scope.spawn(|| {
                barrier.wait();
                word.try_transition(Waiting, RunnableS)
            });
            let canceller = scope.spawn(|| {
                barrier.wait();
                word.apply(Event::CancelBlock)
            });
            (waker.join().unwrap(), canceller.join().unwrap())
        });
        match (woke, cancelled) {
            (Ok(()), Err(error)) => {
                assert_eq!(word.load(), RunnableS);
                assert_eq!(error.from, RunnableS);
            }
            (Err(TryTransitionError::Raced { actual, .. }), Ok(_)) => {
                assert_eq!(actual, RunningS);
                assert_eq!(word.load(), RunningS);
            }
            other => panic!("both or neither won: {other:?}"),
        }
    }
}

#[test]
fn racing_kills_exactly_one_lands() {
    let word = AtomicProcState::new(RunningM);
    let landed = std::thread::scope(|scope| {
        let killers: Vec<_> = (0..4).map(|_| scope.spawn(|| word.apply(Event::Kill).is_ok())).collect();
        killers.into_iter().map(|killer| killer.join().unwrap()).filter(|landed| *landed).count()
    });
    assert_eq!(landed, 1);
    assert_eq!(word.load(), Dying);
}

fn event() -> impl Strategy<Value = Event> {
    let mode = prop_oneof![Just(CoreMode::Single), Just(CoreMode::Many)];
    let cores = prop_oneof![Just(0_u32), 1..8_u32, Just(u32::MAX)];
    prop_oneof![
        Just(Event::Start),
        Just(Event::Run),
        Just(Event::Yield),
        Just(Event::Block),
        Just(Event::CancelBlock),
        mode.prop_map(|mode| Event::Wake { mode }),
        cores.prop_map(|cores| Event::RequestCores { cores }),
        Just(Event::YieldLastCore),
        Just(Event::Preempt),
        Just(Event::Kill),
        Just(Event::Reap),
    ]
}

fn state() -> impl Strategy<Value = ProcState> {
    prop::sample::select(ProcState::ALL.to_vec())
}

proptest! {
    #[test]
    fn random_event_sequences_stay_inside_the_table(
        start in state(),
        events in prop::collection::vec(event(), 0..100),
    ) {
        let mut state = start;
        let word = AtomicProcState::new(start);
        for event in events {
            let before = state;
            match apply(state, event) {
                Ok(to) => {
                    prop_assert!(
                        state.can_transition(to) || (state == RunningM && to == RunningM),
                        "{} on {:?} -> {}", state, event, to
                    );
                    state = to;
                }
                Err(error) => {
                    prop_assert_eq!(error.from, state);
                    prop_assert_eq!(error.event, Some(event));
                }
            }
            // Dying moves only to DyingAbort, and DyingAbort never moves.
            if before == Dying {
                prop_assert!(state == Dying || (state == DyingAbort && event == Event::Reap));
            }
            if before == DyingAbort {
                prop_assert_eq!(state, DyingAbort);
            }
            // The atomic word, applied alone, agrees with the pure function.
            let moved = word.apply(event);
            prop_assert_eq!(word.load(), state);
            prop_assert_eq!(moved.is_ok(), apply(before, event).is_ok());
        }
    }

    #[test]
    fn random_raw_transitions_never_leave_the_table(
        start in state(),
        targets in prop::collection::vec(state(), 0..100),
    ) {
        let mut state = start;
        for to in targets {
            match state.transition(to) {
                Ok(next) => {
                    prop_assert!(EDGES.contains(&(state, next)));
                    prop_assert!(state.is_alive() || (state == Dying && next == DyingAbort));
                    state = next;
                }
                Err(error) => prop_assert_eq!(error, TransitionError { from: state, to, event: None }),
            }
        }
    }
}
