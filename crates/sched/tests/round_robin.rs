//! Exact-order tests of the [`RoundRobin`] policy, and of changing a CPU's
//! policy at run time between round robin and [`Fair`].

use orrery_sched::{Config, EnqueueReason, Entity, Fair, Policy, PolicyKind, RoundRobin, ThreadId, new_policy};

fn round_robin() -> RoundRobin {
    RoundRobin::new(Config::default()).unwrap()
}

fn entity(id: u64) -> Entity {
    Entity::new(ThreadId(id))
}

fn ids(entities: &[Entity]) -> Vec<u64> {
    entities.iter().map(|entity| entity.id.0).collect()
}

#[test]
fn first_in_first_out_whatever_the_weight_or_reason() {
    let mut policy = round_robin();
    let reasons = [
        EnqueueReason::Migrated,
        EnqueueReason::New,
        EnqueueReason::Wakeup,
        EnqueueReason::Yielded,
        EnqueueReason::Preempted,
    ];
    for (id, why) in reasons.into_iter().enumerate() {
        // Weights and lags mean nothing to round robin.
        let weighted = Entity { weight: 1 << id, lag: -(id as i64) * 1_000_000, ..entity(id as u64) };
        policy.enqueue(weighted, why).unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..12 {
        let mut running = policy.pick_next().unwrap();
        assert_eq!(running.lag, 0, "round robin has no virtual time: lag is level");
        order.push(running.id.0);
        policy.charge(&mut running, 123);
        policy.enqueue(running, EnqueueReason::Preempted).unwrap();
    }
    assert_eq!(order, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
}

#[test]
fn remove_from_the_middle_and_the_ends() {
    let mut policy = round_robin();
    let tokens: Vec<_> = (0..5).map(|id| policy.enqueue(entity(id), EnqueueReason::New).unwrap()).collect();
    assert_eq!(policy.remove(tokens[2]).map(|removed| removed.id), Some(ThreadId(2)));
    assert_eq!(policy.remove(tokens[0]).map(|removed| removed.id), Some(ThreadId(0)));
    assert_eq!(policy.remove(tokens[4]).map(|removed| removed.id), Some(ThreadId(4)));
    assert_eq!(policy.remove(tokens[4]), None, "already removed");
    // The freed slots are reused; old tokens stay dead.
    policy.enqueue(entity(5), EnqueueReason::New).unwrap();
    policy.enqueue(entity(6), EnqueueReason::New).unwrap();
    assert_eq!(policy.remove(tokens[2]), None);
    assert_eq!(policy.remove(tokens[0]), None);
    let mut out = Vec::new();
    policy.drain(&mut out);
    assert_eq!(ids(&out), [1, 3, 5, 6]);
    assert!(policy.is_empty());
    assert_eq!(policy.remove(tokens[1]), None, "drain makes every token stale");
}

#[test]
fn fixed_slice_and_preemption_only_with_company() {
    let mut policy = round_robin();
    let running = entity(1);
    assert_eq!(policy.time_slice(&running), 6_000_000);
    assert!(!policy.should_preempt(&running, 1 << 40), "alone: keep running");
    policy.enqueue(entity(2), EnqueueReason::New).unwrap();
    assert!(!policy.should_preempt(&running, 5_999_999));
    assert!(policy.should_preempt(&running, 6_000_000));
    assert_eq!(policy.time_slice(&Entity { weight: 1 << 20, ..running }), 6_000_000);
}

#[test]
fn steal_takes_from_the_tail_within_the_scan_limit() {
    let mut policy = round_robin();
    for id in 0..40 {
        policy.enqueue(entity(id), EnqueueReason::New).unwrap();
    }
    assert_eq!(policy.steal(&mut |_| true).map(|stolen| stolen.id), Some(ThreadId(39)));
    assert_eq!(policy.steal(&mut |candidate| candidate.id.0 % 2 == 1).map(|stolen| stolen.id), Some(ThreadId(37)));
    // Only thread 0 may move, but it is 37 places from the tail: beyond the
    // 32 the scan examines, so nothing is stolen and nothing changes.
    assert_eq!(policy.steal(&mut |candidate| candidate.id.0 == 0), None);
    assert_eq!(policy.len(), 38);
    assert_eq!(policy.pick_next().map(|picked| picked.id), Some(ThreadId(0)));
}

#[test]
fn round_robin_to_fair_keeps_the_fifo_order() {
    let mut old = round_robin();
    for id in [4, 2, 9, 1] {
        old.enqueue(entity(id), EnqueueReason::New).unwrap();
    }
    let mut moving = Vec::new();
    old.drain(&mut moving);
    let mut new = new_policy(PolicyKind::Fair, Config::default()).unwrap();
    for entity in moving.drain(..) {
        new.enqueue(entity, EnqueueReason::Migrated).unwrap();
    }
    let order: Vec<u64> = (0..4).map(|_| new.pick_next().unwrap().id.0).collect();
    assert_eq!(order, [4, 2, 9, 1]);
}

#[test]
fn fair_to_round_robin_keeps_the_fair_order() {
    let mut old = Fair::new(Config::default()).unwrap();
    for (id, lag) in [(1, 3_000), (2, -2_000), (3, 0), (4, 1_000)] {
        old.enqueue(Entity { lag, ..entity(id) }, EnqueueReason::Migrated).unwrap();
    }
    let mut moving = Vec::new();
    old.drain(&mut moving);
    assert_eq!(ids(&moving), [2, 3, 4, 1]);
    let mut new = round_robin();
    for entity in moving.drain(..) {
        new.enqueue(entity, EnqueueReason::Migrated).unwrap();
    }
    let order: Vec<u64> = (0..4).map(|_| new.pick_next().unwrap().id.0).collect();
    assert_eq!(order, [2, 3, 4, 1]);
}

#[test]
fn reserve_then_enqueue_does_not_fail() {
    let mut policy = round_robin();
    policy.reserve(1_000).unwrap();
    for id in 0..1_000 {
        policy.enqueue(entity(id), EnqueueReason::New).unwrap();
    }
    assert_eq!(policy.len(), 1_000);
    assert_eq!(policy.reserve(usize::MAX), Err(orrery_sched::CapacityError::TooManyEntities { requested: usize::MAX }));
}
