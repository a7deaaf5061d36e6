//! Performs steady-state schedule steps at a given queue length, for counting
//! instructions per operation under callgrind.
//!
//! ```text
//! pick_cost <fair|round-robin|btreeset> <queue-length> <steps> [equal|mixed] [preempted|yielded] [separate|combined]
//! ```
//!
//! `queue-length` entities take turns; during a step one of them runs and the
//! others are queued. A `separate` step (the default) is what a kernel does
//! with the basic calls: `pick_next`, then `time_slice` and `should_preempt`
//! for the picked entity, then `charge` and `enqueue` (for the given reason,
//! `preempted` by default) when it stops. A `combined` step makes one
//! [`Policy::requeue_and_pick`] call, which charges, enqueues, picks and
//! gives the picked entity's time slice, after `should_preempt`.
//!
//! The queue is filled and then put through one warm-up step per entity (at
//! most 100,000), so the measured steps see a settled tree. Only the
//! functions `measure` and `measure_set` do the measured steps, each
//! operation through its own non-inlined function, so that
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='pick_cost::measure*' \
//!     --callgrind-out-file=callgrind.out target/release/examples/pick_cost fair 100000 100000
//! callgrind_annotate --inclusive=yes callgrind.out | grep pick_cost::
//! ```
//!
//! gives the instructions of `pick`, `time_slice`, `should_preempt`, `charge`,
//! `enqueue` and `requeue_and_pick` over `steps` calls each (each figure
//! includes its wrapper's call through the vtable and its check of the
//! result). Calls go through `&mut dyn Policy`, as the kernel's do.
//! `scripts/pick_cost.sh` runs the table in `docs/sched.md`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::process::ExitCode;

use orrery_sched::{Config, EnqueueReason, Entity, Policy, PolicyKind, ThreadId, new_policy};

/// Each run lasts 1.5 ms at 1 GHz.
const RAN_TSC: u64 = 1_500_000;
/// `should_preempt` is asked after 1 ms: past the default minimum
/// granularity, so that a fair queue takes its full path at small lengths.
const ASKED_AFTER_TSC: u64 = 1_000_000;

fn weight_of(mixed: bool, id: usize) -> u32 {
    if mixed { 512 << (id % 4) } else { 1024 }
}

#[inline(never)]
fn pick(policy: &mut dyn Policy) -> Option<Entity> {
    policy.pick_next()
}

#[inline(never)]
fn time_slice(policy: &mut dyn Policy, entity: &Entity) -> u64 {
    policy.time_slice(entity)
}

#[inline(never)]
fn should_preempt(policy: &mut dyn Policy, entity: &Entity, ran_tsc: u64) -> bool {
    policy.should_preempt(entity, ran_tsc)
}

#[inline(never)]
fn charge(policy: &mut dyn Policy, entity: &mut Entity, ran_tsc: u64) {
    policy.charge(entity, ran_tsc);
}

#[inline(never)]
fn enqueue(policy: &mut dyn Policy, entity: Entity, why: EnqueueReason) {
    black_box(policy.enqueue(entity, why).expect("capacity was reserved"));
}

#[inline(never)]
fn requeue_and_pick(policy: &mut dyn Policy, running: &mut Entity, ran_tsc: u64, why: EnqueueReason) {
    black_box(policy.requeue_and_pick(running, ran_tsc, why).expect("capacity was reserved"));
}

/// Asks what a kernel asks of the entity it is about to run.
fn ask(policy: &mut dyn Policy, running: &Entity) {
    black_box(time_slice(policy, running));
    black_box(should_preempt(policy, running, black_box(ASKED_AFTER_TSC)));
}

fn step(policy: &mut dyn Policy, why: EnqueueReason) {
    let mut running = pick(policy).expect("the queue is never empty");
    ask(policy, &running);
    charge(policy, &mut running, black_box(RAN_TSC));
    enqueue(policy, running, why);
}

fn combined_step(policy: &mut dyn Policy, running: &mut Entity, why: EnqueueReason) {
    black_box(should_preempt(policy, running, black_box(ASKED_AFTER_TSC)));
    requeue_and_pick(policy, running, black_box(RAN_TSC), why);
}

#[inline(never)]
fn measure(policy: &mut dyn Policy, steps: u64, why: EnqueueReason) {
    for _ in 0..steps {
        step(policy, why);
    }
}

#[inline(never)]
fn measure_combined(policy: &mut dyn Policy, running: &mut Entity, steps: u64, why: EnqueueReason) {
    for _ in 0..steps {
        combined_step(policy, running, why);
    }
}

#[inline(never)]
fn set_pick(set: &mut BTreeSet<(u64, u64)>) -> Option<(u64, u64)> {
    set.pop_first()
}

#[inline(never)]
fn set_insert(set: &mut BTreeSet<(u64, u64)>, key: (u64, u64)) {
    set.insert(key);
}

fn run_set(set: &mut BTreeSet<(u64, u64)>, steps: u64, mixed: bool) {
    for _ in 0..steps {
        let (vruntime, id) = set_pick(set).expect("the set is never empty");
        let weight = u64::from(weight_of(mixed, id as usize));
        set_insert(set, (vruntime + black_box(RAN_TSC) * 1024 / weight, id));
    }
}

#[inline(never)]
fn measure_set(set: &mut BTreeSet<(u64, u64)>, steps: u64, mixed: bool) {
    run_set(set, steps, mixed);
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pick_cost <fair|round-robin|btreeset> <queue-length> <steps> [equal|mixed] \
                 [preempted|yielded] [separate|combined]";
    let (Some(kind), Some(length), Some(steps)) = (
        arguments.first(),
        arguments.get(1).and_then(|text| text.parse::<usize>().ok()),
        arguments.get(2).and_then(|text| text.parse::<u64>().ok()),
    ) else {
        eprintln!("{usage}");
        return ExitCode::FAILURE;
    };
    let mixed = match arguments.get(3).map(String::as_str) {
        None | Some("equal") => false,
        Some("mixed") => true,
        Some(other) => {
            eprintln!("unknown weight pattern {other:?}\n{usage}");
            return ExitCode::FAILURE;
        }
    };
    let why = match arguments.get(4).map(String::as_str) {
        None | Some("preempted") => EnqueueReason::Preempted,
        Some("yielded") => EnqueueReason::Yielded,
        Some(other) => {
            eprintln!("unknown reason {other:?}\n{usage}");
            return ExitCode::FAILURE;
        }
    };
    let combined = match arguments.get(5).map(String::as_str) {
        None | Some("separate") => false,
        Some("combined") => true,
        Some(other) => {
            eprintln!("unknown mode {other:?}\n{usage}");
            return ExitCode::FAILURE;
        }
    };
    if length == 0 {
        eprintln!("the queue length must be at least 1");
        return ExitCode::FAILURE;
    }
    let warm_up = length.min(100_000) as u64;
    if kind == "btreeset" {
        let mut set: BTreeSet<(u64, u64)> = (0..length as u64).map(|id| (0, id)).collect();
        run_set(&mut set, warm_up, mixed);
        measure_set(&mut set, steps, mixed);
        println!("btreeset: {steps} steps at {length} queued");
        return ExitCode::SUCCESS;
    }
    let Some(kind) = PolicyKind::from_name(kind) else {
        eprintln!("unknown policy {kind:?}\n{usage}");
        return ExitCode::FAILURE;
    };
    let mut policy = new_policy(kind, Config::default()).expect("the default configuration is valid");
    policy.reserve(length).expect("room for the queue");
    for id in 0..length {
        let entity = Entity::with_weight(ThreadId(id as u64), weight_of(mixed, id));
        policy.enqueue(entity, EnqueueReason::New).expect("capacity was reserved");
    }
    for _ in 0..warm_up {
        step(policy.as_mut(), why);
    }
    if combined {
        let mut running = policy.pick_next().expect("the queue is never empty");
        measure_combined(policy.as_mut(), &mut running, steps, why);
    } else {
        measure(policy.as_mut(), steps, why);
    }
    println!("{}: {steps} steps at {length} queued", policy.name());
    ExitCode::SUCCESS
}
