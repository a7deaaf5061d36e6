//! [`Ring`]: one CPU's fixed-size buffer of recent [`Event`]s.
//!
//! The kernel keeps one per CPU (a `static` array of rings, say, since
//! [`Ring::new`] is `const`), and only that CPU pushes to it, with interrupts
//! off. That single-producer rule is what lets [`Ring::push`] take `&mut self`
//! and be a handful of plain stores; the kernel's per-CPU accessor enforces it.
//! Dumping reads the ring through `&self` once the CPU stopped recording.

use core::fmt;
use core::iter::{Chain, FusedIterator};
use core::slice;

use crate::Event;

/// The last `N` events of one CPU. When full, a push overwrites the oldest
/// event and counts it as dropped.
pub struct Ring<const N: usize> {
    events: [Event; N],
    /// Where the next push writes.
    next: usize,
    /// Events held, at most `N`.
    len: usize,
    /// Events overwritten since the ring was made or cleared.
    dropped: u64,
}

impl<const N: usize> Ring<N> {
    /// An empty ring. `N` must be at least 1 (checked at compile time).
    #[must_use]
    pub const fn new() -> Self {
        const { assert!(N > 0, "a trace ring needs room for at least one event") };
        Self { events: [Event::UNUSED; N], next: 0, len: 0, dropped: 0 }
    }

    /// Records `event`, overwriting the oldest one if the ring is full.
    pub fn push(&mut self, event: Event) {
        self.events[self.next] = event;
        self.next += 1;
        if self.next == N {
            self.next = 0;
        }
        if self.len < N {
            self.len += 1;
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// The events held, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        let (older, newer) = if self.len < N {
            (&self.events[..self.len], &self.events[..0])
        } else {
            // Full: the oldest event is the one the next push overwrites.
            (&self.events[self.next..], &self.events[..self.next])
        };
        Iter { inner: older.iter().chain(newer) }
    }

    /// How many events were overwritten before being read, since the ring was
    /// made or last cleared. Saturates rather than wrapping.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most events the ring holds: `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Forgets every event and resets the dropped count, after a dump.
    pub fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.dropped = 0;
    }
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for Ring<N> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Ring")
            .field("capacity", &N)
            .field("len", &self.len)
            .field("dropped", &self.dropped)
            .field("events", &self.iter())
            .finish()
    }
}

impl<'a, const N: usize> IntoIterator for &'a Ring<N> {
    type Item = &'a Event;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The events of a [`Ring`], oldest first. Made by [`Ring::iter`].
#[derive(Clone)]
pub struct Iter<'a> {
    inner: Chain<slice::Iter<'a, Event>, slice::Iter<'a, Event>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Event;

    fn next(&mut self) -> Option<&'a Event> {
        self.inner.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back()
    }
}

// Both halves are slice iterators, so the chain's size hint is exact.
impl ExactSizeIterator for Iter<'_> {}
impl FusedIterator for Iter<'_> {}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_list().entries(self.clone()).finish()
    }
}
