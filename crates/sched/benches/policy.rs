//! Criterion benches of one steady-state schedule step — pick the next
//! entity, charge it a run, put it back (with the three calls, and with the
//! one `requeue_and_pick`) — for the policies of `orrery-sched`
//! and for the structures one would reach for instead: `BTreeSet<(u64, u64)>`,
//! `BinaryHeap<Reverse<(u64, u64)>>` and intrusive-collections' `RBTree`, all
//! keyed by (vruntime, id) and advanced exactly as `Fair` advances vruntime.
//!
//! Two weight patterns: `equal` (every entity 1024: a preempted entity goes
//! behind everybody, the easy case for every ordered structure) and `mixed`
//! (weights 512, 1024, 2048, 4096 in turn: entities land all over the tree).
//! Run with `cargo bench -p orrery-sched --bench policy`; figures are in
//! `docs/sched.md`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use intrusive_collections::{KeyAdapter, RBTree, RBTreeLink, intrusive_adapter};
use orrery_sched::{Config, EnqueueReason, Entity, Fair, Policy, RoundRobin, ThreadId};

/// Queue lengths measured.
const SIZES: [usize; 4] = [2, 10, 1_000, 100_000];
/// Every run lasts this long: 1.5 ms at 1 GHz.
const RAN_TSC: u64 = 1_500_000;

#[derive(Clone, Copy)]
enum Weights {
    Equal,
    Mixed,
}

impl Weights {
    fn name(self) -> &'static str {
        match self {
            Weights::Equal => "equal",
            Weights::Mixed => "mixed",
        }
    }

    fn of(self, id: usize) -> u32 {
        match self {
            Weights::Equal => 1024,
            Weights::Mixed => 512 << (id % 4),
        }
    }
}

/// Vruntime one run adds, as `Fair` computes it with TSC accounting.
fn vruntime_for(weight: u32) -> u64 {
    RAN_TSC * 1024 / u64::from(weight)
}

fn filled<P: Policy>(mut policy: P, size: usize, weights: Weights) -> P {
    policy.reserve(size).unwrap();
    for id in 0..size {
        policy.enqueue(Entity::with_weight(ThreadId(id as u64), weights.of(id)), EnqueueReason::New).unwrap();
    }
    policy
}

fn policy_step(policy: &mut dyn Policy) {
    let mut running = policy.pick_next().unwrap();
    policy.charge(&mut running, black_box(RAN_TSC));
    black_box(policy.enqueue(running, EnqueueReason::Preempted).unwrap());
}

/// The same step in one call; `running` is the entity that was picked last.
fn policy_requeue_step(policy: &mut dyn Policy, running: &mut Entity) {
    black_box(policy.requeue_and_pick(running, black_box(RAN_TSC), EnqueueReason::Preempted).unwrap());
}

struct IntrusiveNode {
    link: RBTreeLink,
    key: (u64, u64),
    weight: u32,
}

intrusive_adapter!(IntrusiveAdapter = Box<IntrusiveNode>: IntrusiveNode { link: RBTreeLink });

impl<'a> KeyAdapter<'a> for IntrusiveAdapter {
    type Key = (u64, u64);
    fn get_key(&self, node: &'a IntrusiveNode) -> (u64, u64) {
        node.key
    }
}

fn schedule_step(criterion: &mut Criterion) {
    for weights in [Weights::Equal, Weights::Mixed] {
        let mut group = criterion.benchmark_group(format!("schedule_step/{}", weights.name()));
        group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for size in SIZES {
            let mut fair = filled(Fair::new(Config::default()).unwrap(), size, weights);
            group.bench_with_input(BenchmarkId::new("fair", size), &size, |bencher, _| {
                bencher.iter(|| policy_step(&mut fair));
            });
            let mut running = fair.pick_next().unwrap();
            group.bench_with_input(BenchmarkId::new("fair_requeue_and_pick", size), &size, |bencher, _| {
                bencher.iter(|| policy_requeue_step(&mut fair, &mut running));
            });

            if let Weights::Equal = weights {
                // Round robin ignores weights: one pattern is enough.
                let mut round_robin = filled(RoundRobin::new(Config::default()).unwrap(), size, weights);
                group.bench_with_input(BenchmarkId::new("round_robin", size), &size, |bencher, _| {
                    bencher.iter(|| policy_step(&mut round_robin));
                });
                let mut running = round_robin.pick_next().unwrap();
                group.bench_with_input(BenchmarkId::new("round_robin_requeue_and_pick", size), &size, |bencher, _| {
                    bencher.iter(|| policy_requeue_step(&mut round_robin, &mut running));
                });
            }

            let mut set: BTreeSet<(u64, u64)> = (0..size as u64).map(|id| (0, id)).collect();
            group.bench_with_input(BenchmarkId::new("btreeset", size), &size, |bencher, _| {
                bencher.iter(|| {
                    let (vruntime, id) = set.pop_first().unwrap();
                    set.insert((vruntime + vruntime_for(weights.of(id as usize)), id));
                });
            });

            let mut heap: BinaryHeap<Reverse<(u64, u64)>> = (0..size as u64).map(|id| Reverse((0, id))).collect();
            group.bench_with_input(BenchmarkId::new("binary_heap", size), &size, |bencher, _| {
                bencher.iter(|| {
                    let Reverse((vruntime, id)) = heap.pop().unwrap();
                    heap.push(Reverse((vruntime + vruntime_for(weights.of(id as usize)), id)));
                });
            });

            let mut tree = RBTree::new(IntrusiveAdapter::new());
            for id in 0..size {
                tree.insert(Box::new(IntrusiveNode {
                    link: RBTreeLink::new(),
                    key: (0, id as u64),
                    weight: weights.of(id),
                }));
            }
            group.bench_with_input(BenchmarkId::new("intrusive_rbtree", size), &size, |bencher, _| {
                bencher.iter(|| {
                    let mut node = tree.front_mut().remove().unwrap();
                    node.key.0 += vruntime_for(node.weight);
                    tree.insert(node);
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, schedule_step);
criterion_main!(benches);
