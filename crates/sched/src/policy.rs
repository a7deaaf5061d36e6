//! The [`Policy`] trait every scheduling policy implements, and the values
//! that cross it: tokens, enqueue reasons, configuration and errors.
//!
//! The kernel holds one `Box<dyn Policy>` per CPU behind that CPU's lock.
//! [`new_policy`] builds one from a [`PolicyKind`], so the kernel can change a
//! CPU's policy at run time: drain the old one, enqueue the entities into the
//! new one with [`EnqueueReason::Migrated`].

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::entity::{DEFAULT_WEIGHT, Entity};
use crate::fair::Fair;
use crate::round_robin::RoundRobin;

/// Most queued entities that [`Policy::steal`] examines before giving up.
///
/// Steal runs with interrupts off on a CPU that is pulling work; bounding the
/// scan bounds that time however many queued entities the affinity predicate
/// rejects (Linux bounds its load-balancing scan the same way).
pub const STEAL_SCAN_LIMIT: usize = 32;

/// A scheduling policy for one CPU: who runs next, and for how long.
///
/// # Life of an entity with respect to one policy
///
/// ```text
///                    (1) enqueue
///        ┌──────────────────────────────────┐
///        │                                  ▼
///     ┌──────┐  (2) remove / steal / drain ┌────────┐
///     │ Held │◀────────────────────────────│ Queued │
///     └──────┘                             └────────┘
///        ▲                                  │
///        │ (4) charge       ┌─────────┐     │ (3) pick_next
///        └──────────────────│ Running │◀────┘
///                           └─────────┘
///                             (5) time_slice / should_preempt
/// ```
///
/// 1. [`enqueue`](Policy::enqueue): the kernel hands over an entity it holds
///    (new, woken, preempted, yielded or migrated) and keeps the [`Token`].
/// 2. [`remove`](Policy::remove) (by token), [`steal`](Policy::steal) (for
///    another CPU) or [`drain`](Policy::drain) (policy change, CPU offline)
///    hand it back with its `lag` made relative to this queue.
/// 3. [`pick_next`](Policy::pick_next) hands back the entity to run, its
///    `lag` made relative and `switches` counted; its token is now stale.
/// 4. [`charge`](Policy::charge) is called once when it stops running, with
///    the TSC ticks it ran; then the kernel either enqueues it again
///    (preempted or yielded) or keeps it (blocked, exiting, moving).
/// 5. While it runs, the kernel asks [`time_slice`](Policy::time_slice) to
///    arm its timer and [`should_preempt`](Policy::should_preempt) from the
///    tick and after waking another entity onto this CPU.
///
/// [`requeue_and_pick`](Policy::requeue_and_pick) is (4), (1) and (3) in one
/// call, for a preemption or a yield.
///
/// For exact fairness the entity that was running is charged and enqueued
/// again (or kept) before the next `pick_next` on the same CPU, as a normal
/// `schedule()` does. Other orders are safe, only less fair: a policy never
/// panics and never loses or duplicates an entity whatever the order.
///
/// Every method runs in time independent of the number queued, or logarithmic
/// in it, and allocates only in `enqueue` beyond the [`reserve`](Policy::reserve)d
/// capacity (and `drain`'s output vector).
pub trait Policy: Send {
    /// A short name for logs and the `sched=` command-line option.
    fn name(&self) -> &'static str;

    /// Which kind of policy this is.
    fn kind(&self) -> PolicyKind;

    /// Makes `entity` runnable here and returns the token that removes it
    /// again. `why` decides how its `lag` is honoured (see [`EnqueueReason`]).
    ///
    /// Allocates only when more entities are queued than were ever reserved;
    /// if that allocation fails, the entity comes back in the error.
    fn enqueue(&mut self, entity: Entity, why: EnqueueReason) -> Result<Token, EnqueueError>;

    /// Removes the queued entity `token` names (killed, blocked before it ran,
    /// moved by the kernel), its lag made relative. A stale token (its entity
    /// already left) or a foreign one (from another policy object) gives `None`
    /// and changes nothing.
    #[must_use = "the removed entity is handed back to the caller, dropping it loses the thread"]
    fn remove(&mut self, token: Token) -> Option<Entity>;

    /// Removes and returns the entity that should run next, or `None` when
    /// nothing is queued. Counts the pick in `switches` and makes `lag` relative.
    #[must_use = "the picked entity is handed to the caller, dropping it loses the thread"]
    fn pick_next(&mut self) -> Option<Entity>;

    /// Charges `ran_tsc` TSC ticks of CPU time to `entity`, which was running
    /// (not queued): adds them to `sum_exec_tsc` and advances its `lag` by the
    /// virtual runtime they are worth. Called once each time it stops running.
    fn charge(&mut self, entity: &mut Entity, ran_tsc: u64);

    /// The whole of a preemption or a yield in one call: charges the
    /// `running` entity `ran_tsc`, enqueues it for `why`, picks the entity
    /// to run next into `*running`, and says how long that one may run. The
    /// same decisions, lags and counts as [`charge`](Policy::charge), then
    /// [`enqueue`](Policy::enqueue), then [`pick_next`](Policy::pick_next),
    /// then [`time_slice`](Policy::time_slice) of the picked entity; only
    /// tokens may differ.
    ///
    /// - `Ok(Picked { queued: None, .. })`: the entity that was running was
    ///   picked right back (it is still the one that should run: nothing else
    ///   is queued, or it is still first in line). `*running` is it, charged
    ///   and picked (`switches` counted, `lag` relative). It is not queued
    ///   and no token was issued: the kernel switches to nobody.
    /// - `Ok(Picked { queued: Some(token), .. })`: another entity runs next
    ///   and is in `*running`; the one that was running is queued under
    ///   `token`.
    /// - `Err(error)`: it could not be queued (see `enqueue`); `*running` is
    ///   it, charged, and nothing was picked.
    ///
    /// [`Fair`] and [`RoundRobin`] do this in one pass without queuing the
    /// entity when it would be picked right back, reuse the slot of the
    /// entity they pick for the one they queue, and so never allocate and
    /// never fail. The default implementation makes the four calls and
    /// tells the two outcomes apart by `id`, which the kernel keeps unique
    /// among the entities of one policy (one entity per thread).
    ///
    /// The error is [`RequeueError`], the cause without the entity
    /// (`*running` still holds it) or counts.
    fn requeue_and_pick(
        &mut self,
        running: &mut Entity,
        ran_tsc: u64,
        why: EnqueueReason,
    ) -> Result<Picked, RequeueError> {
        self.charge(running, ran_tsc);
        let token = self.enqueue(*running, why).map_err(|error| RequeueError::from(error.cause))?;
        let queued = match self.pick_next() {
            Some(next) => {
                let same = next.id == running.id;
                *running = next;
                if same { None } else { Some(token) }
            }
            // Only a policy that loses what it was just given gets here:
            // take the entity back rather than have it both run and wait.
            None => match self.remove(token) {
                Some(entity) => {
                    *running = Entity { switches: entity.switches.wrapping_add(1), ..entity };
                    None
                }
                None => Some(token),
            },
        };
        Ok(Picked { queued, slice: self.time_slice(running) })
    }

    /// How long the running `entity` may run before it is preempted, in TSC
    /// ticks, given what is queued now.
    fn time_slice(&self, entity: &Entity) -> u64;

    /// Whether the running `entity`, which has run `ran_tsc` ticks since it
    /// was picked, should give way now. Called from the timer tick, and after
    /// an enqueue onto this CPU so that a woken entity that is owed time can
    /// preempt. Never true when nothing is queued: there is nobody to run instead.
    #[must_use = "a rescheduling decision that is dropped leaves the wrong thread running"]
    fn should_preempt(&self, entity: &Entity, ran_tsc: u64) -> bool;

    /// Wake-up preemption: after an entity was enqueued onto this CPU (new,
    /// woken or moved here) while `entity` runs, having run `ran_tsc` ticks
    /// since it was picked, whether it should give way now, or when to ask
    /// again. Unlike the tick's [`should_preempt`](Policy::should_preempt),
    /// which lets the running entity finish its slice unless it is a whole
    /// slice ahead, this may let a queued entity in as soon as the running
    /// one is ahead by more than a small granularity (Linux's
    /// `check_preempt_wakeup`), so that a woken thread does not wait out the
    /// slice of a CPU-bound one. The kernel asks it after such enqueues, and
    /// again at the time an [`AskAt`](WakeupCheck::AskAt) names, until the
    /// answer is `Preempt` or `RunOn` or the entity stops running.
    ///
    /// The default answers [`should_preempt`](Policy::should_preempt):
    /// `Preempt` or `RunOn`.
    #[must_use = "a rescheduling decision that is dropped leaves the wrong thread running"]
    fn check_wakeup(&self, entity: &Entity, ran_tsc: u64) -> WakeupCheck {
        if self.should_preempt(entity, ran_tsc) { WakeupCheck::Preempt } else { WakeupCheck::RunOn }
    }

    /// How many entities are queued.
    fn len(&self) -> usize;

    /// Whether nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes one queued entity for another CPU (an idle CPU pulling work,
    /// or load balancing): the one that gains most by moving, among those
    /// `can_move` accepts (affinity). Examines at most [`STEAL_SCAN_LIMIT`]
    /// entities. Its lag is made relative.
    #[must_use = "the stolen entity is handed to the caller, dropping it loses the thread"]
    fn steal(&mut self, can_move: &mut dyn FnMut(&Entity) -> bool) -> Option<Entity>;

    /// Removes every queued entity into `out`, in the order they would have
    /// run, lags relative; every outstanding token becomes stale. For a policy
    /// change at run time or a CPU going away.
    fn drain(&mut self, out: &mut Vec<Entity>);

    /// Reserves room so that the next `additional` enqueues do not allocate.
    fn reserve(&mut self, additional: usize) -> Result<(), CapacityError>;
}

/// Why an entity is being enqueued; decides how much of its `lag` is honoured.
///
/// Whatever the reason, the lag is first bounded to ± one base slice at
/// weight 1 (`slice_tsc * DEFAULT_WEIGHT` virtual-runtime units), which keeps
/// the arithmetic far from overflow and is never reached in normal operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnqueueReason {
    /// A thread that never ran. Placed no earlier than the queue's current
    /// virtual time (negative lag ignored), so creating threads gains nothing.
    New,
    /// A thread that slept. Its credit (negative lag) is capped at half a base
    /// slice of virtual time, so sleeping cannot bank CPU time.
    Wakeup,
    /// The thread that was running here and was preempted. Its lag is exact:
    /// it goes back to precisely where its virtual runtime says.
    Preempted,
    /// The thread that was running here and gave way voluntarily. Placed
    /// behind every entity queued now, forfeiting any credit, so that the
    /// others run first (the point of yielding, e.g. in a spin-wait).
    Yielded,
    /// A runnable thread moved from another CPU or from the previous policy of
    /// this CPU. Its lag is exact: it keeps its place relative to the queue.
    Migrated,
}

/// The kinds of policy [`new_policy`] can build.
///
/// Kinds to come (see `docs/sched.md`): a table-driven policy that
/// co-schedules affine threads on sibling hyperthreads, and EDF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// [`Fair`]: weighted virtual-runtime fairness.
    Fair,
    /// [`RoundRobin`]: FIFO with a fixed slice.
    RoundRobin,
}

impl PolicyKind {
    /// Every kind, for command-line parsing and tests.
    pub const ALL: [PolicyKind; 2] = [PolicyKind::Fair, PolicyKind::RoundRobin];

    /// The name the policy reports from [`Policy::name`].
    pub const fn name(self) -> &'static str {
        match self {
            PolicyKind::Fair => "fair",
            PolicyKind::RoundRobin => "round-robin",
        }
    }

    /// The kind called `name`, as [`PolicyKind::name`] spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Builds a policy of `kind` with `config`, for a CPU to use from now on.
pub fn new_policy(kind: PolicyKind, config: Config) -> Result<Box<dyn Policy>, ConfigError> {
    Ok(match kind {
        PolicyKind::Fair => Box::new(Fair::new(config)?),
        PolicyKind::RoundRobin => Box::new(RoundRobin::new(config)?),
    })
}

/// How [`Fair`] turns running into virtual runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accounting {
    /// Each run advances virtual runtime by `ran_tsc * DEFAULT_WEIGHT /
    /// weight`: shares of CPU time proportional to weight.
    Tsc,
    /// Each run advances virtual runtime by `slice_tsc * DEFAULT_WEIGHT /
    /// weight`, however long it lasted: shares of *turns* proportional to
    /// weight. COCONUT-SVSM's switch-count ordering, weighted, and placed by
    /// lag like the TSC mode so that migration and sleep stay fair. For
    /// cooperative threads and when the TSC cannot be trusted.
    SwitchCount,
}

/// Largest accepted [`Config::slice_tsc`], 2^40 ticks (about 18 minutes at
/// 1 GHz). Keeps every lag bound (`slice_tsc * DEFAULT_WEIGHT`) below 2^50, so
/// virtual-runtime arithmetic cannot overflow.
pub const MAX_SLICE_TSC: u64 = 1 << 40;

/// Settings shared by the policies; times in TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// The base slice. [`RoundRobin`] gives every entity this long. [`Fair`]
    /// uses it as the period within which every queued entity runs once,
    /// split among them by weight (Linux's "target latency").
    pub slice_tsc: u64,
    /// Shortest slice [`Fair`] hands out however many entities are queued, and
    /// the shortest run after which a woken entity may preempt: bounds the
    /// rate of context switches.
    pub min_granularity_tsc: u64,
    /// How [`Fair`] accounts for running.
    pub accounting: Accounting,
}

impl Config {
    /// The default settings for a TSC of `tsc_hz`: a 6 ms slice, 0.75 ms
    /// minimum granularity (Linux's defaults for one CPU), TSC accounting.
    pub const fn for_tsc_hz(tsc_hz: u64) -> Self {
        Self {
            slice_tsc: ticks_for_microseconds(tsc_hz, 6_000),
            min_granularity_tsc: ticks_for_microseconds(tsc_hz, 750),
            accounting: Accounting::Tsc,
        }
    }

    /// Checks the settings; [`new_policy`] and the policies' constructors call it.
    pub const fn validate(&self) -> Result<(), ConfigError> {
        if self.slice_tsc == 0 {
            return Err(ConfigError::ZeroSlice);
        }
        if self.slice_tsc > MAX_SLICE_TSC {
            return Err(ConfigError::SliceTooLong { slice_tsc: self.slice_tsc });
        }
        if self.min_granularity_tsc == 0 {
            return Err(ConfigError::ZeroGranularity);
        }
        if self.min_granularity_tsc > self.slice_tsc {
            return Err(ConfigError::GranularityAboveSlice {
                min_granularity_tsc: self.min_granularity_tsc,
                slice_tsc: self.slice_tsc,
            });
        }
        Ok(())
    }

    /// Most virtual-runtime credit a woken entity keeps: half a base slice.
    pub(crate) const fn sleeper_credit_vruntime(&self) -> i64 {
        // `validate` bounds `slice_tsc` by 2^40, so this fits.
        (self.slice_tsc / 2) as i64
    }

    /// Bound on any lag's magnitude: one base slice at weight 1.
    pub(crate) const fn max_lag_vruntime(&self) -> i64 {
        // At most 2^40 * 2^10 after `validate`.
        (self.slice_tsc * DEFAULT_WEIGHT as u64) as i64
    }
}

impl Default for Config {
    /// [`Config::for_tsc_hz`] at 1 GHz, for tests and for a kernel that has
    /// not calibrated its TSC yet.
    fn default() -> Self {
        Self::for_tsc_hz(1_000_000_000)
    }
}

const fn ticks_for_microseconds(tsc_hz: u64, microseconds: u64) -> u64 {
    let ticks = tsc_hz as u128 * microseconds as u128 / 1_000_000;
    if ticks > u64::MAX as u128 { u64::MAX } else { ticks as u64 }
}

/// A [`Config`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigError {
    /// `slice_tsc` is 0: every tick would preempt.
    ZeroSlice,
    /// `slice_tsc` is above [`MAX_SLICE_TSC`].
    SliceTooLong {
        /// The slice asked for.
        slice_tsc: u64,
    },
    /// `min_granularity_tsc` is 0: switching would be unbounded.
    ZeroGranularity,
    /// `min_granularity_tsc` is longer than the slice it should subdivide.
    GranularityAboveSlice {
        /// The granularity asked for.
        min_granularity_tsc: u64,
        /// The slice it exceeds.
        slice_tsc: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::ZeroSlice => write!(f, "scheduler slice_tsc is 0"),
            ConfigError::SliceTooLong { slice_tsc } => {
                write!(f, "scheduler slice_tsc {slice_tsc} is above the limit {MAX_SLICE_TSC}")
            }
            ConfigError::ZeroGranularity => write!(f, "scheduler min_granularity_tsc is 0"),
            ConfigError::GranularityAboveSlice { min_granularity_tsc, slice_tsc } => {
                write!(f, "scheduler min_granularity_tsc {min_granularity_tsc} is above slice_tsc {slice_tsc}")
            }
        }
    }
}

impl core::error::Error for ConfigError {}

/// Why a policy could not make room for more entities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapacityError {
    /// More entities than a policy can index (its slots are numbered by `u32`).
    TooManyEntities {
        /// How many would have been queued or reserved.
        requested: usize,
    },
    /// The allocator refused.
    OutOfMemory {
        /// How many entities' room was asked for.
        requested: usize,
    },
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CapacityError::TooManyEntities { requested } => {
                write!(f, "{requested} entities are more than a run queue can index")
            }
            CapacityError::OutOfMemory { requested } => {
                write!(f, "no memory for a run queue of {requested} entities")
            }
        }
    }
}

impl core::error::Error for CapacityError {}

/// [`Policy::enqueue`] failed; the entity is handed back, not lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnqueueError {
    /// The entity that was not queued.
    pub entity: Entity,
    /// Why.
    pub cause: CapacityError,
}

impl fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot enqueue thread {}: {}", self.entity.id.0, self.cause)
    }
}

impl core::error::Error for EnqueueError {}

/// What [`Policy::check_wakeup`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WakeupCheck {
    /// The running entity should give way now.
    Preempt,
    /// Not yet: ask again once the running entity has run this many TSC
    /// ticks since it was picked (always more than it has run so far, and
    /// less than its slice).
    AskAt(u64),
    /// Not before the end of its slice, which the tick handles.
    RunOn,
}

/// What [`Policy::requeue_and_pick`] did: whether the entity that was
/// running was queued (and under which token), and the time slice of the
/// entity that runs next, in TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Picked {
    /// `None`: the entity that was running runs on. `Some`: it is queued
    /// under this token, and another entity runs next.
    pub queued: Option<Token>,
    /// [`Policy::time_slice`] of the entity that runs next, as the queue
    /// stands after the call: the kernel arms its timer with it.
    pub slice: u64,
}

/// [`Policy::requeue_and_pick`] could not queue the entity that was running;
/// it is still in `*running`, charged. A [`CapacityError`] without its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequeueError {
    /// More entities than a policy can index.
    TooManyEntities,
    /// The allocator refused.
    OutOfMemory,
}

impl From<CapacityError> for RequeueError {
    fn from(cause: CapacityError) -> Self {
        match cause {
            CapacityError::TooManyEntities { .. } => RequeueError::TooManyEntities,
            CapacityError::OutOfMemory { .. } => RequeueError::OutOfMemory,
        }
    }
}

impl fmt::Display for RequeueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequeueError::TooManyEntities => write!(f, "cannot requeue: more entities than a run queue can index"),
            RequeueError::OutOfMemory => write!(f, "cannot requeue: no memory for the run queue"),
        }
    }
}

impl core::error::Error for RequeueError {}

/// Names one queued entity of one policy object, for [`Policy::remove`].
///
/// A slot index plus the slot's generation, so that a token kept after its
/// entity left (picked, stolen, removed, drained) never removes the entity
/// that reuses the slot; plus the policy object's instance number, so that a
/// token presented to the wrong CPU's policy, or to the policy that replaced
/// the one that issued it, is refused too. Generations are 32 bits: a stale
/// token could only match again after its slot was reused 2^32 times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    pub(crate) instance: u32,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// A fresh instance number for a policy object's tokens.
///
/// The counter only tells policy objects apart; no decision depends on its
/// value, so its order across CPUs does not make scheduling nondeterministic.
pub(crate) fn next_instance() -> u32 {
    static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(1);
    NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
}

/// Most slots a policy can index: slot numbers are `u32` and `u32::MAX` means "none".
pub(crate) const MAX_SLOTS: usize = u32::MAX as usize;

/// Grows `slots` so that `additional` more fit, without aborting on failure.
pub(crate) fn try_reserve_slots<T>(
    slots: &mut Vec<T>,
    free_slots: usize,
    additional: usize,
) -> Result<(), CapacityError> {
    let needed = additional.saturating_sub(free_slots);
    let requested = slots.len().saturating_add(needed);
    if requested > MAX_SLOTS {
        return Err(CapacityError::TooManyEntities { requested });
    }
    slots.try_reserve(needed).map_err(|_| CapacityError::OutOfMemory { requested })
}
