//! [`RoundRobin`]: first in, first out, every entity the same fixed slice.
//!
//! The queue is a doubly linked list threaded through an arena of slots by
//! `u32` links, so that removing by token is O(1) and nothing allocates once
//! capacity is reserved. Free slots form a list through their `next` link.
//!
//! Round robin has no virtual time: weights are ignored and every entity that
//! leaves carries `lag = 0`, "level with the queue". A policy change from
//! round robin to [`Fair`](crate::Fair) therefore keeps the FIFO order, since
//! equal lags are broken by order of enqueue, which is the drain order.

use alloc::vec::Vec;

use crate::entity::Entity;
use crate::policy::{
    CapacityError, Config, ConfigError, EnqueueError, EnqueueReason, MAX_SLOTS, Picked, Policy, PolicyKind,
    RequeueError, STEAL_SCAN_LIMIT, Token, next_instance, try_reserve_slots,
};

const NIL: u32 = u32::MAX;

/// One arena slot, one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Node {
    entity: Entity,
    /// The slot before this one; not kept up to date for the head, which
    /// has none (so that taking the head touches only the head).
    previous: u32,
    /// The slot after this one, `NIL` for the tail; the next free slot for
    /// a free one.
    next: u32,
    /// Bumped each time the slot is freed or handed to another entity.
    generation: u32,
    live: bool,
}

/// FIFO with a fixed slice; see the module documentation.
///
/// Costs: `pick_next`, `enqueue`, `remove`, `requeue_and_pick` O(1); `steal`
/// O([`STEAL_SCAN_LIMIT`]); `drain` O(n). No allocation once capacity is
/// reserved.
#[derive(Debug)]
pub struct RoundRobin {
    nodes: Vec<Node>,
    /// First and last queued slots, both `NIL` when nothing is queued.
    head: u32,
    tail: u32,
    free_head: u32,
    len: usize,
    instance: u32,
    config: Config,
}

impl RoundRobin {
    /// An empty queue with `config`; only `slice_tsc` matters to round robin.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { nodes: Vec::new(), head: NIL, tail: NIL, free_head: NIL, len: 0, instance: next_instance(), config })
    }

    /// The configuration this queue was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Makes the written `slot` the tail, after `tail` (the current one).
    #[inline(always)]
    fn link_at_tail(&mut self, slot: u32, tail: u32) {
        match self.nodes.get_mut(tail as usize) {
            Some(tail_node) => tail_node.next = slot,
            None => self.head = slot,
        }
        self.tail = slot;
        self.len += 1;
    }

    /// `enqueue` with no free slot: grows the arena, out of line so that
    /// the common case keeps no registers across a call.
    #[cold]
    #[inline(never)]
    fn enqueue_growing(&mut self, entity: Entity) -> Result<Token, EnqueueError> {
        let count = self.nodes.len();
        if count >= MAX_SLOTS {
            let cause = CapacityError::TooManyEntities { requested: count + 1 };
            return Err(EnqueueError { entity, cause });
        }
        try_reserve_slots(&mut self.nodes, 0, 1).map_err(|cause| EnqueueError { entity, cause })?;
        let tail = self.tail;
        self.nodes.push(Node { entity, previous: tail, next: NIL, generation: 0, live: true });
        let slot = count as u32;
        self.link_at_tail(slot, tail);
        Ok(Token { instance: self.instance, slot, generation: 0 })
    }

    /// Unlinks the live `slot`, frees it and returns its entity, lag level.
    fn take(&mut self, slot: u32) -> Option<Entity> {
        let Node { entity, previous, next, .. } = *self.nodes.get(slot as usize)?;
        let is_head = slot == self.head;
        if is_head {
            self.head = next;
        } else if let Some(previous_node) = self.nodes.get_mut(previous as usize) {
            previous_node.next = next;
        }
        if slot == self.tail {
            self.tail = if is_head { NIL } else { previous };
        } else if !is_head && let Some(next_node) = self.nodes.get_mut(next as usize) {
            next_node.previous = previous;
        }
        self.free(slot);
        Some(Entity { lag: 0, ..entity })
    }

    #[inline(always)]
    fn free(&mut self, slot: u32) {
        let free_head = self.free_head;
        if let Some(node) = self.nodes.get_mut(slot as usize) {
            node.live = false;
            node.generation = node.generation.wrapping_add(1);
            node.next = free_head;
            self.free_head = slot;
            self.len -= 1;
        }
    }
}

/// `charge`: the run's length, no virtual time. The sum saturates, on a
/// branch marked cold: 2^64 ticks are centuries.
#[inline(always)]
fn charge(entity: &mut Entity, ran_tsc: u64) {
    let (sum, carried) = entity.sum_exec_tsc.overflowing_add(ran_tsc);
    entity.sum_exec_tsc = if carried {
        core::hint::cold_path();
        u64::MAX
    } else {
        sum
    };
    entity.lag = 0;
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        PolicyKind::RoundRobin.name()
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::RoundRobin
    }

    fn enqueue(&mut self, entity: Entity, _why: EnqueueReason) -> Result<Token, EnqueueError> {
        // Every reason joins the tail: FIFO is the whole policy.
        let slot = self.free_head;
        let Some(node) = self.nodes.get_mut(slot as usize) else {
            return self.enqueue_growing(entity);
        };
        self.free_head = node.next;
        let tail = self.tail;
        node.entity = entity;
        node.previous = tail;
        node.next = NIL;
        node.live = true;
        let generation = node.generation;
        self.link_at_tail(slot, tail);
        Ok(Token { instance: self.instance, slot, generation })
    }

    fn remove(&mut self, token: Token) -> Option<Entity> {
        let node = self.nodes.get(token.slot as usize)?;
        if token.instance != self.instance || !node.live || node.generation != token.generation {
            return None;
        }
        self.take(token.slot)
    }

    fn pick_next(&mut self) -> Option<Entity> {
        let head = self.head;
        let node = self.nodes.get_mut(head as usize)?;
        let entity = node.entity;
        let next = node.next;
        node.live = false;
        node.generation = node.generation.wrapping_add(1);
        node.next = self.free_head;
        self.free_head = head;
        self.head = next;
        if next == NIL {
            self.tail = NIL;
        }
        self.len -= 1;
        Some(Entity { lag: 0, switches: entity.switches.wrapping_add(1), ..entity })
    }

    fn charge(&mut self, entity: &mut Entity, ran_tsc: u64) {
        charge(entity, ran_tsc);
    }

    #[inline(always)]
    fn requeue_and_pick(
        &mut self,
        running: &mut Entity,
        ran_tsc: u64,
        _why: EnqueueReason,
    ) -> Result<Picked, RequeueError> {
        // `charge`, but for the lag: level whoever ends up in `*running`.
        let (sum, carried) = running.sum_exec_tsc.overflowing_add(ran_tsc);
        running.sum_exec_tsc = if carried {
            core::hint::cold_path();
            u64::MAX
        } else {
            sum
        };
        let head = self.head;
        let Some(node) = self.nodes.get_mut(head as usize) else {
            // Alone: it would be queued and picked right back.
            running.lag = 0;
            running.switches = running.switches.wrapping_add(1);
            return Ok(Picked { queued: None, slice: self.config.slice_tsc });
        };
        // The head runs; the running entity takes over its slot, which
        // moves to the tail. (The lag it leaves there means nothing: round
        // robin hands every entity back level.)
        // (Copies, not `mem::swap`, which does not always inline.)
        *running = core::mem::replace(&mut node.entity, *running);
        node.generation = node.generation.wrapping_add(1);
        let generation = node.generation;
        let next = node.next;
        if next != NIL {
            let tail = self.tail;
            node.next = NIL;
            node.previous = tail;
            if let Some(tail_node) = self.nodes.get_mut(tail as usize) {
                tail_node.next = head;
            }
            self.head = next;
            self.tail = head;
        }
        running.lag = 0;
        running.switches = running.switches.wrapping_add(1);
        Ok(Picked {
            queued: Some(Token { instance: self.instance, slot: head, generation }),
            slice: self.config.slice_tsc,
        })
    }

    fn time_slice(&self, _entity: &Entity) -> u64 {
        self.config.slice_tsc
    }

    fn should_preempt(&self, _entity: &Entity, ran_tsc: u64) -> bool {
        self.len > 0 && ran_tsc >= self.config.slice_tsc
    }

    fn len(&self) -> usize {
        self.len
    }

    fn steal(&mut self, can_move: &mut dyn FnMut(&Entity) -> bool) -> Option<Entity> {
        // The tail waits longest for its turn here.
        let mut candidate = self.tail;
        for _ in 0..STEAL_SCAN_LIMIT {
            let node = self.nodes.get(candidate as usize)?;
            if can_move(&Entity { lag: 0, ..node.entity }) {
                return self.take(candidate);
            }
            // The head's previous link is stale: the walk ends there.
            candidate = if candidate == self.head { NIL } else { node.previous };
        }
        None
    }

    fn drain(&mut self, out: &mut Vec<Entity>) {
        out.reserve(self.len);
        while let Some(entity) = self.take(self.head) {
            out.push(entity);
        }
    }

    fn reserve(&mut self, additional: usize) -> Result<(), CapacityError> {
        let free_slots = self.nodes.len() - self.len;
        try_reserve_slots(&mut self.nodes, free_slots, additional)
    }
}
