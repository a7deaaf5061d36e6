//! Property tests of every policy: random call sequences checked against a
//! model of where each thread is, and the fairness and placement guarantees
//! stated as bounds that a wrong policy would break.
//!
//! (a) no entity is lost or duplicated; (b) every queued entity runs within a
//! stated number of picks; (c) CPU shares follow weights within a stated
//! bound; (d) stale and foreign tokens never remove anything; (e) entities
//! moved by drain or steal keep their relative order.

use std::collections::{BTreeMap, BTreeSet};

use orrery_sched::{
    Accounting, AnyPolicy, Config, DEFAULT_WEIGHT, EnqueueReason, Entity, Fair, Policy, PolicyKind, STEAL_SCAN_LIMIT,
    ThreadId, Token, WakeupCheck, new_policy,
};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = PolicyKind> {
    prop_oneof![Just(PolicyKind::Fair), Just(PolicyKind::RoundRobin)]
}

fn accounting() -> impl Strategy<Value = Accounting> {
    prop_oneof![Just(Accounting::Tsc), Just(Accounting::SwitchCount)]
}

fn build(kind: PolicyKind, accounting: Accounting) -> Box<dyn Policy> {
    new_policy(kind, Config { accounting, ..Config::default() }).unwrap()
}

/// Weights from the lightest Linux nice level (15) to the heaviest (88761),
/// and the invalid 0.
fn weight() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 1 => Just(DEFAULT_WEIGHT), 4 => 15u32..=88_761]
}

fn reason() -> impl Strategy<Value = EnqueueReason> {
    prop_oneof![
        Just(EnqueueReason::New),
        Just(EnqueueReason::Wakeup),
        Just(EnqueueReason::Preempted),
        Just(EnqueueReason::Yielded),
        Just(EnqueueReason::Migrated),
    ]
}

/// One thing the kernel might do to a CPU's policy.
#[derive(Clone, Debug)]
enum Action {
    /// Create a thread and enqueue it.
    Spawn { weight: u32 },
    /// Stop the running thread (if any), then pick the next.
    Schedule { ran_tsc: u64, requeue: Option<EnqueueReason> },
    /// Enqueue a held (blocked or moved) thread again.
    Wake { which: usize, why: EnqueueReason },
    /// Remove by one of the tokens ever issued, live or stale.
    Remove { which: usize },
    /// Remove by a token from another policy object.
    RemoveForeign,
    /// Steal, allowing only ids whose bit is set in `mask`.
    Steal { mask: u8 },
    /// Drain everything (policy change).
    Drain,
    /// Ask the read-only questions; they must not change anything.
    Ask { ran_tsc: u64 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => weight().prop_map(|weight| Action::Spawn { weight }),
        6 => (0u64..20_000_000, proptest::option::of(reason()))
            .prop_map(|(ran_tsc, requeue)| Action::Schedule { ran_tsc, requeue }),
        2 => (any::<usize>(), reason()).prop_map(|(which, why)| Action::Wake { which, why }),
        2 => any::<usize>().prop_map(|which| Action::Remove { which }),
        1 => Just(Action::RemoveForeign),
        1 => any::<u8>().prop_map(|mask| Action::Steal { mask }),
        1 => Just(Action::Drain),
        1 => (0u64..20_000_000).prop_map(|ran_tsc| Action::Ask { ran_tsc }),
    ]
}

/// Where the kernel believes each thread is.
#[derive(Default)]
struct Model {
    queued: BTreeMap<ThreadId, Token>,
    held: Vec<Entity>,
    running: Option<Entity>,
    tokens: Vec<(Token, ThreadId)>,
    spawned: u64,
}

fn may_move(mask: u8, entity: &Entity) -> bool {
    mask & (1 << (entity.id.0 % 8)) != 0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (a) and (d): every thread is in exactly one place — queued, held by
    /// the kernel, or running — after any sequence of calls; every removal by
    /// token returns exactly the thread the token was issued for if it is
    /// still queued under that token, and nothing otherwise.
    #[test]
    fn no_entity_lost_or_duplicated(
        kind in kind(),
        accounting in accounting(),
        actions in proptest::collection::vec(action(), 0..300),
    ) {
        let mut policy = build(kind, accounting);
        let mut foreign_policy = build(kind, accounting);
        let foreign = foreign_policy.enqueue(Entity::new(ThreadId(u64::MAX)), EnqueueReason::New).unwrap();
        let mut model = Model::default();
        for action in actions {
            match action {
                Action::Spawn { weight } => {
                    let id = ThreadId(model.spawned);
                    model.spawned += 1;
                    let token = policy.enqueue(Entity::with_weight(id, weight), EnqueueReason::New).unwrap();
                    model.queued.insert(id, token);
                    model.tokens.push((token, id));
                }
                Action::Schedule { ran_tsc, requeue } => {
                    if let Some(mut running) = model.running.take() {
                        policy.charge(&mut running, ran_tsc);
                        match requeue {
                            Some(why) => {
                                let token = policy.enqueue(running, why).unwrap();
                                model.queued.insert(running.id, token);
                                model.tokens.push((token, running.id));
                            }
                            None => model.held.push(running),
                        }
                    }
                    let picked = policy.pick_next();
                    prop_assert_eq!(picked.is_some(), !model.queued.is_empty());
                    if let Some(picked) = picked {
                        prop_assert!(model.queued.remove(&picked.id).is_some(), "picked {:?} was not queued", picked.id);
                        model.running = Some(picked);
                    }
                }
                Action::Wake { which, why } => {
                    if !model.held.is_empty() {
                        let entity = model.held.swap_remove(which % model.held.len());
                        let token = policy.enqueue(entity, why).unwrap();
                        model.queued.insert(entity.id, token);
                        model.tokens.push((token, entity.id));
                    }
                }
                Action::Remove { which } => {
                    if model.tokens.is_empty() {
                        continue;
                    }
                    let (token, id) = model.tokens[which % model.tokens.len()];
                    let live = model.queued.get(&id) == Some(&token);
                    let removed = policy.remove(token);
                    prop_assert_eq!(removed.map(|entity| entity.id), live.then_some(id));
                    if let Some(entity) = removed {
                        model.queued.remove(&id);
                        model.held.push(entity);
                    }
                }
                Action::RemoveForeign => {
                    prop_assert_eq!(policy.remove(foreign), None);
                }
                Action::Steal { mask } => {
                    match policy.steal(&mut |entity| may_move(mask, entity)) {
                        Some(stolen) => {
                            prop_assert!(may_move(mask, &stolen), "stole pinned {:?}", stolen.id);
                            prop_assert!(model.queued.remove(&stolen.id).is_some());
                            model.held.push(stolen);
                        }
                        None => {
                            // Within the scan limit, None means nobody may move.
                            if model.queued.len() <= STEAL_SCAN_LIMIT {
                                prop_assert!(model.queued.keys().all(|id| mask & (1 << (id.0 % 8)) == 0));
                            }
                        }
                    }
                }
                Action::Drain => {
                    let mut out = Vec::new();
                    policy.drain(&mut out);
                    let drained: BTreeSet<ThreadId> = out.iter().map(|entity| entity.id).collect();
                    prop_assert_eq!(drained.len(), out.len(), "drain duplicated an entity");
                    let expected: BTreeSet<ThreadId> = model.queued.keys().copied().collect();
                    prop_assert_eq!(drained, expected);
                    model.queued.clear();
                    model.held.extend(out);
                }
                Action::Ask { ran_tsc } => {
                    if let Some(running) = &model.running {
                        let slice = policy.time_slice(running);
                        prop_assert!(slice > 0);
                        let preempt = policy.should_preempt(running, ran_tsc);
                        prop_assert!(!preempt || !model.queued.is_empty(), "preempted with nobody to run");
                        // Wake-up preemption is never later than the tick's,
                        // never with nobody to run, and asks again only
                        // within the slice, after what has run.
                        match policy.check_wakeup(running, ran_tsc) {
                            WakeupCheck::Preempt => prop_assert!(!model.queued.is_empty(), "preempted with nobody to run"),
                            WakeupCheck::AskAt(at) => {
                                prop_assert!(!preempt, "asked again where the tick preempts");
                                prop_assert!(at > ran_tsc && at < slice, "asks again at {} after {} of a {} slice", at, ran_tsc, slice);
                            }
                            WakeupCheck::RunOn => prop_assert!(!preempt, "runs on where the tick preempts"),
                        }
                    }
                }
            }
            prop_assert_eq!(policy.len(), model.queued.len());
            prop_assert_eq!(policy.is_empty(), model.queued.is_empty());
        }
        // Everything ever spawned is in exactly one place.
        let mut out = Vec::new();
        policy.drain(&mut out);
        let mut everywhere: Vec<ThreadId> = out.iter().chain(&model.held).chain(&model.running).map(|entity| entity.id).collect();
        everywhere.sort();
        let spawned: Vec<ThreadId> = (0..model.spawned).map(ThreadId).collect();
        prop_assert_eq!(everywhere, spawned);
    }

    /// (d) directly: after slots are reused many times, every token ever
    /// issued removes its own thread if still queued under it, else nothing.
    #[test]
    fn stale_tokens_never_remove_another_entity(
        kind in kind(),
        steps in proptest::collection::vec((any::<bool>(), any::<usize>()), 1..200),
    ) {
        let mut policy = build(kind, Accounting::Tsc);
        let mut issued: Vec<(Token, ThreadId)> = Vec::new();
        let mut live: BTreeMap<ThreadId, Token> = BTreeMap::new();
        for (id, (enqueue, which)) in steps.into_iter().enumerate() {
            if enqueue || live.is_empty() {
                let id = ThreadId(id as u64);
                let token = policy.enqueue(Entity::new(id), EnqueueReason::New).unwrap();
                issued.push((token, id));
                live.insert(id, token);
            } else if which % 2 == 0 {
                let picked = policy.pick_next().unwrap();
                live.remove(&picked.id);
            } else {
                let (&id, &token) = live.iter().nth(which % live.len()).unwrap();
                prop_assert_eq!(policy.remove(token).map(|entity| entity.id), Some(id));
                live.remove(&id);
            }
        }
        for (token, id) in issued {
            let before = policy.len();
            let removed = policy.remove(token).map(|entity| entity.id);
            if live.remove(&id).is_some() {
                prop_assert_eq!(removed, Some(id));
                prop_assert_eq!(policy.len(), before - 1);
            } else {
                prop_assert_eq!(removed, None);
                prop_assert_eq!(policy.len(), before);
            }
        }
        prop_assert!(policy.is_empty());
    }

    /// (b) bounded wait. Threads of random weights run for between `low`
    /// and `high` ticks each time. Under Fair with TSC accounting all
    /// virtual runtimes stay within `D = high * 1024 / w_min` of each other
    /// (the lightest thread's longest run), and each run advances thread j by
    /// at least `δ_j = low * 1024 / w_j`, so while X waits, j is picked at
    /// most `D / δ_j + 1` times: X waits at most the sum of that over the
    /// others. Switch counting is the case `low == high == slice_tsc`. With
    /// equal weights and equal runs, and always under round robin, the bound
    /// is `n - 1` picks: the threads run in strict turn.
    #[test]
    fn every_queued_entity_runs_within_the_bound(
        kind in kind(),
        accounting in accounting(),
        weights in proptest::collection::vec(prop_oneof![Just(1024u32), 15u32..=88_761], 1..24),
        low in 1_000u64..2_000_000,
        spread in 1u64..=4,
        runs in proptest::collection::vec(any::<u64>(), 200..2_000),
    ) {
        let high = low * spread;
        let mut policy = build(kind, accounting);
        for (id, &weight) in weights.iter().enumerate() {
            policy.enqueue(Entity::with_weight(ThreadId(id as u64), weight), EnqueueReason::New).unwrap();
        }
        let w_min = *weights.iter().min().unwrap();
        let equal_weights = weights.iter().all(|&weight| weight == weights[0]);
        let slice = Config::default().slice_tsc;
        // Vruntime a run of `ticks` is worth at `weight`, as Fair computes it.
        let vruntime = |ticks: u64, weight: u32| u128::from(ticks) * 1024 / u128::from(weight.max(1));
        let (shortest, longest) = match accounting {
            Accounting::Tsc => (low, high),
            Accounting::SwitchCount => (slice, slice),
        };
        let bound_for = |waiting: usize| -> u128 {
            let rotation = kind == PolicyKind::RoundRobin || (equal_weights && shortest == longest);
            if rotation {
                return weights.len() as u128 - 1;
            }
            let spread = vruntime(longest, w_min);
            weights
                .iter()
                .enumerate()
                .filter(|&(id, _)| id != waiting)
                .map(|(_, &w_j)| spread / vruntime(shortest, w_j) + 1)
                .sum()
        };
        // Picks since each thread last ran (or since the start).
        let mut waited = vec![0u128; weights.len()];
        for random in runs {
            let mut running = policy.pick_next().unwrap();
            let id = running.id.0 as usize;
            prop_assert!(waited[id] <= bound_for(id),
                "thread {} (weight {}) waited {} picks, bound {}", id, weights[id], waited[id], bound_for(id));
            for (other, count) in waited.iter_mut().enumerate() {
                *count = if other == id { 0 } else { *count + 1 };
            }
            let ran = low + random % (high - low + 1);
            policy.charge(&mut running, ran);
            policy.enqueue(running, EnqueueReason::Preempted).unwrap();
        }
        // Threads that have not run lately have waited too.
        for (id, &count) in waited.iter().enumerate() {
            prop_assert!(count <= bound_for(id), "thread {} has waited {} picks", id, count);
        }
    }

    /// (c) weighted shares. A simulated CPU runs threads of random weights,
    /// each run lasting `time_slice` plus a random overshoot of up to one
    /// 1 ms tick, for 20 simulated seconds at 1 GHz with TSC accounting.
    /// Virtual runtimes stay within D of each other, D the largest vruntime
    /// one run was worth, so thread i's CPU time is within `w_i * D / 1024`
    /// of `T * w_i / W`, plus `w_i * P / 1024` for the truncating division
    /// (P the most runs any thread had). Weights span 128..=4096 (a ratio of
    /// 32), where that bound is below 1 percentage point of the total,
    /// which the test checks too so that it cannot pass vacuously.
    #[test]
    fn cpu_shares_follow_weights(
        weights in proptest::collection::vec(128u32..=4_096, 2..8),
        overshoots in proptest::collection::vec(0u64..1_000_000, 64),
    ) {
        let duration_tsc = 20_000_000_000u64;
        let mut policy = Fair::new(Config::default()).unwrap();
        for (id, &weight) in weights.iter().enumerate() {
            policy.enqueue(Entity::with_weight(ThreadId(id as u64), weight), EnqueueReason::New).unwrap();
        }
        let mut exec = vec![0u64; weights.len()];
        let mut picks = vec![0u64; weights.len()];
        let mut largest_run_vruntime = 0u128;
        let mut now = 0;
        let mut step = 0;
        while now < duration_tsc {
            let mut running = policy.pick_next().unwrap();
            let ran = policy.time_slice(&running) + overshoots[step % overshoots.len()];
            step += 1;
            now += ran;
            let id = running.id.0 as usize;
            largest_run_vruntime = largest_run_vruntime.max(u128::from(ran) * 1024 / u128::from(weights[id]));
            policy.charge(&mut running, ran);
            exec[id] = running.sum_exec_tsc;
            picks[id] += 1;
            policy.enqueue(running, EnqueueReason::Preempted).unwrap();
        }
        let most_picks = *picks.iter().max().unwrap();
        let total_time = exec.iter().sum::<u64>() as f64;
        let total_weight = weights.iter().map(|&weight| u64::from(weight)).sum::<u64>() as f64;
        for (id, &weight) in weights.iter().enumerate() {
            let expected = total_time * f64::from(weight) / total_weight;
            let bound = f64::from(weight) * (largest_run_vruntime as f64 + most_picks as f64) / 1024.0 + 1.0;
            let error = (exec[id] as f64 - expected).abs();
            prop_assert!(error <= bound, "thread {} (weight {}): off by {} ticks, bound {}", id, weight, error, bound);
            prop_assert!(bound / total_time < 0.01, "bound {} is too loose to mean anything", bound);
        }
    }

    /// (e) lag placement. Entities drained from one Fair queue and enqueued
    /// as migrated into another (a fresh queue with a different "now") come
    /// out in the same order with the same lags; entities stolen one by one
    /// keep their lags, so the new queue orders them as the old one did.
    #[test]
    fn moved_entities_keep_their_relative_order(
        weights in proptest::collection::vec(weight(), 1..40),
        runs in proptest::collection::vec(0u64..10_000_000, 0..200),
        warm_up in 0usize..50,
    ) {
        let mut source = Fair::new(Config::default()).unwrap();
        for (id, &weight) in weights.iter().enumerate() {
            source.enqueue(Entity::with_weight(ThreadId(id as u64), weight), EnqueueReason::New).unwrap();
        }
        // Spread the virtual runtimes.
        for ran in runs {
            let mut running = source.pick_next().unwrap();
            source.charge(&mut running, ran);
            source.enqueue(running, EnqueueReason::Preempted).unwrap();
        }
        // The destination has its own, different, notion of "now".
        let mut destination = Fair::new(Config::default()).unwrap();
        for id in 0..warm_up as u64 {
            destination.enqueue(Entity::new(ThreadId(1_000 + id)), EnqueueReason::New).unwrap();
            let mut running = destination.pick_next().unwrap();
            destination.charge(&mut running, 3_000_000);
        }
        let mut second = Fair::new(Config::default()).unwrap();
        let mut drained = Vec::new();
        source.drain(&mut drained);
        for &entity in &drained {
            second.enqueue(entity, EnqueueReason::Migrated).unwrap();
        }
        let mut stolen = Vec::new();
        while let Some(entity) = second.steal(&mut |_| true) {
            stolen.push(entity);
            destination.enqueue(entity, EnqueueReason::Migrated).unwrap();
        }
        // Stealing takes the longest waiter first: the reverse of drain order.
        let reversed: Vec<(ThreadId, i64)> = drained.iter().rev().map(|entity| (entity.id, entity.lag)).collect();
        let stolen: Vec<(ThreadId, i64)> = stolen.iter().map(|entity| (entity.id, entity.lag)).collect();
        prop_assert_eq!(stolen, reversed);
        let mut arrived = Vec::new();
        destination.drain(&mut arrived);
        let lag_of: BTreeMap<ThreadId, i64> = drained.iter().map(|entity| (entity.id, entity.lag)).collect();
        for entity in &arrived {
            prop_assert_eq!(Some(&entity.lag), lag_of.get(&entity.id), "lag changed in transit");
        }
        prop_assert!(arrived.windows(2).all(|pair| pair[0].lag <= pair[1].lag), "order by lag lost");
        prop_assert_eq!(arrived.len(), drained.len());
    }
}

/// A policy that forwards every call but `requeue_and_pick`, so that the
/// trait's default implementation of it is what runs.
struct Plain(Box<dyn Policy>);

impl Policy for Plain {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn kind(&self) -> PolicyKind {
        self.0.kind()
    }
    fn enqueue(&mut self, entity: Entity, why: EnqueueReason) -> Result<Token, orrery_sched::EnqueueError> {
        self.0.enqueue(entity, why)
    }
    fn remove(&mut self, token: Token) -> Option<Entity> {
        self.0.remove(token)
    }
    fn pick_next(&mut self) -> Option<Entity> {
        self.0.pick_next()
    }
    fn charge(&mut self, entity: &mut Entity, ran_tsc: u64) {
        self.0.charge(entity, ran_tsc);
    }
    fn time_slice(&self, entity: &Entity) -> u64 {
        self.0.time_slice(entity)
    }
    fn should_preempt(&self, entity: &Entity, ran_tsc: u64) -> bool {
        self.0.should_preempt(entity, ran_tsc)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn steal(&mut self, can_move: &mut dyn FnMut(&Entity) -> bool) -> Option<Entity> {
        self.0.steal(can_move)
    }
    fn drain(&mut self, out: &mut Vec<Entity>) {
        self.0.drain(out);
    }
    fn reserve(&mut self, additional: usize) -> Result<(), orrery_sched::CapacityError> {
        self.0.reserve(additional)
    }
}

/// One thing the kernel might do, for the `requeue_and_pick` comparison.
#[derive(Clone, Debug)]
enum Step {
    Spawn {
        weight: u32,
        lag: i64,
        why: EnqueueReason,
    },
    /// The running thread (if any) stops after `ran_tsc` and is put back for `why`.
    Requeue {
        ran_tsc: u64,
        why: EnqueueReason,
    },
    /// The running thread (if any) blocks; the next is picked.
    Block {
        ran_tsc: u64,
    },
    Wake {
        which: usize,
        why: EnqueueReason,
    },
    Remove {
        which: usize,
    },
    Steal {
        mask: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (weight(), -20_000_000i64..20_000_000, reason())
            .prop_map(|(weight, lag, why)| Step::Spawn { weight, lag, why }),
        8 => (prop_oneof![0u64..20_000_000, Just(0), Just(u64::MAX)], reason())
            .prop_map(|(ran_tsc, why)| Step::Requeue { ran_tsc, why }),
        1 => (0u64..20_000_000).prop_map(|ran_tsc| Step::Block { ran_tsc }),
        1 => (any::<usize>(), reason()).prop_map(|(which, why)| Step::Wake { which, why }),
        1 => any::<usize>().prop_map(|which| Step::Remove { which }),
        1 => any::<u8>().prop_map(|mask| Step::Steal { mask }),
    ]
}

/// One side of the comparison: a policy and what the kernel knows of it.
struct Side {
    policy: Box<dyn Policy>,
    running: Option<Entity>,
    held: Vec<Entity>,
    tokens: BTreeMap<ThreadId, Token>,
}

impl Side {
    fn pick(&mut self) {
        self.running = self.policy.pick_next();
        if let Some(picked) = &self.running {
            self.tokens.remove(&picked.id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (f) `requeue_and_pick` makes exactly the decisions of `charge`,
    /// `enqueue` and `pick_next` in turn — the same entity runs, with the
    /// same lag, run time and count, and the queues drain alike — whether a
    /// policy implements it itself, takes the trait's default, or is called
    /// through `AnyPolicy`; its tokens remove what they name; and it never
    /// fails.
    #[test]
    fn requeue_and_pick_matches_the_three_calls(
        kind in kind(),
        accounting in accounting(),
        through in 0..3u8,
        steps in proptest::collection::vec(step(), 0..300),
    ) {
        let combined: Box<dyn Policy> = match through {
            0 => Box::new(Plain(build(kind, accounting))),
            1 => Box::new(AnyPolicy::new(kind, Config { accounting, ..Config::default() }).unwrap()),
            _ => build(kind, accounting),
        };
        let mut sides = [
            Side { policy: combined, running: None, held: Vec::new(), tokens: BTreeMap::new() },
            Side { policy: build(kind, accounting), running: None, held: Vec::new(), tokens: BTreeMap::new() },
        ];
        let mut spawned = 0;
        for step in steps {
            for (index, side) in sides.iter_mut().enumerate() {
                match step.clone() {
                    Step::Spawn { weight, lag, why } => {
                        let entity = Entity { lag, ..Entity::with_weight(ThreadId(spawned), weight) };
                        let token = side.policy.enqueue(entity, why).unwrap();
                        side.tokens.insert(entity.id, token);
                    }
                    Step::Requeue { ran_tsc, why } => match side.running.as_mut() {
                        Some(running) if index == 0 => {
                            let id = running.id;
                            let picked = side.policy.requeue_and_pick(running, ran_tsc, why).unwrap();
                            prop_assert_eq!(picked.slice, side.policy.time_slice(running));
                            match picked.queued {
                                None => prop_assert_eq!(running.id, id),
                                Some(token) => {
                                    prop_assert_ne!(running.id, id);
                                    side.tokens.remove(&running.id);
                                    side.tokens.insert(id, token);
                                }
                            }
                        }
                        Some(running) => {
                            let mut stopped = *running;
                            side.policy.charge(&mut stopped, ran_tsc);
                            let token = side.policy.enqueue(stopped, why).unwrap();
                            side.tokens.insert(stopped.id, token);
                            side.pick();
                        }
                        None => side.pick(),
                    },
                    Step::Block { ran_tsc } => {
                        if let Some(mut stopped) = side.running.take() {
                            side.policy.charge(&mut stopped, ran_tsc);
                            side.held.push(stopped);
                        }
                        side.pick();
                    }
                    Step::Wake { which, why } => {
                        if !side.held.is_empty() {
                            let entity = side.held.remove(which % side.held.len());
                            let token = side.policy.enqueue(entity, why).unwrap();
                            side.tokens.insert(entity.id, token);
                        }
                    }
                    Step::Remove { which } => {
                        if !side.tokens.is_empty() {
                            let (&id, &token) = side.tokens.iter().nth(which % side.tokens.len()).unwrap();
                            let removed = side.policy.remove(token);
                            prop_assert_eq!(removed.map(|entity| entity.id), Some(id));
                            side.tokens.remove(&id);
                            side.held.extend(removed);
                        }
                    }
                    Step::Steal { mask } => {
                        if let Some(stolen) = side.policy.steal(&mut |entity| may_move(mask, entity)) {
                            prop_assert!(side.tokens.remove(&stolen.id).is_some());
                            side.held.push(stolen);
                        }
                    }
                }
            }
            if let Step::Spawn { .. } = step {
                spawned += 1;
            }
            let [a, b] = &sides;
            prop_assert_eq!(a.running, b.running);
            prop_assert_eq!(&a.held, &b.held);
            prop_assert_eq!(a.policy.len(), b.policy.len());
            prop_assert_eq!(a.policy.len(), a.tokens.len());
            if let Some(running) = &a.running {
                prop_assert_eq!(a.policy.time_slice(running), b.policy.time_slice(running));
                for ran_tsc in [0, 800_000, 3_000_000, 50_000_000] {
                    prop_assert_eq!(a.policy.should_preempt(running, ran_tsc), b.policy.should_preempt(running, ran_tsc));
                }
            }
        }
        let [a, b] = &mut sides;
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        a.policy.drain(&mut out_a);
        b.policy.drain(&mut out_b);
        prop_assert_eq!(out_a, out_b);
    }
}
