//! [`Fair`]: weighted fair sharing by virtual runtime, in the manner of Linux's CFS.
//!
//! Every queued entity has a virtual runtime (vruntime): CPU time scaled by
//! `DEFAULT_WEIGHT / weight`, so a heavier entity's clock runs slower. The
//! entity with the smallest vruntime runs next; over time every entity's
//! vruntime advances at the same pace, so CPU time is shared in proportion to
//! weight. The run queue is [`crate::rbtree`]'s: a sorted list for entities
//! that join behind everybody and a red-black tree for the rest, in one arena.
//!
//! Vruntime is absolute only inside one queue. The queue keeps a monotonic
//! `min_vruntime`, its notion of "now"; an entity that leaves carries its
//! `lag = vruntime - min_vruntime` and is placed at `min_vruntime + lag` of
//! whatever queue it joins next, with the bounds [`EnqueueReason`] describes.
//! That makes migration and policy changes correct without a global clock.
//!
//! `min_vruntime` moves only in `pick_next`, to the vruntime of the entity
//! that will run after the one picked (or the picked one's, if it was alone).
//! The picked entity's lag is taken against that new value, so while it runs
//! nothing moves the reference it is measured from, and a `charge` followed
//! by a `Preempted` enqueue puts it back at exactly `vruntime + ran`. Had the
//! reference moved after the pick, as it would if `min_vruntime` followed
//! the leftmost on every removal, an entity that ran would be pushed back by
//! however far the next one was ahead: unfair to exactly the entity that
//! was owed the most.

use alloc::vec::Vec;

use crate::entity::{DEFAULT_WEIGHT, Entity, ThreadId};
use crate::policy::{
    Accounting, CapacityError, Config, ConfigError, EnqueueError, EnqueueReason, Picked, Policy, PolicyKind,
    RequeueError, STEAL_SCAN_LIMIT, Token, WakeupCheck, next_instance,
};
use crate::rbtree::{PopFallback, Popped, Queue, Requeued};

/// Weighted virtual-runtime fairness; see the module documentation.
///
/// Costs, for n queued: `pick_next` O(1) amortised (both parts' firsts known),
/// `enqueue` O(log n) (O(1) amortised when the entity goes behind all others,
/// as a yielding entity, or one preempted among equals, does), `remove`
/// O(log n), `requeue_and_pick` O(1) when the entity that ran is picked right
/// back or lands just behind the next, else that of a pick plus an enqueue,
/// `steal` O(log n + [`STEAL_SCAN_LIMIT`]), `drain` O(n). No allocation once
/// capacity is reserved.
#[derive(Debug)]
pub struct Fair {
    queue: Queue<Queued>,
    /// The queue's virtual "now"; moves forward only, in `pick_next`.
    min_vruntime: u64,
    /// Sum of the effective weights queued, for `time_slice`.
    queued_weight: u64,
    /// `config.max_lag_vruntime()`: the bound on any lag.
    max_lag: i64,
    /// The least lag honoured, by [`reason_index`] (see [`Fair::placed_vruntime`]).
    lag_floor: [i64; REASONS],
    instance: u32,
    config: Config,
    /// The last slice `requeue_and_pick` computed, with what it depends on
    /// (see [`SliceMemo`]).
    slice_memo: SliceMemo,
}

/// A slice and the inputs it was computed from: the entity's weight, the
/// queued weight and the queue length. A switch among equals (the usual
/// case) changes none of them, and is then spared two multiplications and a
/// division.
#[derive(Clone, Copy, Debug)]
struct SliceMemo {
    weight: u32,
    queued: usize,
    queued_weight: u64,
    slice: u64,
}

/// What the tree keeps of a queued entity: its lag is replaced by its place
/// (the vruntime key) while it is queued, and recomputed when it leaves.
#[derive(Clone, Copy, Debug)]
struct Queued {
    id: ThreadId,
    sum_exec_tsc: u64,
    switches: u64,
    weight: u32,
}

impl Queued {
    #[inline(always)]
    fn of(entity: &Entity) -> Self {
        Self { id: entity.id, sum_exec_tsc: entity.sum_exec_tsc, switches: entity.switches, weight: entity.weight }
    }

    /// The entity again, leaving with `lag` after `picks` more picks.
    #[inline(always)]
    fn leave(self, lag: i64, picks: u64) -> Entity {
        Entity {
            id: self.id,
            weight: self.weight,
            lag,
            sum_exec_tsc: self.sum_exec_tsc,
            switches: self.switches.wrapping_add(picks),
        }
    }

    #[inline(always)]
    fn effective_weight(&self) -> u64 {
        u64::from(effective_weight(self.weight))
    }
}

/// How many [`EnqueueReason`]s there are.
const REASONS: usize = 5;

/// A table index for each [`EnqueueReason`]: its discriminant (so the match
/// compiles to nothing), and a compile error here when a reason is added.
#[inline(always)]
const fn reason_index(why: EnqueueReason) -> usize {
    match why {
        EnqueueReason::New => 0,
        EnqueueReason::Wakeup => 1,
        EnqueueReason::Preempted => 2,
        EnqueueReason::Yielded => 3,
        EnqueueReason::Migrated => 4,
    }
}

/// [`Entity::effective_weight`] of a bare weight.
#[inline(always)]
fn effective_weight(weight: u32) -> u32 {
    if weight == 0 { 1 } else { weight }
}

impl Fair {
    /// An empty queue with `config`.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let max_lag = config.max_lag_vruntime();
        let mut lag_floor = [-max_lag; REASONS];
        lag_floor[reason_index(EnqueueReason::New)] = 0;
        lag_floor[reason_index(EnqueueReason::Wakeup)] = -config.sleeper_credit_vruntime();
        Ok(Self {
            queue: Queue::new(),
            min_vruntime: 0,
            queued_weight: 0,
            max_lag,
            lag_floor,
            instance: next_instance(),
            config,
            // No queue reaches this weight (at most 2^32 entities of weight
            // below 2^32), so this matches nothing.
            slice_memo: SliceMemo { weight: 0, queued: 0, queued_weight: u64::MAX, slice: 0 },
        })
    }

    /// The configuration this queue was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The queue's virtual "now": lags are relative to it. Wraps modulo 2^64.
    pub fn min_vruntime(&self) -> u64 {
        self.min_vruntime
    }

    /// Virtual runtime worth `ticks` of running at `weight` (0 counting as 1).
    #[inline(always)]
    fn vruntime_for(ticks: u64, weight: u32) -> u64 {
        // The default weight scales by exactly 1, and is the common case:
        // no division at all. (The saturation is the general case's below.)
        if weight == DEFAULT_WEIGHT {
            if ticks > i64::MAX as u64 {
                core::hint::cold_path();
                return i64::MAX as u64;
            }
            return ticks;
        }
        let weight = effective_weight(weight);
        // The usual run fits a 64-bit product: a 64-bit division is a few
        // instructions where a 128-bit one is a call of forty.
        if ticks <= u64::MAX / u64::from(DEFAULT_WEIGHT) {
            // Below 2^54 / weight, so below i64::MAX.
            return ticks * u64::from(DEFAULT_WEIGHT) / u64::from(weight);
        }
        let scaled = u128::from(ticks) * u128::from(DEFAULT_WEIGHT) / u128::from(weight);
        // Saturate at i64::MAX so the result can always be added to a lag.
        scaled.min(i64::MAX as u128) as u64
    }

    /// Virtual runtime a run of `ran_tsc` costs under the accounting mode.
    #[inline(always)]
    fn charge_vruntime(&self, ran_tsc: u64, weight: u32) -> u64 {
        match self.config.accounting {
            Accounting::Tsc => Self::vruntime_for(ran_tsc, weight),
            Accounting::SwitchCount => Self::vruntime_for(self.config.slice_tsc, weight),
        }
    }

    /// `charge`, inlined into `requeue_and_pick`. Both sums saturate, on a
    /// branch marked cold: neither bound is reached in practice.
    #[inline(always)]
    fn charge_inline(&self, entity: &mut Entity, ran_tsc: u64) {
        let (sum, carried) = entity.sum_exec_tsc.overflowing_add(ran_tsc);
        entity.sum_exec_tsc = if carried {
            core::hint::cold_path();
            u64::MAX
        } else {
            sum
        };
        // At most i64::MAX, so it only overflows upwards.
        let vruntime = self.charge_vruntime(ran_tsc, entity.weight) as i64;
        let (lag, overflowed) = entity.lag.overflowing_add(vruntime);
        entity.lag = if overflowed {
            core::hint::cold_path();
            i64::MAX
        } else {
            lag
        };
    }

    /// `vruntime - min_vruntime`, for an entity leaving the queue.
    #[inline(always)]
    fn lag_of(&self, vruntime: u64) -> i64 {
        vruntime.wrapping_sub(self.min_vruntime) as i64
    }

    /// Moves "now" forward to `next_vruntime`, the vruntime of whoever runs
    /// after the entity being picked (see the module docs); never backwards,
    /// so credit given to sleepers stays bounded.
    #[inline(always)]
    fn advance_to(&mut self, next_vruntime: u64) {
        if (next_vruntime.wrapping_sub(self.min_vruntime) as i64) > 0 {
            self.min_vruntime = next_vruntime;
        }
    }

    /// The vruntime an entity with `lag` is queued at for `why` (see
    /// [`EnqueueReason`]).
    ///
    /// Every lag is bounded to `±max_lag` and then raised to the reason's
    /// floor: 0 for `New`, minus the sleeper credit for `Wakeup`, `-max_lag`
    /// (no further bound) otherwise. The floor is a table lookup rather than
    /// a `match`, and since every floor lies within `±max_lag`,
    /// `lag.min(max_lag).max(floor)` is the clamp followed by the floor.
    /// `Yielded` also goes behind the last queued, which the queue applies.
    #[inline(always)]
    fn placed_vruntime(&self, lag: i64, why: EnqueueReason) -> u64 {
        let lag = lag.min(self.max_lag).max(self.lag_floor[reason_index(why)]);
        self.min_vruntime.wrapping_add(lag as u64)
    }

    /// [`Policy::time_slice`], inlined into `requeue_and_pick`.
    #[inline(always)]
    fn slice_of(&self, entity: &Entity) -> u64 {
        // Linux's sched_slice: the period stretches so that nobody's share
        // falls below the granularity, then is split by weight.
        let weight = u64::from(entity.effective_weight());
        let total_weight = self.queued_weight + weight;
        let runnable = self.queue.len() as u64 + 1;
        let granularity = self.config.min_granularity_tsc;
        let period = self.config.slice_tsc.max(runnable.saturating_mul(granularity));
        // A 64-bit product and division are a few instructions where the
        // 128-bit ones are a call of forty; the product fits whenever the
        // period is below 2^64 / weight, which covers every sane slice.
        let slice = match period.checked_mul(weight) {
            Some(product) => product / total_weight,
            None => {
                (u128::from(period) * u128::from(weight) / u128::from(total_weight)).min(u128::from(u64::MAX)) as u64
            }
        };
        slice.max(granularity)
    }

    /// [`Fair::slice_of`], remembered for the next call with the same inputs.
    #[inline(always)]
    fn slice_memoised(&mut self, entity: &Entity) -> u64 {
        let memo = self.slice_memo;
        let queued = self.queue.len();
        if memo.weight == entity.weight && memo.queued == queued && memo.queued_weight == self.queued_weight {
            return memo.slice;
        }
        let slice = self.slice_of(entity);
        self.slice_memo = SliceMemo { weight: entity.weight, queued, queued_weight: self.queued_weight, slice };
        slice
    }

    /// `enqueue` where the entity does not simply go behind everybody into a
    /// free slot: a descent, an empty queue, or growth.
    #[inline(never)]
    fn enqueue_general(&mut self, entity: Entity, vruntime: u64) -> Result<Token, EnqueueError> {
        match self.queue.insert(vruntime, Queued::of(&entity)) {
            Ok((slot, generation)) => {
                self.queued_weight += u64::from(entity.effective_weight());
                Ok(Token { instance: self.instance, slot, generation })
            }
            Err(cause) => Err(EnqueueError { entity, cause }),
        }
    }

    /// The accounting of a pick, after the tree gave up its first entity.
    #[inline(always)]
    fn picked(&mut self, popped: Popped<Queued>) -> Entity {
        let Popped { vruntime, next_vruntime, value } = popped;
        self.queued_weight -= value.effective_weight();
        self.advance_to(next_vruntime);
        value.leave(self.lag_of(vruntime), 1)
    }

    /// `pick_next` when the tree must rebalance.
    #[inline(never)]
    fn pick_general(&mut self) -> Option<Entity> {
        let popped = self.queue.pop_first_rebalancing()?;
        Some(self.picked(popped))
    }

    fn token_slot(&self, token: Token) -> Option<u32> {
        (token.instance == self.instance && self.queue.live_generation(token.slot) == Some(token.generation))
            .then_some(token.slot)
    }

    /// Takes `slot` out of the queue and hands its entity back, lag relative.
    fn take(&mut self, slot: u32) -> Option<Entity> {
        let (vruntime, queued) = self.queue.remove(slot)?;
        self.queued_weight -= queued.effective_weight();
        Some(queued.leave(self.lag_of(vruntime), 0))
    }
}

impl Policy for Fair {
    fn name(&self) -> &'static str {
        PolicyKind::Fair.name()
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::Fair
    }

    fn enqueue(&mut self, entity: Entity, why: EnqueueReason) -> Result<Token, EnqueueError> {
        let vruntime = self.placed_vruntime(entity.lag, why);
        let queued = || Queued::of(&entity);
        match self.queue.try_append(vruntime, queued, why == EnqueueReason::Yielded) {
            Ok((slot, generation)) => {
                self.queued_weight += u64::from(entity.effective_weight());
                Ok(Token { instance: self.instance, slot, generation })
            }
            Err(vruntime) => self.enqueue_general(entity, vruntime),
        }
    }

    fn remove(&mut self, token: Token) -> Option<Entity> {
        let slot = self.token_slot(token)?;
        self.take(slot)
    }

    fn pick_next(&mut self) -> Option<Entity> {
        match self.queue.try_pop_first() {
            Ok((value, vruntime, next_vruntime)) => {
                // `advance_to` and `lag_of`, on the fields, while the
                // value is borrowed from the queue.
                if (next_vruntime.wrapping_sub(self.min_vruntime) as i64) > 0 {
                    self.min_vruntime = next_vruntime;
                }
                self.queued_weight -= value.effective_weight();
                Some(value.leave(vruntime.wrapping_sub(self.min_vruntime) as i64, 1))
            }
            Err(PopFallback::Empty) => None,
            Err(PopFallback::Rebalance) => self.pick_general(),
        }
    }

    fn charge(&mut self, entity: &mut Entity, ran_tsc: u64) {
        self.charge_inline(entity, ran_tsc);
    }

    #[inline(always)]
    fn requeue_and_pick(
        &mut self,
        running: &mut Entity,
        ran_tsc: u64,
        why: EnqueueReason,
    ) -> Result<Picked, RequeueError> {
        self.charge_inline(running, ran_tsc);
        let vruntime = self.placed_vruntime(running.lag, why);
        let queued = || Queued::of(running);
        match self.queue.requeue(vruntime, queued, why == EnqueueReason::Yielded) {
            Requeued::Kept { vruntime, next_vruntime } => {
                // It would be queued and picked right back: it stays out,
                // with the lag and count a pick gives.
                self.advance_to(next_vruntime);
                running.lag = self.lag_of(vruntime);
                running.switches = running.switches.wrapping_add(1);
                Ok(Picked { queued: None, slice: self.slice_memoised(running) })
            }
            Requeued::Swapped { left, slot, generation } => {
                self.queued_weight =
                    self.queued_weight + u64::from(running.effective_weight()) - left.value.effective_weight();
                self.advance_to(left.next_vruntime);
                *running = left.value.leave(self.lag_of(left.vruntime), 1);
                Ok(Picked {
                    queued: Some(Token { instance: self.instance, slot, generation }),
                    slice: self.slice_memoised(running),
                })
            }
        }
    }

    fn time_slice(&self, entity: &Entity) -> u64 {
        self.slice_of(entity)
    }

    fn should_preempt(&self, entity: &Entity, ran_tsc: u64) -> bool {
        // Every slice is at least the granularity, so a shorter run is
        // within its slice and not past the granularity: no preemption.
        if ran_tsc < self.config.min_granularity_tsc {
            return false;
        }
        let slice = self.time_slice(entity);
        if ran_tsc >= slice {
            // Unless there is nobody to run instead.
            return self.queue.len() != 0;
        }
        let Some(first) = self.queue.first_vruntime() else {
            return false;
        };
        // A queued entity is more than a slice of this one's virtual time
        // behind it: typically a sleeper that woke with credit. Let it run
        // now rather than at the end of the slice.
        let running_vruntime = self
            .min_vruntime
            .wrapping_add(entity.lag as u64)
            .wrapping_add(self.charge_vruntime(ran_tsc, entity.weight));
        let ahead = running_vruntime.wrapping_sub(first) as i64;
        ahead > Self::vruntime_for(slice, entity.weight) as i64
    }

    fn check_wakeup(&self, entity: &Entity, ran_tsc: u64) -> WakeupCheck {
        let Some(first) = self.queue.first_vruntime() else {
            return WakeupCheck::RunOn;
        };
        let slice = self.slice_of(entity);
        if ran_tsc >= slice {
            return WakeupCheck::Preempt;
        }
        // Preempt once it has run the granularity and is more than the
        // granularity (in its virtual time) ahead of the first queued.
        let granularity = self.config.min_granularity_tsc;
        let threshold = Self::vruntime_for(granularity, entity.weight) as i64;
        let start = self.min_vruntime.wrapping_add(entity.lag as u64);
        let ahead_after =
            |ran: u64| start.wrapping_add(self.charge_vruntime(ran, entity.weight)).wrapping_sub(first) as i64;
        if ran_tsc >= granularity && ahead_after(ran_tsc) > threshold {
            return WakeupCheck::Preempt;
        }
        // When both will hold, if within the slice.
        let at = match self.config.accounting {
            Accounting::Tsc => {
                // Under TSC accounting its lead grows with every tick run:
                // it passes the threshold after `needed` more vruntime from
                // the start of its run, which takes `needed × weight / 1024`
                // ticks (rounded up).
                let needed = threshold.saturating_sub(ahead_after(0)).saturating_add(1);
                let ticks = if needed <= 0 {
                    0
                } else if entity.weight == DEFAULT_WEIGHT {
                    // The common case: one tick is one unit.
                    needed as u64
                } else {
                    // `needed × weight` fits 64 bits for any lead below
                    // 2^32 units; a 128-bit division is a call of forty.
                    let weight = u64::from(effective_weight(entity.weight));
                    match (needed as u64).checked_mul(weight) {
                        Some(product) => product.div_ceil(u64::from(DEFAULT_WEIGHT)),
                        None => u64::MAX,
                    }
                };
                ticks.max(granularity)
            }
            // A run costs the same however long: only the granularity is
            // left to wait for, if the lead is already enough.
            Accounting::SwitchCount if ahead_after(ran_tsc) > threshold => granularity,
            Accounting::SwitchCount => return WakeupCheck::RunOn,
        };
        let at = at.max(ran_tsc.saturating_add(1));
        if at >= slice { WakeupCheck::RunOn } else { WakeupCheck::AskAt(at) }
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn steal(&mut self, can_move: &mut dyn FnMut(&Entity) -> bool) -> Option<Entity> {
        // The entity with the largest vruntime would wait longest here: it
        // gains most from an idle CPU, and it is not the one about to run.
        let min_vruntime = self.min_vruntime;
        let slot = self.queue.scan_from_last(STEAL_SCAN_LIMIT, |vruntime, queued| {
            can_move(&queued.leave(vruntime.wrapping_sub(min_vruntime) as i64, 0))
        })?;
        self.take(slot)
    }

    fn drain(&mut self, out: &mut Vec<Entity>) {
        out.reserve(self.queue.len());
        while let Some(Popped { vruntime, value, .. }) = self.queue.pop_first() {
            out.push(value.leave(self.lag_of(vruntime), 0));
        }
        self.queued_weight = 0;
    }

    fn reserve(&mut self, additional: usize) -> Result<(), CapacityError> {
        self.queue.reserve(additional)
    }
}
