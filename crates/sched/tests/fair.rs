//! Exact-order and exact-value tests of the [`Fair`] policy: every test records
//! what the policy decided and compares it with the sequence worked out by
//! hand in its comments.

use orrery_sched::{
    Accounting, Config, ConfigError, EnqueueReason, Entity, Fair, Policy, PolicyKind, ThreadId, WakeupCheck, new_policy,
};

/// One millisecond at the default configuration's 1 GHz TSC.
const MS: u64 = 1_000_000;
/// The same as a lag.
const MS_LAG: i64 = MS as i64;

fn fair() -> Fair {
    Fair::new(Config::default()).unwrap()
}

fn entity(id: u64, weight: u32) -> Entity {
    Entity::with_weight(ThreadId(id), weight)
}

fn enqueue(policy: &mut dyn Policy, entity: Entity, why: EnqueueReason) {
    policy.enqueue(entity, why).unwrap();
}

fn drained(policy: &mut dyn Policy) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    policy.drain(&mut out);
    out.iter().map(|entity| (entity.id.0, entity.lag)).collect()
}

/// Runs `picks` schedule steps: pick, run `ran_tsc(id)`, charge, put back.
fn run(policy: &mut dyn Policy, picks: usize, ran_tsc: impl Fn(u64) -> u64) -> Vec<u64> {
    let mut order = Vec::new();
    for _ in 0..picks {
        let mut running = policy.pick_next().expect("something is queued");
        order.push(running.id.0);
        let ran = ran_tsc(running.id.0);
        policy.charge(&mut running, ran);
        enqueue(policy, running, EnqueueReason::Preempted);
    }
    order
}

#[test]
fn weighted_order_is_exact() {
    // A and C have the default weight, B twice it; every run lasts 1 ms, so
    // A and C advance 1 ms of vruntime per run and B 0.5 ms. Worked by hand:
    //   pick A(0)   → A at 1       pick B(0)   → B at 0.5
    //   pick C(0)   → C at 1       pick B(0.5) → B at 1
    //   pick A(1)   → A at 2       pick C(1)   → C at 2   (equal: FIFO)
    //   pick B(1)   → B at 1.5     pick B(1.5) → B at 2
    //   then A, C, B, B again: B runs twice as often.
    let mut policy = fair();
    for (id, weight) in [(1, 1024), (2, 2048), (3, 1024)] {
        enqueue(&mut policy, entity(id, weight), EnqueueReason::New);
    }
    let order = run(&mut policy, 16, |_| MS);
    assert_eq!(order, [1, 2, 3, 2, 1, 3, 2, 2, 1, 3, 2, 2, 1, 3, 2, 2]);
}

#[test]
fn preempted_entity_returns_to_its_exact_place() {
    // A(0) B(5) C(10) in vruntime (ms). A runs 3 ms: its true vruntime is 3,
    // still ahead of B, so it must run again before B, and then B, then C.
    let mut policy = fair();
    for (id, lag) in [(1, 0), (2, 5 * MS_LAG), (3, 10 * MS_LAG)] {
        enqueue(&mut policy, Entity { lag, ..entity(id, 1024) }, EnqueueReason::Migrated);
    }
    let order = run(&mut policy, 4, |_| 3 * MS);
    // A(0→3), A(3→6), B(5→8), A(6→9).
    assert_eq!(order, [1, 1, 2, 1]);
    // Left: B at 8, A at 9, C at 10. "Now" moved to B's 8 when A was last
    // picked (B was next in line), so their lags are 0, 1 and 2 ms.
    assert_eq!(drained(&mut policy), [(2, 0), (1, MS_LAG), (3, 2 * MS_LAG)]);
}

#[test]
fn lag_is_honoured_by_reason() {
    let config = Config::default();
    let credit = (config.slice_tsc / 2) as i64;
    let max_lag = (config.slice_tsc * 1024) as i64;
    let mut policy = fair();
    enqueue(&mut policy, entity(1, 1024), EnqueueReason::New);
    // A sleeper owed a whole second keeps only half a slice of credit.
    enqueue(&mut policy, Entity { lag: -1_000 * MS_LAG, ..entity(2, 1024) }, EnqueueReason::Wakeup);
    // A new thread cannot start ahead of the queue.
    enqueue(&mut policy, Entity { lag: -MS_LAG, ..entity(3, 1024) }, EnqueueReason::New);
    // A migrated runnable thread keeps its place exactly.
    enqueue(&mut policy, Entity { lag: -5 * MS_LAG, ..entity(4, 1024) }, EnqueueReason::Migrated);
    // A sleeper in debt stays in debt.
    enqueue(&mut policy, Entity { lag: 2 * MS_LAG, ..entity(5, 1024) }, EnqueueReason::Wakeup);
    // Any lag beyond one slice at weight 1 is cut to that bound.
    enqueue(&mut policy, Entity { lag: i64::MAX, ..entity(6, 1024) }, EnqueueReason::Preempted);
    assert_eq!(drained(&mut policy), [(4, -5 * MS_LAG), (2, -credit), (1, 0), (3, 0), (5, 2 * MS_LAG), (6, max_lag)]);
}

#[test]
fn yield_goes_behind_everybody_and_forfeits_credit() {
    for (why, expected) in [(EnqueueReason::Preempted, [1, 2, 3]), (EnqueueReason::Yielded, [2, 3, 1])] {
        let mut policy = fair();
        enqueue(&mut policy, entity(2, 1024), EnqueueReason::New);
        enqueue(&mut policy, entity(3, 1024), EnqueueReason::New);
        enqueue(&mut policy, Entity { lag: -MS_LAG, ..entity(1, 1024) }, EnqueueReason::Migrated);
        let mut running = policy.pick_next().unwrap();
        assert_eq!(running.id, ThreadId(1));
        // Owed 1 ms against the next in line, it ran 10 µs.
        assert_eq!(running.lag, -MS_LAG);
        policy.charge(&mut running, 10_000);
        assert_eq!(running.lag, -MS_LAG + 10_000);
        enqueue(&mut policy, running, why);
        let order: Vec<u64> = (0..3).map(|_| policy.pick_next().unwrap().id.0).collect();
        assert_eq!(order, expected, "{why:?}");
    }
}

#[test]
fn switch_count_accounting_ignores_run_length() {
    let config = Config { accounting: Accounting::SwitchCount, ..Config::default() };
    // B runs 50 times longer than A on each turn, yet they alternate: every
    // turn costs one quantum. By TSC, A would get 50 turns per B turn.
    let mut switch_count = Fair::new(config).unwrap();
    let mut tsc = fair();
    for policy in [&mut switch_count as &mut dyn Policy, &mut tsc] {
        enqueue(policy, entity(1, 1024), EnqueueReason::New);
        enqueue(policy, entity(2, 1024), EnqueueReason::New);
    }
    let ran = |id| if id == 1 { 100_000 } else { 5 * MS };
    assert_eq!(run(&mut switch_count, 6, ran), [1, 2, 1, 2, 1, 2]);
    assert_eq!(run(&mut tsc, 6, ran), [1, 2, 1, 1, 1, 1]);
    // Weighted turns: weight 2048 gets two turns per turn of weight 1024.
    let mut policy = Fair::new(config).unwrap();
    enqueue(&mut policy, entity(1, 1024), EnqueueReason::New);
    enqueue(&mut policy, entity(2, 2048), EnqueueReason::New);
    let order = run(&mut policy, 30, ran);
    assert_eq!(order.iter().filter(|&&id| id == 2).count(), 20);
}

#[test]
fn time_slice_splits_the_period_by_weight() {
    let mut policy = fair();
    let running = entity(9, 1024);
    assert_eq!(policy.time_slice(&running), 6 * MS, "alone: the whole period");
    for id in 0..3 {
        enqueue(&mut policy, entity(id, 1024), EnqueueReason::New);
    }
    assert_eq!(policy.time_slice(&running), 6 * MS / 4);
    assert_eq!(policy.time_slice(&entity(9, 2048)), 6 * MS * 2048 / 5120);
    assert_eq!(policy.time_slice(&entity(9, 0)), 750_000, "weight 0 counts as 1: the granularity floor");
    for id in 3..16 {
        enqueue(&mut policy, entity(id, 1024), EnqueueReason::New);
    }
    // 17 runnable × 0.75 ms stretch the period to 12.75 ms: 0.75 ms each.
    assert_eq!(policy.time_slice(&running), 750_000);
}

#[test]
fn should_preempt_at_slice_end_and_for_owed_sleepers() {
    let mut policy = fair();
    let mut running = entity(1, 1024);
    assert!(!policy.should_preempt(&running, u64::MAX), "nobody to run instead");
    enqueue(&mut policy, running, EnqueueReason::New);
    enqueue(&mut policy, entity(2, 1024), EnqueueReason::New);
    running = policy.pick_next().unwrap();
    // Two runnable: 3 ms each.
    assert!(!policy.should_preempt(&running, 2_999_999));
    assert!(policy.should_preempt(&running, 3 * MS));
    // A sleeper wakes owed half a slice (3 ms of vruntime). Three runnable
    // now: slices of 2 ms. Preempt once past the granularity (0.75 ms).
    enqueue(&mut policy, Entity { lag: -100 * MS_LAG, ..entity(3, 1024) }, EnqueueReason::Wakeup);
    assert!(!policy.should_preempt(&running, 700_000), "within the granularity");
    assert!(policy.should_preempt(&running, 800_000), "3.8 ms ahead of the sleeper > 2 ms slice");
    // Without the sleeper it would have run on.
    let mut without = fair();
    enqueue(&mut without, entity(1, 1024), EnqueueReason::New);
    enqueue(&mut without, entity(2, 1024), EnqueueReason::New);
    enqueue(&mut without, entity(4, 1024), EnqueueReason::New);
    let running = without.pick_next().unwrap();
    assert!(!without.should_preempt(&running, 800_000));
    assert!(without.should_preempt(&running, 2 * MS));
}

#[test]
fn a_woken_entity_preempts_once_the_runner_is_a_granularity_ahead() {
    // Two runnable at first: slices of 3 ms; then a sleeper wakes owed 3 ms.
    let mut policy = fair();
    enqueue(&mut policy, entity(1, 1024), EnqueueReason::New);
    enqueue(&mut policy, entity(2, 1024), EnqueueReason::New);
    let running = policy.pick_next().unwrap();
    enqueue(&mut policy, Entity { lag: -100 * MS_LAG, ..entity(3, 1024) }, EnqueueReason::Wakeup);
    // 3 ms ahead already: preempt as soon as the granularity has passed.
    assert_eq!(policy.check_wakeup(&running, 100_000), WakeupCheck::AskAt(750_000));
    assert_eq!(policy.check_wakeup(&running, 750_000), WakeupCheck::Preempt);

    // Queued level with it (new entities): preempt once its lead passes
    // the granularity, 0.75 ms of running from a level start.
    let mut level = fair();
    enqueue(&mut level, entity(1, 1024), EnqueueReason::New);
    enqueue(&mut level, entity(2, 1024), EnqueueReason::New);
    let running = level.pick_next().unwrap();
    assert_eq!(level.check_wakeup(&running, 100_000), WakeupCheck::AskAt(750_001));
    assert_eq!(level.check_wakeup(&running, 750_001), WakeupCheck::Preempt);
    // The tick alone would let it run on until its lead is a whole slice.
    assert!(!level.should_preempt(&running, 750_001));
    // Twice the weight: its virtual time runs at half speed, so the same
    // lead takes twice as long.
    let mut heavy = fair();
    enqueue(&mut heavy, entity(1, 2048), EnqueueReason::New);
    enqueue(&mut heavy, entity(2, 1024), EnqueueReason::New);
    let running = heavy.pick_next().unwrap();
    assert_eq!(running.id.0, 1);
    assert_eq!(heavy.check_wakeup(&running, 0), WakeupCheck::AskAt(750_002));

    // Nothing queued, or the queued one far ahead: the slice decides.
    let mut alone = fair();
    enqueue(&mut alone, entity(1, 1024), EnqueueReason::New);
    let running = alone.pick_next().unwrap();
    assert_eq!(alone.check_wakeup(&running, 1_000_000), WakeupCheck::RunOn);
    enqueue(&mut alone, Entity { lag: 100 * MS_LAG, ..entity(2, 1024) }, EnqueueReason::Preempted);
    assert_eq!(alone.check_wakeup(&running, 1_000_000), WakeupCheck::RunOn);
    assert_eq!(alone.check_wakeup(&running, 3 * MS), WakeupCheck::Preempt, "its slice is over");
}

/// Runs equal or weighted threads on one simulated CPU for `duration_tsc`,
/// the kernel arming a one-shot timer for each `time_slice`; returns each
/// thread's CPU time.
fn simulate_one_shot(policy: &mut dyn Policy, weights: &[u32], duration_tsc: u64) -> Vec<u64> {
    for (id, &weight) in weights.iter().enumerate() {
        enqueue(policy, entity(id as u64, weight), EnqueueReason::New);
    }
    let mut now = 0;
    let mut exec = vec![0; weights.len()];
    while now < duration_tsc {
        let mut running = policy.pick_next().unwrap();
        let ran = policy.time_slice(&running).min(duration_tsc - now);
        now += ran;
        policy.charge(&mut running, ran);
        exec[running.id.0 as usize] = running.sum_exec_tsc;
        enqueue(policy, running, EnqueueReason::Preempted);
    }
    exec
}

/// As [`simulate_one_shot`], but the kernel has a 1 kHz tick and asks
/// `should_preempt` on each.
fn simulate_ticks(policy: &mut dyn Policy, weights: &[u32], duration_tsc: u64) -> Vec<u64> {
    for (id, &weight) in weights.iter().enumerate() {
        enqueue(policy, entity(id as u64, weight), EnqueueReason::New);
    }
    let mut now = 0;
    let mut exec = vec![0; weights.len()];
    while now < duration_tsc {
        let mut running = policy.pick_next().unwrap();
        let mut ran = 0;
        while now < duration_tsc && (ran == 0 || !policy.should_preempt(&running, ran)) {
            ran += MS;
            now += MS;
        }
        policy.charge(&mut running, ran);
        exec[running.id.0 as usize] = running.sum_exec_tsc;
        enqueue(policy, running, EnqueueReason::Preempted);
    }
    exec
}

fn shares_percent(exec: &[u64]) -> Vec<f64> {
    let total: u64 = exec.iter().sum();
    exec.iter().map(|&ticks| 100.0 * ticks as f64 / total as f64).collect()
}

#[test]
fn four_equal_threads_share_within_a_tenth_of_a_point() {
    // 2 s at 1 GHz with the default 6 ms period: 1.5 ms slices.
    let duration = 2_000 * MS;
    for (model, exec) in [
        ("one-shot", simulate_one_shot(&mut fair(), &[1024; 4], duration)),
        ("1 kHz tick", simulate_ticks(&mut fair(), &[1024; 4], duration)),
    ] {
        assert_eq!(exec.iter().sum::<u64>(), duration, "{model}");
        for (id, share) in shares_percent(&exec).into_iter().enumerate() {
            assert!((share - 25.0).abs() <= 0.1, "{model}: thread {id} got {share}%");
        }
    }
}

#[test]
fn weighted_threads_share_in_proportion() {
    // Weights 1:2:3:4 over 5 s: 10, 20, 30, 40 % within 0.1 points.
    let duration = 5_000 * MS;
    let exec = simulate_one_shot(&mut fair(), &[1024, 2048, 3072, 4096], duration);
    for (id, share) in shares_percent(&exec).into_iter().enumerate() {
        let expected = 10.0 * (id + 1) as f64;
        assert!((share - expected).abs() <= 0.1, "thread {id} got {share}%, expected {expected}%");
    }
}

#[test]
fn steal_takes_the_longest_waiter_allowed() {
    let mut policy = fair();
    for (id, lag) in [(1, 0), (2, MS_LAG), (3, 2 * MS_LAG), (4, 3 * MS_LAG)] {
        enqueue(&mut policy, Entity { lag, ..entity(id, 1024) }, EnqueueReason::Migrated);
    }
    let stolen = policy.steal(&mut |_| true).unwrap();
    assert_eq!((stolen.id.0, stolen.lag), (4, 3 * MS_LAG));
    // Thread 3 is pinned: the next longest waiter goes.
    let stolen = policy.steal(&mut |candidate| candidate.id.0 != 3).unwrap();
    assert_eq!((stolen.id.0, stolen.lag), (2, MS_LAG));
    assert!(policy.steal(&mut |_| false).is_none());
    assert_eq!(policy.len(), 2);
    assert_eq!(drained(&mut policy), [(1, 0), (3, 2 * MS_LAG)]);
}

#[test]
fn tokens_remove_only_their_own_entity() {
    let mut policy = fair();
    let mut other = fair();
    let first = policy.enqueue(entity(1, 1024), EnqueueReason::New).unwrap();
    let foreign = other.enqueue(entity(7, 1024), EnqueueReason::New).unwrap();
    // Same slot number, other policy object: refused.
    assert_eq!(policy.remove(foreign), None);
    assert_eq!(policy.pick_next().unwrap().id, ThreadId(1));
    let second = policy.enqueue(entity(2, 1024), EnqueueReason::New).unwrap();
    // The slot was reused; the stale token must not take thread 2.
    assert_eq!(policy.remove(first), None);
    assert_eq!(policy.len(), 1);
    assert_eq!(policy.remove(second).map(|removed| removed.id), Some(ThreadId(2)));
    assert_eq!(policy.remove(second), None);
    assert!(policy.is_empty());
    assert_eq!(other.remove(foreign).map(|removed| removed.id), Some(ThreadId(7)));
}

#[test]
fn picks_count_switches_and_charges_accumulate() {
    let mut policy = fair();
    enqueue(&mut policy, entity(1, 1024), EnqueueReason::New);
    for _ in 0..3 {
        let mut running = policy.pick_next().unwrap();
        policy.charge(&mut running, 1_234);
        enqueue(&mut policy, running, EnqueueReason::Preempted);
    }
    let running = policy.pick_next().unwrap();
    assert_eq!((running.switches, running.sum_exec_tsc), (4, 3 * 1_234));
    // Charging saturates rather than overflowing.
    let mut huge = Entity { sum_exec_tsc: u64::MAX - 1, lag: i64::MAX - 1, ..running };
    policy.charge(&mut huge, u64::MAX);
    assert_eq!((huge.sum_exec_tsc, huge.lag), (u64::MAX, i64::MAX));
}

#[test]
fn config_is_checked() {
    let good = Config::default();
    assert_eq!(good.slice_tsc, 6 * MS);
    assert_eq!(good.min_granularity_tsc, 750_000);
    assert_eq!(Config::for_tsc_hz(2_500_000_000).slice_tsc, 15 * MS);
    assert_eq!(Fair::new(Config { slice_tsc: 0, ..good }).err(), Some(ConfigError::ZeroSlice));
    assert_eq!(Fair::new(Config { min_granularity_tsc: 0, ..good }).err(), Some(ConfigError::ZeroGranularity));
    assert_eq!(
        Fair::new(Config { min_granularity_tsc: 7 * MS, ..good }).err(),
        Some(ConfigError::GranularityAboveSlice { min_granularity_tsc: 7 * MS, slice_tsc: 6 * MS })
    );
    assert_eq!(
        new_policy(PolicyKind::RoundRobin, Config { slice_tsc: 1 << 41, ..good }).err(),
        Some(ConfigError::SliceTooLong { slice_tsc: 1 << 41 })
    );
    for kind in PolicyKind::ALL {
        let policy = new_policy(kind, good).unwrap();
        assert_eq!((policy.kind(), policy.name()), (kind, kind.name()));
        assert_eq!(PolicyKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(PolicyKind::from_name("edf"), None);
}
