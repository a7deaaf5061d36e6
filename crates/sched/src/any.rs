//! [`AnyPolicy`]: one of the built-in policies, or any other, behind one
//! type without a virtual call for the built-in ones.
//!
//! The kernel calls its CPU's policy several times on every switch. Through a
//! `Box<dyn Policy>` each call is an indirect call that nothing can inline;
//! through `AnyPolicy` a call to [`Fair`] or [`RoundRobin`] is a branch on
//! the variant and a direct call the compiler may inline into the switch.
//! Policies from outside the crate still plug in as [`AnyPolicy::Other`].

use alloc::{boxed::Box, vec::Vec};

use crate::{
    entity::Entity,
    fair::Fair,
    policy::{
        CapacityError, Config, ConfigError, EnqueueError, EnqueueReason, Picked, Policy, PolicyKind, RequeueError,
        Token, WakeupCheck,
    },
    round_robin::RoundRobin,
};

/// A built-in policy, or any other.
pub enum AnyPolicy {
    /// The fair policy.
    Fair(Fair),
    /// Round robin.
    RoundRobin(RoundRobin),
    /// Any other policy, called through its trait object.
    Other(Box<dyn Policy>),
}

impl AnyPolicy {
    /// A built-in policy of `kind` with `config`.
    pub fn new(kind: PolicyKind, config: Config) -> Result<Self, ConfigError> {
        Ok(match kind {
            PolicyKind::Fair => AnyPolicy::Fair(Fair::new(config)?),
            PolicyKind::RoundRobin => AnyPolicy::RoundRobin(RoundRobin::new(config)?),
        })
    }
}

/// Calls `$call` on whichever policy `$self` holds.
macro_rules! each {
    ($self:expr, $policy:ident => $call:expr) => {
        match $self {
            AnyPolicy::Fair($policy) => $call,
            AnyPolicy::RoundRobin($policy) => $call,
            AnyPolicy::Other($policy) => $call,
        }
    };
}

impl Policy for AnyPolicy {
    fn name(&self) -> &'static str {
        each!(self, policy => policy.name())
    }

    fn kind(&self) -> PolicyKind {
        each!(self, policy => policy.kind())
    }

    #[inline]
    fn enqueue(&mut self, entity: Entity, why: EnqueueReason) -> Result<Token, EnqueueError> {
        each!(self, policy => policy.enqueue(entity, why))
    }

    #[inline]
    fn remove(&mut self, token: Token) -> Option<Entity> {
        each!(self, policy => policy.remove(token))
    }

    #[inline]
    fn pick_next(&mut self) -> Option<Entity> {
        each!(self, policy => policy.pick_next())
    }

    #[inline]
    fn charge(&mut self, entity: &mut Entity, ran_tsc: u64) {
        each!(self, policy => policy.charge(entity, ran_tsc))
    }

    #[inline(always)]
    fn requeue_and_pick(
        &mut self,
        running: &mut Entity,
        ran_tsc: u64,
        why: EnqueueReason,
    ) -> Result<Picked, RequeueError> {
        each!(self, policy => policy.requeue_and_pick(running, ran_tsc, why))
    }

    #[inline]
    fn time_slice(&self, entity: &Entity) -> u64 {
        each!(self, policy => policy.time_slice(entity))
    }

    #[inline]
    fn should_preempt(&self, entity: &Entity, ran_tsc: u64) -> bool {
        each!(self, policy => policy.should_preempt(entity, ran_tsc))
    }

    #[inline]
    fn check_wakeup(&self, entity: &Entity, ran_tsc: u64) -> WakeupCheck {
        each!(self, policy => policy.check_wakeup(entity, ran_tsc))
    }

    #[inline]
    fn len(&self) -> usize {
        each!(self, policy => policy.len())
    }

    fn steal(&mut self, can_move: &mut dyn FnMut(&Entity) -> bool) -> Option<Entity> {
        each!(self, policy => policy.steal(can_move))
    }

    fn drain(&mut self, out: &mut Vec<Entity>) {
        each!(self, policy => policy.drain(out))
    }

    fn reserve(&mut self, additional: usize) -> Result<(), CapacityError> {
        each!(self, policy => policy.reserve(additional))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{entity::ThreadId, policy::new_policy};

    #[test]
    fn every_variant_forwards_to_its_policy() {
        let config = Config::default();
        let variants = [
            (AnyPolicy::new(PolicyKind::Fair, config).unwrap(), PolicyKind::Fair),
            (AnyPolicy::new(PolicyKind::RoundRobin, config).unwrap(), PolicyKind::RoundRobin),
            (AnyPolicy::Other(new_policy(PolicyKind::RoundRobin, config).unwrap()), PolicyKind::RoundRobin),
        ];
        for (mut policy, kind) in variants {
            assert_eq!(policy.kind(), kind);
            assert_eq!(policy.name(), kind.name());
            let first = policy.enqueue(Entity::new(ThreadId(1)), EnqueueReason::New).unwrap();
            policy.enqueue(Entity::new(ThreadId(2)), EnqueueReason::New).unwrap();
            assert_eq!(policy.len(), 2);
            let mut running = policy.pick_next().unwrap();
            assert_eq!(running.id, ThreadId(1), "{kind:?}: first come, first served");
            assert_eq!(policy.remove(first), None, "a picked entity's token is stale");
            let picked = policy.requeue_and_pick(&mut running, 1_000, EnqueueReason::Yielded).unwrap();
            assert_eq!(running.id, ThreadId(2));
            assert_eq!(picked.slice, policy.time_slice(&running));
            assert!(picked.queued.is_some());
            let mut out = Vec::new();
            policy.drain(&mut out);
            assert_eq!(out.len(), 1);
            assert!(policy.is_empty());
        }
    }
}
