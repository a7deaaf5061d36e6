//! The run queue of [`Fair`](crate::Fair): entities ordered by virtual
//! runtime, in an index-based red-black tree plus a sorted list (the *run*)
//! for the entities that joined behind everybody.
//!
//! Slots live in an arena (`Vec`) and link to each other by `u32` slot
//! numbers, so the queue needs no `unsafe`, no allocation per operation once
//! capacity is reserved, and a slot number doubles as the stable identity a
//! [`Token`](crate::Token) names: removal relinks nodes rather than copying
//! keys between them, so a queued entity keeps its slot until it leaves. Each
//! slot carries a generation, bumped when the slot is freed, to tell a stale
//! token from the entity that reuses the slot. Free slots form a list through
//! their right link. A slot holds its links and its payload together, one
//! 64-byte cache line: the scheduler's operations touch both, and one bounds
//! check then covers both.
//!
//! # Order
//!
//! The key is the virtual runtime alone; equal keys keep their order of
//! insertion (first come, first served). In the tree, an insertion that
//! meets an equal key goes right, after it, and rotations keep the in-order
//! sequence, so the position is the tie-break and no sequence number is
//! stored or compared.
//!
//! # The run
//!
//! A run queue's commonest pattern is "take the first, put it back behind
//! everybody" (equal weights, and every yield). In a red-black tree that is
//! a deletion at one end and an insertion at the other, each needing
//! rebalancing about every other time. So a key that goes behind every key
//! already queued — not before the run's last and strictly after the tree's
//! last — is appended to the run instead: a doubly linked list, sorted by
//! construction, where appending and taking the head are O(1) without any
//! rebalancing. Other keys go into the tree. The queue's first is the run's
//! head or the tree's first, whichever is smaller, the run's on a tie: a run
//! entry was appended only when it was strictly after the whole tree, so a
//! tree entry with an equal key came later. Both parts are sorted and nothing
//! moves between them, so every operation keeps its worst case: O(1) at the
//! run's ends, O(log n) in the tree.
//!
//! # The tree
//!
//! Both ends of the tree are cached: the leftmost makes popping the first
//! O(1) amortised — red-black deletion does O(1) amortised rebalancing and
//! the leftmost's successor is its right child (a red leaf) or its parent —
//! and the rightmost makes inserting behind the tree O(1) amortised as well.
//! Other inserts and removals are O(log n).
//!
//! The algorithms are the textbook ones (Cormen et al., chapter 13), with the
//! sentinel replaced by [`NIL`], each pair of mirror-image cases written once
//! over a side index (`child[side]`, `child[side ^ 1]`), and the side a
//! missing black hangs from tracked explicitly, since `NIL` has no parent
//! field to borrow. `NIL` is `u32::MAX`, which is never a slot number, so
//! `slots.get(NIL)` is `None`: one bounds check both tests a link for `NIL`
//! and proves the index in range.

use alloc::vec::Vec;

use crate::policy::{CapacityError, MAX_SLOTS, try_reserve_slots};

/// The "no node" link.
pub(crate) const NIL: u32 = u32::MAX;

/// Index of the left link in [`Slot::child`]; the right one is `RIGHT`. In
/// the run, the left link is the previous entry and the right one the next.
const LEFT: usize = 0;
const RIGHT: usize = 1;

/// Whether virtual runtime `a` sorts before `b`.
///
/// Virtual runtimes are compared by their wrapping difference, as Linux
/// does, so they may wrap around 2^64 after years of uptime: the order is
/// right as long as all keys in one queue lie within 2^63 of each other, and
/// the lag bounds keep them within 2^52.
#[inline(always)]
pub(crate) fn precedes(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) < 0
}

/// The smaller of two keys.
#[inline(always)]
fn earlier(a: u64, b: u64) -> u64 {
    if precedes(b, a) { b } else { a }
}

/// The larger of two keys.
#[inline(always)]
fn later(a: u64, b: u64) -> u64 {
    if precedes(a, b) { b } else { a }
}

/// Where a slot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the tree, red.
    Red,
    /// In the tree, black.
    Black,
    /// In the run.
    Run,
    /// On the free list; its generation was bumped when it got there.
    Free,
}

/// One arena slot: links and payload.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Slot<T> {
    vruntime: u64,
    /// Tree: `[left, right]` children. Run: `[previous, next]`, the head's
    /// previous link left stale. Free: `[_, next free]`.
    child: [u32; 2],
    /// Tree only.
    parent: u32,
    /// Bumped each time the slot is freed or handed to another entity.
    generation: u32,
    state: State,
    value: T,
}

/// Where a new node goes.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// At the end of the run.
    Run,
    /// The tree is empty: the new node is its root.
    Root,
    /// Behind every node of the tree: the right child of the rightmost.
    Last,
    /// Before every node of the tree: the left child of the leftmost.
    First,
    /// Under `parent` on `side` (0 left, 1 right), found by descent.
    Under { parent: u32, side: usize },
}

/// What was taken from the front of the queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Popped<T> {
    /// Its key.
    pub(crate) vruntime: u64,
    /// The key of the new first, or `vruntime` if the queue is now empty.
    pub(crate) next_vruntime: u64,
    pub(crate) value: T,
}

/// What [`Queue::requeue`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Requeued<T> {
    /// The new entry would be first, or the queue is empty: nothing changed.
    Kept {
        /// The new entry's key (`behind_all` applied).
        vruntime: u64,
        /// The first key, or the new entry's if the queue is empty.
        next_vruntime: u64,
    },
    /// The first left (`next_vruntime` is the first key now) and the new
    /// entry is queued in `slot`, of `generation`.
    Swapped { left: Popped<T>, slot: u32, generation: u32 },
}

/// Why [`Queue::try_pop_first`] did not pop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PopFallback {
    /// Nothing to pop.
    Empty,
    /// The first is a black leaf of the tree: [`Queue::pop_first_rebalancing`]
    /// must rebalance.
    Rebalance,
}

/// The queue; `T` is the payload stored with each key.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    slots: Vec<Slot<T>>,
    root: u32,
    leftmost: u32,
    rightmost: u32,
    /// First and last of the run, both `NIL` when it is empty.
    run_head: u32,
    run_tail: u32,
    free_head: u32,
    /// Entries in the tree and the run.
    len: usize,
}

impl<T: Copy> Queue<T> {
    pub(crate) const fn new() -> Self {
        Self {
            slots: Vec::new(),
            root: NIL,
            leftmost: NIL,
            rightmost: NIL,
            run_head: NIL,
            run_tail: NIL,
            free_head: NIL,
            len: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes room so that `additional` more inserts do not allocate.
    pub(crate) fn reserve(&mut self, additional: usize) -> Result<(), CapacityError> {
        let free_slots = self.slots.len() - self.len;
        try_reserve_slots(&mut self.slots, free_slots, additional)
    }

    /// The generation of `slot` if it holds a queued entry.
    #[inline]
    pub(crate) fn live_generation(&self, slot: u32) -> Option<u32> {
        let node = self.slots.get(slot as usize)?;
        (node.state != State::Free).then_some(node.generation)
    }

    /// The smallest key.
    #[inline(always)]
    pub(crate) fn first_vruntime(&self) -> Option<u64> {
        let slots = &self.slots[..];
        match (slots.get(self.run_head as usize), slots.get(self.leftmost as usize)) {
            (Some(head), Some(first)) => Some(earlier(head.vruntime, first.vruntime)),
            (Some(node), None) | (None, Some(node)) => Some(node.vruntime),
            (None, None) => None,
        }
    }

    /// The largest key; for tests.
    #[cfg(test)]
    pub(crate) fn last_vruntime(&self) -> Option<u64> {
        let slots = &self.slots[..];
        match (slots.get(self.run_tail as usize), slots.get(self.rightmost as usize)) {
            (Some(tail), Some(last)) => Some(later(tail.vruntime, last.vruntime)),
            (Some(node), None) | (None, Some(node)) => Some(node.vruntime),
            (None, None) => None,
        }
    }

    /// Where a key goes: behind equal keys.
    #[inline(always)]
    fn place(&self, vruntime: u64) -> Place {
        let slots = &self.slots[..];
        let after_run = slots.get(self.run_tail as usize).is_none_or(|tail| !precedes(vruntime, tail.vruntime));
        let Some(last) = slots.get(self.rightmost as usize) else {
            return if after_run { Place::Run } else { Place::Root };
        };
        if after_run && precedes(last.vruntime, vruntime) {
            return Place::Run;
        }
        // Behind or level with the tree's last needs no descent, nor does
        // strictly before its first.
        if !precedes(vruntime, last.vruntime) {
            return Place::Last;
        }
        if slots.get(self.leftmost as usize).is_some_and(|first| precedes(vruntime, first.vruntime)) {
            return Place::First;
        }
        // The descent: one bounds check per level both proves the index in
        // range and stops at the missing child.
        let mut parent = NIL;
        let mut side = LEFT;
        let mut slot = self.root;
        while let Some(node) = slots.get(slot as usize) {
            parent = slot;
            side = usize::from(!precedes(vruntime, node.vruntime));
            slot = node.child[side];
        }
        Place::Under { parent, side }
    }

    /// Whether a key goes at the end of the run: not before the run's last
    /// and strictly after the tree's last.
    #[inline(always)]
    fn appends(&self, vruntime: u64) -> bool {
        let slots = &self.slots[..];
        slots.get(self.run_tail as usize).is_none_or(|tail| !precedes(vruntime, tail.vruntime))
            && slots.get(self.rightmost as usize).is_none_or(|last| precedes(last.vruntime, vruntime))
    }

    /// Takes a slot off the free list, if there is one.
    #[inline(always)]
    fn take_free(&mut self) -> Option<u32> {
        let slot = self.free_head;
        let node = self.slots.get(slot as usize)?;
        self.free_head = node.child[RIGHT];
        Some(slot)
    }

    /// Writes `value` keyed `vruntime` into the detached `slot` and appends
    /// it to the run (whose end is its place); returns the slot's generation.
    #[inline(always)]
    fn append_slot(&mut self, slot: u32, vruntime: u64, value: T) -> u32 {
        let slots = &mut self.slots[..];
        let tail = self.run_tail;
        let Some(node) = slots.get_mut(slot as usize) else {
            // Unreachable: the caller holds the slot.
            return 0;
        };
        let generation = node.generation;
        node.vruntime = vruntime;
        node.child = [tail, NIL];
        node.state = State::Run;
        node.value = value;
        match slots.get_mut(tail as usize) {
            Some(tail_node) => tail_node.child[RIGHT] = slot,
            None => self.run_head = slot,
        }
        self.run_tail = slot;
        self.len += 1;
        generation
    }

    /// The common insertion, inlined into the scheduler's hot paths: at the
    /// end of the run, into a free slot. The key is `vruntime`, or if
    /// `behind_all` the last key if that is later. Returns the slot and its
    /// generation; if the key does not go at the end of the run or no slot
    /// is free, changes nothing and returns the key for [`Queue::insert`].
    #[inline(always)]
    pub(crate) fn try_append(
        &mut self,
        vruntime: u64,
        value: impl FnOnce() -> T,
        behind_all: bool,
    ) -> Result<(u32, u32), u64> {
        let slots = &self.slots[..];
        // An empty part stands in as a key that lets any later key through:
        // the run's last as `vruntime` itself, the tree's as one before it.
        let tail = slots.get(self.run_tail as usize).map_or(vruntime, |node| node.vruntime);
        let tree_last = slots.get(self.rightmost as usize).map_or(vruntime.wrapping_sub(1), |node| node.vruntime);
        let vruntime = if behind_all { later(later(vruntime, tail), tree_last) } else { vruntime };
        if precedes(vruntime, tail) || !precedes(tree_last, vruntime) {
            return Err(vruntime);
        }
        let Some(slot) = self.take_free() else {
            return Err(vruntime);
        };
        Ok((slot, self.append_slot(slot, vruntime, value())))
    }

    /// Inserts `value` keyed `vruntime` behind equal keys; returns its slot
    /// and the slot's generation. The general case of [`Queue::try_append`].
    pub(crate) fn insert(&mut self, vruntime: u64, value: T) -> Result<(u32, u32), CapacityError> {
        let slot = match self.take_free() {
            Some(slot) => slot,
            None => {
                // No free slot: every slot is queued.
                let count = self.slots.len();
                if count >= MAX_SLOTS {
                    return Err(CapacityError::TooManyEntities { requested: count + 1 });
                }
                // `try_reserve` grows geometrically like `push` does, but
                // reports failure instead of aborting with interrupts off.
                try_reserve_slots(&mut self.slots, 0, 1)?;
                let fresh = Slot { vruntime, child: [NIL, NIL], parent: NIL, generation: 0, state: State::Free, value };
                self.slots.push(fresh);
                count as u32
            }
        };
        Ok((slot, self.put(slot, vruntime, value)))
    }

    /// Writes `value` keyed `vruntime` into the detached `slot` and links it
    /// where the key goes; returns the slot's generation.
    #[inline(never)]
    fn put(&mut self, slot: u32, vruntime: u64, value: T) -> u32 {
        let place = self.place(vruntime);
        let (parent, side) = match place {
            Place::Run => return self.append_slot(slot, vruntime, value),
            Place::Root => (NIL, RIGHT),
            Place::Last => (self.rightmost, RIGHT),
            Place::First => (self.leftmost, LEFT),
            Place::Under { parent, side } => (parent, side),
        };
        let slots = &mut self.slots[..];
        let Some(node) = slots.get_mut(slot as usize) else {
            // Unreachable: the caller holds the slot.
            return 0;
        };
        let generation = node.generation;
        let state = if parent == NIL { State::Black } else { State::Red };
        *node = Slot { vruntime, child: [NIL, NIL], parent, generation, state, value };
        self.len += 1;
        match place {
            Place::Root => {
                self.root = slot;
                self.leftmost = slot;
                self.rightmost = slot;
                return generation;
            }
            Place::Last => self.rightmost = slot,
            Place::First => self.leftmost = slot,
            Place::Run | Place::Under { .. } => {}
        }
        if let Some(parent_node) = slots.get_mut(parent as usize) {
            parent_node.child[side] = slot;
            if parent_node.state == State::Red {
                insert_fixup(slots, &mut self.root, slot, parent);
            }
        }
        generation
    }

    /// Puts the detached `slot` on the free list.
    #[inline(always)]
    fn push_free(&mut self, slot: u32) {
        let free_head = self.free_head;
        if let Some(node) = self.slots.get_mut(slot as usize) {
            node.child[RIGHT] = free_head;
            self.free_head = slot;
        }
    }

    /// Marks the unlinked `slot` as having left: not live, its generation
    /// bumped so that its token goes stale.
    #[inline(always)]
    fn detach(node: &mut Slot<T>) {
        node.state = State::Free;
        node.generation = node.generation.wrapping_add(1);
    }

    /// Removes the first entry and returns its slot, detached (left, but not
    /// on the free list), with what it held, when that needs no rebalancing
    /// (the usual case); otherwise changes nothing and says why.
    ///
    /// Taking the run's head is unlinking a list head. The tree's leftmost
    /// has no left child, so its right subtree has black height 1 and is
    /// either empty or a single red node. Hence its successor is that right
    /// child or else its parent, and removing it is either "replace it by the
    /// red child, painted black" or "remove a leaf", which needs rebalancing
    /// only if the leaf is black and not the root.
    ///
    /// With `FREE`, the slot goes on the free list too (the value stays in it
    /// until the slot is reused).
    #[inline(always)]
    fn try_unlink_first<const FREE: bool>(&mut self) -> Result<(u32, Popped<T>), PopFallback> {
        let slots = &mut self.slots[..];
        let head = self.run_head;
        let first = self.leftmost;
        let tree_first = slots.get(first as usize).map(|node| node.vruntime);
        if let Some(node) = slots.get_mut(head as usize)
            && tree_first.is_none_or(|tree_first| !precedes(tree_first, node.vruntime))
        {
            let Slot { vruntime, child: [_, next], value, .. } = *node;
            Self::detach(node);
            if FREE {
                node.child[RIGHT] = self.free_head;
                self.free_head = head;
            }
            self.len -= 1;
            self.run_head = next;
            let next_vruntime = match (slots.get(next as usize), tree_first) {
                (Some(next_node), Some(tree_first)) => earlier(next_node.vruntime, tree_first),
                (Some(next_node), None) => next_node.vruntime,
                (None, tree_first) => {
                    self.run_tail = NIL;
                    tree_first.unwrap_or(vruntime)
                }
            };
            return Ok((head, Popped { vruntime, next_vruntime, value }));
        }
        let Some(node) = slots.get_mut(first as usize) else {
            return Err(PopFallback::Empty);
        };
        let Slot { vruntime, child: [_, right], parent, state, value, .. } = *node;
        if right == NIL && state == State::Black && parent != NIL {
            return Err(PopFallback::Rebalance);
        }
        Self::detach(node);
        if FREE {
            node.child[RIGHT] = self.free_head;
            self.free_head = first;
        }
        self.len -= 1;
        let tree_next;
        if let Some(right_node) = slots.get_mut(right as usize) {
            // A red leaf: it takes the leftmost's place, painted black.
            right_node.parent = parent;
            right_node.state = State::Black;
            tree_next = Some(right_node.vruntime);
            self.leftmost = right;
            match slots.get_mut(parent as usize) {
                Some(parent_node) => parent_node.child[LEFT] = right,
                None => self.root = right,
            }
        } else if let Some(parent_node) = slots.get_mut(parent as usize) {
            // A red leaf.
            parent_node.child[LEFT] = NIL;
            tree_next = Some(parent_node.vruntime);
            self.leftmost = parent;
        } else {
            // The tree's only node.
            tree_next = None;
            self.root = NIL;
            self.leftmost = NIL;
            self.rightmost = NIL;
        }
        let run_head = slots.get(head as usize).map(|node| node.vruntime);
        let next_vruntime = match (tree_next, run_head) {
            (Some(tree_next), Some(run_head)) => earlier(tree_next, run_head),
            (Some(next), None) | (None, Some(next)) => next,
            (None, None) => vruntime,
        };
        Ok((first, Popped { vruntime, next_vruntime, value }))
    }

    /// [`Queue::try_unlink_first`] for a first entry that is a black leaf of
    /// the tree with a parent: unlinks it and rebalances.
    #[inline(always)]
    fn unlink_first_rebalancing(&mut self) -> Option<(u32, Popped<T>)> {
        let first = self.leftmost;
        let slots = &mut self.slots[..];
        let node = slots.get_mut(first as usize)?;
        let Slot { vruntime, parent, value, .. } = *node;
        Self::detach(node);
        self.len -= 1;
        let parent_node = slots.get_mut(parent as usize)?;
        parent_node.child[LEFT] = NIL;
        let tree_next = parent_node.vruntime;
        self.leftmost = parent;
        delete_fixup(slots, &mut self.root, parent, LEFT);
        let next_vruntime = match slots.get(self.run_head as usize) {
            Some(head) => earlier(tree_next, head.vruntime),
            None => tree_next,
        };
        Some((first, Popped { vruntime, next_vruntime, value }))
    }

    /// Removes the first entry, when that needs no rebalancing (the usual
    /// case), and returns its value (still in its slot, now free: read it
    /// before anything else is done to the queue), its key and the key of
    /// the new first (its own if the queue is now empty). Otherwise changes
    /// nothing and says why: then [`Queue::pop_first_rebalancing`] does the
    /// work. (The value is returned last, by reference, so that it is read
    /// late: fewer registers stay busy.)
    #[inline(always)]
    pub(crate) fn try_pop_first(&mut self) -> Result<(&T, u64, u64), PopFallback> {
        let (slot, popped) = self.try_unlink_first::<true>()?;
        match self.slots.get(slot as usize) {
            Some(node) => Ok((&node.value, popped.vruntime, popped.next_vruntime)),
            // Unreachable: the slot was just read.
            None => Err(PopFallback::Empty),
        }
    }

    /// Removes the first entry and returns it with its key, whatever it
    /// takes.
    pub(crate) fn pop_first(&mut self) -> Option<Popped<T>> {
        let (slot, popped) = match self.try_unlink_first::<false>() {
            Ok(unlinked) => unlinked,
            Err(PopFallback::Empty) => return None,
            Err(PopFallback::Rebalance) => self.unlink_first_rebalancing()?,
        };
        self.push_free(slot);
        Some(popped)
    }

    /// [`Queue::pop_first`] after [`Queue::try_pop_first`] said
    /// [`PopFallback::Rebalance`], with nothing changed since.
    #[inline(never)]
    pub(crate) fn pop_first_rebalancing(&mut self) -> Option<Popped<T>> {
        let (slot, popped) = self.unlink_first_rebalancing()?;
        self.push_free(slot);
        Some(popped)
    }

    /// Removes the first entry and inserts `value` keyed `vruntime` in its
    /// slot (whose generation the removal bumped). Returns what was removed,
    /// and the slot and generation of the new entry; `None` if the queue is
    /// empty. Never allocates.
    #[inline(always)]
    pub(crate) fn pop_first_then_insert(&mut self, vruntime: u64, value: T) -> Option<(Popped<T>, u32, u32)> {
        let (slot, popped) = match self.try_unlink_first::<false>() {
            Ok(unlinked) => unlinked,
            Err(PopFallback::Empty) => return None,
            Err(PopFallback::Rebalance) => self.unlink_first_rebalancing()?,
        };
        let generation = if self.appends(vruntime) {
            self.append_slot(slot, vruntime, value)
        } else {
            self.put(slot, vruntime, value)
        };
        Some((popped, slot, generation))
    }

    /// Puts back the entry that was running, keyed `vruntime` (if
    /// `behind_all`, no earlier than the last key), and takes out the first
    /// — the two halves of a context switch, with what `insert` then
    /// `pop_first` would do, done as cheaply as the case allows:
    ///
    /// - the new key would be first (or the queue is empty): nothing changes;
    /// - it goes where the first is (before the second, or there is no
    ///   second): the first's slot takes it in place, no link changes;
    /// - otherwise the first is unlinked and the new entry linked into its
    ///   slot, which never allocates.
    #[inline(always)]
    pub(crate) fn requeue(&mut self, vruntime: u64, value: impl FnOnce() -> T, behind_all: bool) -> Requeued<T> {
        let slots = &mut self.slots[..];
        let mut vruntime = vruntime;
        if behind_all {
            if let Some(tail) = slots.get(self.run_tail as usize) {
                vruntime = later(vruntime, tail.vruntime);
            }
            if let Some(last) = slots.get(self.rightmost as usize) {
                vruntime = later(vruntime, last.vruntime);
            }
        }
        let head = self.run_head;
        let leftmost = self.leftmost;
        let tree_first = slots.get(leftmost as usize).map(|node| node.vruntime);
        // The first and, if any, the second key.
        let (slot, first, second) = match slots.get(head as usize) {
            Some(head_node) if tree_first.is_none_or(|tree_first| !precedes(tree_first, head_node.vruntime)) => {
                let next = slots.get(head_node.child[RIGHT] as usize).map(|node| node.vruntime);
                let second = match (next, tree_first) {
                    (Some(next), Some(tree_first)) => Some(earlier(next, tree_first)),
                    (Some(key), None) | (None, Some(key)) => Some(key),
                    (None, None) => None,
                };
                (head, head_node.vruntime, second)
            }
            run_head => {
                let Some(first_node) = slots.get(leftmost as usize) else {
                    return Requeued::Kept { vruntime, next_vruntime: vruntime };
                };
                // The tree's first's successor is its right child (a leaf) or its parent.
                let [_, right] = first_node.child;
                let successor = if right != NIL { right } else { first_node.parent };
                let successor = slots.get(successor as usize).map(|node| node.vruntime);
                let second = match (successor, run_head) {
                    (Some(successor), Some(head_node)) => Some(earlier(successor, head_node.vruntime)),
                    (Some(key), None) => Some(key),
                    (None, head_node) => head_node.map(|node| node.vruntime),
                };
                (leftmost, first_node.vruntime, second)
            }
        };
        if precedes(vruntime, first) {
            return Requeued::Kept { vruntime, next_vruntime: first };
        }
        if second.is_none_or(|second| precedes(vruntime, second)) {
            // Its place is the first's: take over the slot. No key lies
            // between the two, so no tie between the parts arises either.
            let Some(node) = slots.get_mut(slot as usize) else {
                return Requeued::Kept { vruntime, next_vruntime: vruntime };
            };
            let left = Popped { vruntime: node.vruntime, next_vruntime: vruntime, value: node.value };
            node.vruntime = vruntime;
            node.value = value();
            node.generation = node.generation.wrapping_add(1);
            return Requeued::Swapped { left, slot, generation: node.generation };
        }
        match self.pop_first_then_insert(vruntime, value()) {
            Some((left, slot, generation)) => Requeued::Swapped { left, slot, generation },
            None => Requeued::Kept { vruntime, next_vruntime: vruntime },
        }
    }

    /// The first of up to `limit` entries, examined from the last backwards,
    /// that `accept` (given key and value) takes.
    pub(crate) fn scan_from_last(&self, limit: usize, mut accept: impl FnMut(u64, &T) -> bool) -> Option<u32> {
        let slots = &self.slots[..];
        let mut tree_cursor = self.rightmost;
        let mut run_cursor = self.run_tail;
        for _ in 0..limit {
            // The later of the two parts' lasts; on a tie the tree's, which
            // came after the run's.
            let slot = match (slots.get(tree_cursor as usize), slots.get(run_cursor as usize)) {
                (Some(tree_node), Some(run_node)) if precedes(tree_node.vruntime, run_node.vruntime) => run_cursor,
                (Some(_), _) => tree_cursor,
                (None, Some(_)) => run_cursor,
                (None, None) => return None,
            };
            let node = &slots[slot as usize];
            if accept(node.vruntime, &node.value) {
                return Some(slot);
            }
            if slot == tree_cursor {
                tree_cursor = self.predecessor(slot);
            } else {
                run_cursor = if slot == self.run_head { NIL } else { node.child[LEFT] };
            }
        }
        None
    }

    /// Removes the entry in `slot`, if it holds one, and returns its key and value.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<(u64, T)> {
        let node = *self.slots.get(slot as usize)?;
        match node.state {
            State::Free => return None,
            State::Run => self.unlink_from_run(slot, node.child),
            State::Red | State::Black => self.unlink_from_tree(slot, node),
        }
        if let Some(node) = self.slots.get_mut(slot as usize) {
            Self::detach(node);
        }
        self.len -= 1;
        self.push_free(slot);
        Some((node.vruntime, node.value))
    }

    fn unlink_from_run(&mut self, slot: u32, [previous, next]: [u32; 2]) {
        let is_head = slot == self.run_head;
        if is_head {
            self.run_head = next;
        } else if let Some(previous_node) = self.slots.get_mut(previous as usize) {
            previous_node.child[RIGHT] = next;
        }
        if slot == self.run_tail {
            self.run_tail = if is_head { NIL } else { previous };
        } else if !is_head && let Some(next_node) = self.slots.get_mut(next as usize) {
            next_node.child[LEFT] = previous;
        }
    }

    fn unlink_from_tree(&mut self, slot: u32, node: Slot<T>) {
        if slot == self.leftmost {
            self.leftmost = self.successor(slot);
        }
        if slot == self.rightmost {
            self.rightmost = self.predecessor(slot);
        }
        let slots = &mut self.slots[..];
        let root = &mut self.root;
        let [left, right] = node.child;
        let removed_state;
        // The child that takes the removed node's place, possibly NIL, and
        // where it hangs.
        let x;
        let x_parent;
        let x_side;
        if left == NIL || right == NIL {
            let child = if left == NIL { right } else { left };
            removed_state = node.state;
            x = child;
            x_parent = node.parent;
            x_side = replace_child(slots, root, node.parent, slot, child);
            if let Some(child_node) = slots.get_mut(child as usize) {
                child_node.parent = node.parent;
            }
        } else {
            // Two children: the successor y (leftmost of the right subtree)
            // takes the node's place and colour; the colour lost is y's.
            let y = minimum(slots, right);
            let y_node = slots[y as usize];
            removed_state = y_node.state;
            x = y_node.child[RIGHT];
            if y_node.parent == slot {
                x_parent = y;
                x_side = RIGHT;
            } else {
                // y is the left child of its parent: x takes its place there.
                x_parent = y_node.parent;
                x_side = LEFT;
                slots[y_node.parent as usize].child[LEFT] = x;
                if let Some(x_node) = slots.get_mut(x as usize) {
                    x_node.parent = y_node.parent;
                }
                slots[y as usize].child[RIGHT] = right;
                slots[right as usize].parent = y;
            }
            replace_child(slots, root, node.parent, slot, y);
            let y_node = &mut slots[y as usize];
            y_node.parent = node.parent;
            y_node.child[LEFT] = left;
            y_node.state = node.state;
            slots[left as usize].parent = y;
        }
        if removed_state == State::Black {
            if is_red(slots, x) {
                slots[x as usize].state = State::Black;
            } else if x_parent != NIL {
                delete_fixup(slots, root, x_parent, x_side);
            }
        }
    }

    fn successor(&self, slot: u32) -> u32 {
        let slots = &self.slots[..];
        let right = slots[slot as usize].child[RIGHT];
        if right != NIL {
            return minimum(slots, right);
        }
        let mut child = slot;
        let mut parent = slots[slot as usize].parent;
        while parent != NIL && child == slots[parent as usize].child[RIGHT] {
            child = parent;
            parent = slots[parent as usize].parent;
        }
        parent
    }

    fn predecessor(&self, slot: u32) -> u32 {
        let slots = &self.slots[..];
        let Some(node) = slots.get(slot as usize) else {
            return NIL;
        };
        if node.child[LEFT] != NIL {
            return maximum(slots, node.child[LEFT]);
        }
        let mut child = slot;
        let mut parent = node.parent;
        while parent != NIL && child == slots[parent as usize].child[LEFT] {
            child = parent;
            parent = slots[parent as usize].parent;
        }
        parent
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let slots = &self.slots[..];
        if self.root == NIL {
            if self.leftmost != NIL || self.rightmost != NIL {
                return Err("empty tree with cached ends".into());
            }
        } else {
            let root = &slots[self.root as usize];
            if root.state != State::Black || root.parent != NIL {
                return Err("root is not black or has a parent".into());
            }
            if self.leftmost != minimum(slots, self.root) || self.rightmost != maximum(slots, self.root) {
                return Err("cached leftmost or rightmost is wrong".into());
            }
        }
        let mut count = 0;
        self.check_subtree(self.root, None, None, &mut count)?;
        // The run: linked both ways (but for the head's stale previous),
        // sorted, ending at the tail.
        let mut slot = self.run_head;
        let mut previous = NIL;
        while let Some(node) = slots.get(slot as usize) {
            if node.state != State::Run || count > slots.len() {
                return Err(format!("run holds slot {slot} in state {:?}, or loops", node.state));
            }
            if previous != NIL
                && (node.child[LEFT] != previous || precedes(node.vruntime, slots[previous as usize].vruntime))
            {
                return Err(format!("run slot {slot} is linked or ordered wrongly"));
            }
            count += 1;
            previous = slot;
            slot = node.child[RIGHT];
        }
        if previous != self.run_tail {
            return Err("run tail is wrong".into());
        }
        if count != self.len {
            return Err(format!("len {} but {count} entries reachable", self.len));
        }
        let live = slots.iter().filter(|node| node.state != State::Free).count();
        if live != self.len {
            return Err(format!("len {} but {live} live slots", self.len));
        }
        let mut free = 0;
        let mut slot = self.free_head;
        while slot != NIL {
            if slots[slot as usize].state != State::Free || free > slots.len() {
                return Err("free list holds a live slot or loops".into());
            }
            free += 1;
            slot = slots[slot as usize].child[RIGHT];
        }
        if free + self.len != slots.len() {
            return Err(format!("{free} free + {} live != {} slots", self.len, slots.len()));
        }
        Ok(())
    }

    /// Nodes on the longest path from the tree's root; for tests.
    #[cfg(test)]
    pub(crate) fn height(&self) -> usize {
        fn depth<T>(slots: &[Slot<T>], slot: u32) -> usize {
            match slots.get(slot as usize) {
                None => 0,
                Some(node) => 1 + depth(slots, node.child[LEFT]).max(depth(slots, node.child[RIGHT])),
            }
        }
        depth(&self.slots, self.root)
    }

    /// Entries in the run; for tests.
    #[cfg(test)]
    pub(crate) fn run_len(&self) -> usize {
        self.slots.iter().filter(|node| node.state == State::Run).count()
    }

    /// Returns the black height of the subtree at `slot`, checking that its
    /// keys lie in `low..=high` (rotations can put a key's earlier equals
    /// below it on either side; the order among equals is checked against
    /// the model by the tests).
    #[cfg(test)]
    fn check_subtree(
        &self,
        slot: u32,
        low: Option<u64>,
        high: Option<u64>,
        count: &mut usize,
    ) -> Result<usize, alloc::string::String> {
        use alloc::format;
        let slots = &self.slots[..];
        let Some(node) = slots.get(slot as usize) else {
            return Ok(1);
        };
        *count += 1;
        if node.state != State::Red && node.state != State::Black {
            return Err(format!("slot {slot} is in the tree but {:?}", node.state));
        }
        if low.is_some_and(|low| precedes(node.vruntime, low)) || high.is_some_and(|high| precedes(high, node.vruntime))
        {
            return Err(format!("slot {slot} is out of order"));
        }
        for child in node.child {
            if let Some(child_node) = slots.get(child as usize) {
                if child_node.parent != slot {
                    return Err(format!("child {child} of {slot} has the wrong parent"));
                }
                if node.state == State::Red && child_node.state == State::Red {
                    return Err(format!("red {slot} has a red child"));
                }
            }
        }
        let left_height = self.check_subtree(node.child[LEFT], low, Some(node.vruntime), count)?;
        let right_height = self.check_subtree(node.child[RIGHT], Some(node.vruntime), high, count)?;
        if left_height != right_height {
            return Err(format!("black heights {left_height} and {right_height} differ under {slot}"));
        }
        Ok(left_height + usize::from(node.state == State::Black))
    }
}

#[inline(always)]
fn is_red<T>(slots: &[Slot<T>], slot: u32) -> bool {
    slots.get(slot as usize).is_some_and(|node| node.state == State::Red)
}

fn minimum<T>(slots: &[Slot<T>], mut slot: u32) -> u32 {
    while let Some(node) = slots.get(slot as usize) {
        if node.child[LEFT] == NIL {
            break;
        }
        slot = node.child[LEFT];
    }
    slot
}

fn maximum<T>(slots: &[Slot<T>], mut slot: u32) -> u32 {
    while let Some(node) = slots.get(slot as usize) {
        if node.child[RIGHT] == NIL {
            break;
        }
        slot = node.child[RIGHT];
    }
    slot
}

/// Makes `new` (possibly `NIL`) hang where `old` hung from `parent` (the
/// root if `parent` is `NIL`); returns that side. Leaves `new`'s parent link
/// to the caller.
#[inline(always)]
fn replace_child<T>(slots: &mut [Slot<T>], root: &mut u32, parent: u32, old: u32, new: u32) -> usize {
    match slots.get_mut(parent as usize) {
        Some(parent_node) => {
            let side = usize::from(parent_node.child[RIGHT] == old);
            parent_node.child[side] = new;
            side
        }
        None => {
            *root = new;
            LEFT
        }
    }
}

/// Rotates `x` down towards `side`: its child on the other side takes its
/// place (`side` 0 is a left rotation).
#[inline(always)]
fn rotate<T>(slots: &mut [Slot<T>], root: &mut u32, x: u32, side: usize) {
    let other = side ^ 1;
    let x_node = &slots[x as usize];
    let y = x_node.child[other];
    let x_parent = x_node.parent;
    let y_node = &mut slots[y as usize];
    let inner = y_node.child[side];
    y_node.child[side] = x;
    y_node.parent = x_parent;
    if let Some(inner_node) = slots.get_mut(inner as usize) {
        inner_node.parent = x;
    }
    let x_node = &mut slots[x as usize];
    x_node.child[other] = inner;
    x_node.parent = y;
    replace_child(slots, root, x_parent, x, y);
}

/// Restores the red-black rules after the red `node` was linked under the
/// red `parent` (so `parent` is not the root and has a black parent).
fn insert_fixup<T>(slots: &mut [Slot<T>], root: &mut u32, mut node: u32, mut parent: u32) {
    loop {
        let grandparent = slots[parent as usize].parent;
        let grandparent_node = &slots[grandparent as usize];
        let side = usize::from(grandparent_node.child[RIGHT] == parent);
        let uncle = grandparent_node.child[side ^ 1];
        let great = grandparent_node.parent;
        if let Some(uncle_node) = slots.get_mut(uncle as usize)
            && uncle_node.state == State::Red
        {
            // Red uncle: push the grandparent's black down a level and
            // carry on from the grandparent, now red.
            uncle_node.state = State::Black;
            slots[parent as usize].state = State::Black;
            let Some(great_node) = slots.get(great as usize) else {
                // The grandparent is the root: it stays black.
                return;
            };
            let great_red = great_node.state == State::Red;
            slots[grandparent as usize].state = State::Red;
            if !great_red {
                return;
            }
            node = grandparent;
            parent = great;
            continue;
        }
        if slots[parent as usize].child[side ^ 1] == node {
            // The inner grandchild: rotate it to the outside first.
            rotate(slots, root, parent, side);
            parent = node;
        }
        slots[parent as usize].state = State::Black;
        slots[grandparent as usize].state = State::Red;
        rotate(slots, root, grandparent, side ^ 1);
        return;
    }
}

/// Restores the black height after a black node was removed: the subtree
/// hanging on `side` of `parent` (empty or with a black root) is one black
/// short.
fn delete_fixup<T>(slots: &mut [Slot<T>], root: &mut u32, mut parent: u32, mut side: usize) {
    loop {
        let other = side ^ 1;
        // The short side's sibling subtree has black height at least 1, so
        // the sibling exists.
        let mut sibling = slots[parent as usize].child[other];
        if slots[sibling as usize].state == State::Red {
            // Red sibling: rotate it up, so that the short side gets a
            // black sibling and a red parent.
            slots[sibling as usize].state = State::Black;
            slots[parent as usize].state = State::Red;
            rotate(slots, root, parent, side);
            sibling = slots[parent as usize].child[other];
        }
        let [near, far] = {
            let child = slots[sibling as usize].child;
            [child[side], child[other]]
        };
        if is_red(slots, far) {
            // The far nephew is red: one rotation at the parent, done.
            slots[sibling as usize].state = slots[parent as usize].state;
            slots[parent as usize].state = State::Black;
            slots[far as usize].state = State::Black;
            rotate(slots, root, parent, side);
            return;
        }
        if is_red(slots, near) {
            // Only the near nephew is red: it rises two levels to the
            // parent's place and colour (the two textbook cases at once).
            slots[near as usize].state = slots[parent as usize].state;
            slots[parent as usize].state = State::Black;
            rotate(slots, root, sibling, other);
            rotate(slots, root, parent, side);
            return;
        }
        // Both nephews black: the sibling turns red, and the shortage moves
        // up to the parent, unless the parent can absorb it.
        slots[sibling as usize].state = State::Red;
        let parent_node = &mut slots[parent as usize];
        if parent_node.state == State::Red {
            parent_node.state = State::Black;
            return;
        }
        let grandparent = parent_node.parent;
        let Some(grandparent_node) = slots.get(grandparent as usize) else {
            // The parent is the root: the whole tree lost a black level.
            return;
        };
        side = usize::from(grandparent_node.child[RIGHT] == parent);
        parent = grandparent;
    }
}

#[cfg(test)]
mod tests {
    //! The queue against `BTreeMap` as the model, with every invariant
    //! checked after every operation.
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Operation {
        Insert(u64),
        /// `try_append` (behind everybody if the flag is set), falling back
        /// on `insert`.
        Append(u64, bool),
        PopFirst,
        /// `try_pop_first`, falling back on `pop_first_rebalancing`.
        TryPopFirst,
        /// `requeue` (behind everybody if the flag is set).
        Requeue(u64, bool),
        PopFirstThenInsert(u64),
        /// Remove the n-th live slot (modulo the count), or a free slot.
        Remove(usize),
        RemoveFree(u32),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            3 => (0u64..64).prop_map(Operation::Insert),
            3 => (0u64..64, any::<bool>()).prop_map(|(vruntime, behind_all)| Operation::Append(vruntime, behind_all)),
            2 => Just(Operation::PopFirst),
            2 => Just(Operation::TryPopFirst),
            2 => (0u64..64, any::<bool>()).prop_map(|(vruntime, behind_all)| Operation::Requeue(vruntime, behind_all)),
            1 => (0u64..64).prop_map(Operation::PopFirstThenInsert),
            2 => any::<usize>().prop_map(Operation::Remove),
            1 => any::<u32>().prop_map(Operation::RemoveFree),
        ]
    }

    /// Keyed by (vruntime, insertion number): equal keys in order of insertion.
    type Model = BTreeMap<(u64, u64), (u32, u64)>;

    fn popped_of(model: &mut Model) -> Option<(u64, u64, u64)> {
        let ((vruntime, _), (_, value)) = model.pop_first()?;
        let next = model.keys().next().map_or(vruntime, |&(next, _)| next);
        Some((vruntime, next, value))
    }

    proptest! {
        #[test]
        fn matches_btreemap(operations in proptest::collection::vec(operation(), 0..400)) {
            let mut queue: Queue<u64> = Queue::new();
            let mut model = Model::new();
            let mut sequence = 0u64;
            for operation in operations {
                match operation {
                    Operation::Insert(vruntime) => {
                        sequence += 1;
                        let (slot, _) = queue.insert(vruntime, sequence).unwrap();
                        model.insert((vruntime, sequence), (slot, sequence));
                    }
                    Operation::Append(vruntime, behind_all) => {
                        sequence += 1;
                        let last = model.keys().next_back().map(|key| key.0);
                        let vruntime = match last {
                            Some(last) if behind_all => vruntime.max(last),
                            _ => vruntime,
                        };
                        let (slot, _) = match queue.try_append(vruntime, || sequence, behind_all) {
                            Ok(appended) => {
                                // Only behind everybody.
                                prop_assert!(last.is_none_or(|last| last <= vruntime));
                                appended
                            }
                            Err(key) => {
                                prop_assert_eq!(key, vruntime);
                                queue.insert(key, sequence).unwrap()
                            }
                        };
                        model.insert((vruntime, sequence), (slot, sequence));
                    }
                    Operation::PopFirst => {
                        let popped = queue.pop_first().map(|popped| (popped.vruntime, popped.next_vruntime, popped.value));
                        prop_assert_eq!(popped, popped_of(&mut model));
                    }
                    Operation::TryPopFirst => {
                        let popped = match queue.try_pop_first() {
                            Ok((&value, vruntime, next_vruntime)) => Some((vruntime, next_vruntime, value)),
                            Err(PopFallback::Empty) => None,
                            Err(PopFallback::Rebalance) => {
                                let popped = queue.pop_first_rebalancing().unwrap();
                                Some((popped.vruntime, popped.next_vruntime, popped.value))
                            }
                        };
                        prop_assert_eq!(popped, popped_of(&mut model));
                    }
                    Operation::Requeue(vruntime, behind_all) => {
                        sequence += 1;
                        let last = model.keys().next_back().map(|key| key.0);
                        let key = match last {
                            Some(last) if behind_all => vruntime.max(last),
                            _ => vruntime,
                        };
                        let first = model.keys().next().map(|key| key.0);
                        match queue.requeue(vruntime, || sequence, behind_all) {
                            Requeued::Kept { vruntime, next_vruntime } => {
                                // Only if it would be first: then nothing changes.
                                prop_assert!(first.is_none_or(|first| key < first));
                                prop_assert_eq!((vruntime, next_vruntime), (key, first.unwrap_or(key)));
                            }
                            Requeued::Swapped { left, slot, generation } => {
                                prop_assert!(first.is_some_and(|first| key >= first));
                                model.insert((key, sequence), (slot, sequence));
                                let (expected_slot, _) = *model.values().next().unwrap();
                                let expected = popped_of(&mut model).unwrap();
                                prop_assert_eq!((left.vruntime, left.next_vruntime, left.value), expected);
                                // The new entry took the first's slot.
                                prop_assert_eq!(slot, expected_slot);
                                prop_assert_eq!(queue.live_generation(slot), Some(generation));
                            }
                        }
                    }
                    Operation::PopFirstThenInsert(vruntime) => {
                        sequence += 1;
                        let result = queue.pop_first_then_insert(vruntime, sequence);
                        match popped_of(&mut model) {
                            None => prop_assert!(result.is_none()),
                            Some(expected) => {
                                let (popped, slot, generation) = result.unwrap();
                                prop_assert_eq!((popped.vruntime, popped.next_vruntime, popped.value), expected);
                                prop_assert_eq!(queue.live_generation(slot), Some(generation));
                                model.insert((vruntime, sequence), (slot, sequence));
                            }
                        }
                    }
                    Operation::Remove(index) => {
                        if model.is_empty() {
                            continue;
                        }
                        let key = *model.keys().nth(index % model.len()).unwrap();
                        let (slot, value) = model.remove(&key).unwrap();
                        prop_assert_eq!(queue.remove(slot), Some((key.0, value)));
                    }
                    Operation::RemoveFree(slot) => {
                        if model.values().all(|&(live, _)| live != slot) {
                            prop_assert_eq!(queue.remove(slot), None);
                        }
                    }
                }
                if let Err(problem) = queue.check() {
                    return Err(TestCaseError::fail(problem));
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert_eq!(queue.first_vruntime(), model.keys().next().map(|key| key.0));
                prop_assert_eq!(queue.last_vruntime(), model.keys().next_back().map(|key| key.0));
                // Every live slot is where the model says.
                for &(slot, _) in model.values() {
                    prop_assert!(queue.live_generation(slot).is_some());
                }
            }
            // Walking backwards from the last visits the model in reverse.
            let mut backwards = Vec::new();
            let found = queue.scan_from_last(usize::MAX, |vruntime, &value| {
                backwards.push((vruntime, value));
                false
            });
            prop_assert_eq!(found, None);
            let expected: Vec<_> = model.iter().rev().map(|(key, value)| (key.0, value.1)).collect();
            prop_assert_eq!(backwards, expected);
        }
    }

    #[test]
    fn generations_change_when_a_slot_is_reused() {
        let mut queue: Queue<u8> = Queue::new();
        let (slot, generation) = queue.insert(5, 1).unwrap();
        assert_eq!(queue.live_generation(slot), Some(generation));
        let popped = queue.pop_first().unwrap();
        assert_eq!((popped.vruntime, popped.next_vruntime, popped.value), (5, 5, 1));
        assert_eq!(queue.live_generation(slot), None);
        let (reused, new_generation) = queue.insert(6, 2).unwrap();
        assert_eq!(reused, slot);
        assert_eq!(new_generation, generation + 1);
        // Taking over the first's slot in place is a reuse too.
        let Requeued::Swapped { left, slot: kept, generation: newest } = queue.requeue(7, || 3, false) else {
            panic!("7 is not before 6");
        };
        assert_eq!((left.vruntime, left.value, kept, newest), (6, 2, slot, generation + 2));
        assert_eq!(queue.live_generation(slot), Some(generation + 2));
    }

    #[test]
    fn equal_keys_come_out_in_order_of_insertion() {
        let mut queue: Queue<u32> = Queue::new();
        // Interleave equal keys with others, in the tree and in the run.
        for value in 0..200u32 {
            let vruntime = u64::from(value % 3) + u64::from(value / 50) * 2;
            if let Err(vruntime) = queue.try_append(vruntime, || value, false) {
                queue.insert(vruntime, value).unwrap();
            }
        }
        queue.check().unwrap();
        assert!(queue.run_len() > 0 && queue.run_len() < 200, "both parts used");
        let mut order = Vec::new();
        while let Some(popped) = queue.pop_first() {
            order.push(popped.value);
        }
        let mut expected: Vec<u32> = (0..200).collect();
        expected.sort_by_key(|value| u64::from(value % 3) + u64::from(value / 50) * 2);
        assert_eq!(order, expected);
    }

    #[test]
    fn wrapping_vruntime_keeps_order() {
        let mut queue: Queue<u8> = Queue::new();
        // Keys straddling the 2^64 wrap still come out in virtual-time order.
        for (value, vruntime) in [u64::MAX - 1, 2, u64::MAX, 0].into_iter().enumerate() {
            queue.insert(vruntime, value as u8).unwrap();
        }
        let mut order = Vec::new();
        while let Some(popped) = queue.pop_first() {
            order.push(popped.value);
        }
        assert_eq!(order, [0, 2, 3, 1]);
    }

    #[test]
    fn stays_balanced_under_the_scheduling_pattern() {
        // The run queue's pattern: take the smallest, put it back a weight-
        // dependent distance ahead. Removals at one end and inserts near the
        // other are the classic way to unbalance a naive tree.
        const COUNT: u64 = 20_000;
        let mut queue: Queue<u64> = Queue::new();
        for id in 0..COUNT {
            queue.insert(id % 2, id).unwrap();
        }
        for _ in COUNT..COUNT * 5 {
            let popped = queue.pop_first().unwrap();
            let id = popped.value;
            let step = 1_500_000 * 1024 / (512 << (id % 4));
            queue.insert(popped.vruntime + step, id).unwrap();
        }
        queue.check().unwrap();
        // A red-black tree of n nodes is at most 2 log2(n + 1) high; twice
        // the bit length of n + 1 (30 here) bounds that.
        let limit = 2 * (usize::BITS - (COUNT as usize + 1).leading_zeros()) as usize;
        assert!(queue.height() <= limit, "height {} above {limit}", queue.height());
        assert!(queue.run_len() < COUNT as usize, "the tree is exercised");
        assert_eq!(queue.len(), COUNT as usize);
    }

    #[test]
    fn reserve_avoids_growth() {
        let mut queue: Queue<u8> = Queue::new();
        queue.reserve(100).unwrap();
        let capacity = queue.slots.capacity();
        for vruntime in 0..100 {
            queue.insert(vruntime % 7, 0).unwrap();
        }
        assert_eq!(queue.slots.capacity(), capacity);
        assert!(capacity >= 100);
    }
}
