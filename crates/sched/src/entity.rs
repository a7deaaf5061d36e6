//! The schedulable entity: the minimal descriptor a policy sees of a thread.
//!
//! The kernel's thread table owns the threads; a policy only ever holds an
//! [`Entity`], a small `Copy` value that the kernel stores in the thread while
//! it is not queued and hands back on [`Policy::enqueue`](crate::Policy::enqueue).
//! Keeping the descriptor minimal (as Hypatia's task descriptors are) keeps the
//! policies independent of the thread's layout and cheap to move between CPUs.

/// Names a thread; the kernel chooses the numbers, the policies only compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThreadId(pub u64);

/// The share weight of an ordinary thread. A thread of weight `2 *
/// DEFAULT_WEIGHT` gets twice the CPU time of an ordinary one under [`Fair`](crate::Fair).
pub const DEFAULT_WEIGHT: u32 = 1024;

/// What a policy knows of a thread, held by the kernel while the thread is not
/// queued and by the policy while it is.
///
/// The policies update the bookkeeping fields (`lag`, `sum_exec_tsc`,
/// `switches`); the kernel sets `id` and `weight` and otherwise only carries
/// the value around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entity {
    /// Which thread this is.
    pub id: ThreadId,
    /// Share weight; [`DEFAULT_WEIGHT`] for an ordinary thread. Zero is not a
    /// valid weight and is treated as 1 (the smallest share) rather than
    /// rejected, so that no input can make a policy divide by zero or panic;
    /// [`Entity::effective_weight`] applies that rule.
    pub weight: u32,
    /// Virtual-runtime lag relative to the queue the entity last left, in
    /// virtual-runtime units: `vruntime - min_vruntime` at the moment it left.
    /// Negative means the entity is owed time, positive that it ran ahead.
    /// Meaningful only while the entity is not queued; the policy that queues
    /// it places it at its own `min_vruntime + lag` (clamped, see
    /// `docs/sched.md`). Policies without virtual time leave it at 0.
    pub lag: i64,
    /// CPU time the thread has actually run, accumulated over its life, in TSC
    /// ticks. A sum of run lengths, never a timestamp.
    pub sum_exec_tsc: u64,
    /// How many times a policy picked the thread to run.
    pub switches: u64,
}

impl Entity {
    /// A fresh entity of the default weight that has never run.
    pub const fn new(id: ThreadId) -> Self {
        Self::with_weight(id, DEFAULT_WEIGHT)
    }

    /// A fresh entity of the given weight that has never run.
    pub const fn with_weight(id: ThreadId, weight: u32) -> Self {
        Self { id, weight, lag: 0, sum_exec_tsc: 0, switches: 0 }
    }

    /// The weight the policies compute with: `weight`, or 1 when it is 0.
    pub const fn effective_weight(&self) -> u32 {
        if self.weight == 0 { 1 } else { self.weight }
    }
}
