//! The kernel side of slotted mailboxes: shared pages and two doorbells.
//!
//! A mailbox is a run of zeroed frames mapped into its server and every
//! client it was granted to; the slot protocol over them (Hypatia's array of
//! messages and responses) is `orrery-mailbox`, run by the two sides in user
//! space. The kernel never reads the slots — a malformed slot can only
//! confuse the user-level protocol, which checks them. What the kernel adds
//! is a doorbell per side: a counter and the threads waiting for it to move,
//! like a futex. "Ring" bumps the other side's counter and wakes its
//! waiters; "wait" returns at once if the counter differs from the value the
//! caller last saw, and otherwise waits for it to. A ring between the
//! caller's look at the slots and its wait is therefore never lost.

use alloc::{sync::Arc, vec::Vec};
use core::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use orrery_abi::{Error, MAX_MAILBOX_SLOTS, RING_CLIENT, RING_SERVER};
use orrery_frames::Frame;

use crate::{
    arch::tsc,
    mm::frames::{self, SharedFrames},
    task::{self, WaitQueue},
};

/// One side's doorbell.
struct Doorbell {
    count: AtomicU64,
    waiters: WaitQueue,
}

/// A mailbox: its pages and its doorbells.
pub struct MailboxObject {
    /// Kept also by every address space that maps them, so that they stay
    /// while mapped even once every handle to the mailbox is closed.
    pages: Arc<SharedFrames>,
    slots: u64,
    doorbells: [Doorbell; 2],
    /// Set when the server has gone: clients' waits end with `PeerGone`.
    server_gone: core::sync::atomic::AtomicBool,
}

impl MailboxObject {
    /// A mailbox of `slots` slots (header included, rounded to pages).
    pub fn new(slots: u64) -> Result<Arc<Self>, Error> {
        if slots == 0 || slots > MAX_MAILBOX_SLOTS {
            return Err(Error::BadLength);
        }
        if !frames::room_for_process_records() {
            return Err(Error::OutOfMemory);
        }
        let bytes = orrery_mailbox::HEADER_BYTES as u64 + slots * orrery_mailbox::SLOT_BYTES as u64;
        let pages = bytes.div_ceil(4096);
        // Contiguous, so the kernel can lay the header and slots out through
        // the physical window in one piece.
        let first = frames::allocate_contiguous_for_process(pages, 1).ok_or(Error::OutOfMemory)?;
        let owned: Vec<Frame> = (0..pages).map(|page| Frame(first.0 + page)).collect();
        let base = frames::frame_pointer(first);
        // SAFETY: the frames were just allocated and are mapped through the
        // physical window; zeroing them is the creator's first write.
        unsafe { core::ptr::write_bytes(base, 0, (pages * 4096) as usize) };
        // SAFETY: `Header` and `Slot` are made of atomics only (any bit
        // pattern is a valid value), the memory is zeroed, aligned to a page
        // and large enough for the header and `slots` slots; nothing else
        // refers to it yet.
        let (header, slot_array) = unsafe {
            (
                &*(base as *const orrery_mailbox::Header),
                core::slice::from_raw_parts(
                    base.add(orrery_mailbox::HEADER_BYTES) as *const orrery_mailbox::Slot,
                    slots as usize,
                ),
            )
        };
        // The kernel lays the mailbox out once, before any process sees it;
        // it never reads it again.
        if orrery_mailbox::Mailbox::initialize(header, slot_array).is_err() {
            owned.into_iter().for_each(frames::deallocate);
            return Err(Error::BadLength);
        }
        Ok(Arc::new(Self {
            pages: SharedFrames::new(owned),
            slots,
            doorbells: [
                Doorbell { count: AtomicU64::new(0), waiters: WaitQueue::new() },
                Doorbell { count: AtomicU64::new(0), waiters: WaitQueue::new() },
            ],
            server_gone: core::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The pages to map, for the address space that maps them to keep.
    pub fn pages(&self) -> &Arc<SharedFrames> {
        &self.pages
    }

    /// Bytes mapped.
    pub fn bytes(&self) -> u64 {
        self.pages.frames().len() as u64 * 4096
    }

    /// Slots it holds.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    fn doorbell(&self, side: u64) -> Result<&Doorbell, Error> {
        match side {
            RING_SERVER => Ok(&self.doorbells[0]),
            RING_CLIENT => Ok(&self.doorbells[1]),
            _ => Err(Error::BadFlags),
        }
    }

    /// Rings `side`'s doorbell: bumps its count and wakes its waiters.
    pub fn ring(&self, side: u64) -> Result<u64, Error> {
        let doorbell = self.doorbell(side)?;
        let count = doorbell.count.fetch_add(1, Ordering::SeqCst) + 1;
        doorbell.waiters.wake_all();
        Ok(count)
    }

    /// Rings `side`'s doorbell like [`ring`](Self::ring), except that a
    /// sole waiter is taken off the doorbell and returned instead of woken,
    /// for the caller to hand its CPU to (it must run or wake it), with the
    /// count this ring made: that waiter's wait ends with it.
    pub fn ring_for_hand_off(&self, side: u64) -> Result<(Option<Arc<task::Thread>>, u64), Error> {
        let doorbell = self.doorbell(side)?;
        let count = doorbell.count.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(thread) = doorbell.waiters.take_sole() {
            return Ok((Some(thread), count));
        }
        doorbell.waiters.wake_all();
        Ok((None, count))
    }

    /// Marks the server gone and wakes every client.
    pub fn server_left(&self) {
        self.server_gone.store(true, Ordering::SeqCst);
        let _ = self.ring(RING_CLIENT);
    }

    /// A future that completes when `side`'s count differs from `seen`
    /// (with the count), at the deadline (`TimedOut`), or when the server
    /// has gone while a client waits (`PeerGone`).
    pub fn wait(self: Arc<Self>, side: u64, seen: u64, deadline_tsc: u64) -> Result<DoorbellWait, Error> {
        self.doorbell(side)?;
        // `doorbell` accepted it: 0 or 1.
        let side = side as u8;
        Ok(DoorbellWait { mailbox: self, seen, deadline_tsc, registered: None, side, timer_armed: false })
    }

    /// The current count of `side`'s doorbell.
    pub fn count(&self, side: u64) -> Result<u64, Error> {
        Ok(self.doorbell(side)?.count.load(Ordering::SeqCst))
    }
}

/// Waiting for a doorbell, as a system-call future.
pub struct DoorbellWait {
    mailbox: Arc<MailboxObject>,
    seen: u64,
    deadline_tsc: u64,
    /// The thread registered on the doorbell, taken off when the wait ends.
    registered: Option<Arc<task::Thread>>,
    /// [`RING_SERVER`] or [`RING_CLIENT`], as a byte: the future is kept
    /// in the waiting thread's state, where every word counts.
    side: u8,
    timer_armed: bool,
}

impl Drop for DoorbellWait {
    fn drop(&mut self) {
        if let Some(thread) = self.registered.take() {
            self.mailbox.doorbells[self.side as usize].waiters.remove(&thread);
        }
    }
}

impl DoorbellWait {
    /// The mailbox waited on.
    pub fn mailbox(&self) -> &MailboxObject {
        &self.mailbox
    }

    fn check(&self) -> Option<u64> {
        let count = self.mailbox.doorbells[self.side as usize].count.load(Ordering::SeqCst);
        if count != self.seen {
            return Some(count);
        }
        if u64::from(self.side) == RING_CLIENT && self.mailbox.server_gone.load(Ordering::SeqCst) {
            return Some(Error::PeerGone.to_return());
        }
        if self.deadline_tsc != 0 && tsc::now() >= self.deadline_tsc {
            return Some(Error::TimedOut.to_return());
        }
        None
    }
}

impl Future for DoorbellWait {
    type Output = u64;

    // Inlined into the parked future's poll (`SyscallFuture`) and into
    // `wait_now_or_later`, its only callers: a call less per poll.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<u64> {
        if let Some(value) = self.check() {
            return Poll::Ready(value);
        }
        // Register, then look again: a ring between the look and the
        // registration is seen by the second look.
        let me = task::scheduler::current_arc();
        self.mailbox.doorbells[self.side as usize].waiters.register(me.clone());
        self.registered = Some(me);
        if !self.timer_armed && self.deadline_tsc != 0 {
            task::wait::arm_timer_for_current(self.deadline_tsc);
            self.timer_armed = true;
        }
        match self.check() {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}
