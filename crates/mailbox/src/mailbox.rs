//! [`Mailbox`]: one party's view of a mailbox, and the protocol operations of
//! both sides over it.
//!
//! Every operation reads the control word once, decides, and commits with a
//! single compare-exchange on the (sequence, state) pair it expects. The
//! memory orderings carry the message bytes across: the writer of a message
//! stores its words `Relaxed` and then publishes with a `Release`
//! compare-exchange; the reader observes that state with an `Acquire` load or
//! compare-exchange before loading the words. A slot goes back to `Free` with
//! `Release` and is claimed with `Acquire`, so the next client's writes cannot
//! reach the previous owner's reads.

use core::sync::atomic::AtomicUsize;

use crate::sync::{self, AtomicU64, Ordering};
use crate::{
    CancelError, Control, HEADER_BYTES, Header, MAGIC, MESSAGE_BYTES, MESSAGE_WORDS, MailboxError, PollError,
    PostError, ReplyError, SLOT_BYTES, Slot, SlotState, TakeError, VERSION,
};

/// The status [`Mailbox::take_request`] answers a malformed request with
/// (one whose length exceeds [`MESSAGE_BYTES`]); reserved, so servers cannot
/// send it themselves.
pub const STATUS_MALFORMED_REQUEST: u32 = u32::MAX;

/// Names one request: the slot it is in and the slot's sequence when it was
/// claimed. Once the slot has been freed and claimed again the sequence
/// differs, so a kept ticket cannot touch the new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub(crate) index: u32,
    pub(crate) sequence: u32,
}

impl Ticket {
    /// The slot's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The slot's sequence when the request was claimed.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    fn control(self, state: SlotState) -> u64 {
        Control::new(self.sequence, state).word()
    }
}

/// A request the server has taken: its ticket, for [`Mailbox::reply`], and
/// how many bytes of the buffer it filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Pass to [`Mailbox::reply`].
    pub ticket: Ticket,
    /// Bytes of request copied to the start of the buffer.
    pub length: usize,
}

/// A collected reply: how many bytes of the buffer it filled, and the
/// server's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Bytes of response copied to the start of the buffer.
    pub length: usize,
    /// The server's status; [`STATUS_MALFORMED_REQUEST`] if the protocol
    /// itself refused the request.
    pub status: u32,
}

/// One party's view of a mailbox in shared memory.
///
/// Clients use [`post`](Self::post), [`poll_reply`](Self::poll_reply) and
/// [`cancel`](Self::cancel); the server uses
/// [`take_request`](Self::take_request) and [`reply`](Self::reply). Each
/// slot moves through this state machine; every transition is one
/// compare-exchange on the slot's (sequence, state) word, made by the
/// function named:
///
/// ```text
///                      (1) post: claim, sequence + 1
///          +------+ ----------------------------------> +---------+
///          | Free |                                     | Claimed |
///          +------+ <-------------+                     +---------+
///           ^    ^                |                          |
///           |    | (6) cancel     |                          | (2) post: request written
///           |    |                |                          v
///           |    +--------------------------------------- +--------+
///           |                     |                       | Posted |
///           |                     |                       +--------+
///           | (5) poll_reply:     |                          |
///           |     response read   |                          | (3) take_request
///           |                     |                          v
///      +---------+   (5') poll_reply: malformed reply   +---------+
///      | Replied | --------------------------------+    | Serving |
///      +---------+                                 |    +---------+
///           ^                                      |         |
///           |    (4) reply: response written       |         |
///           +------------------------------------------------+
///                (4') take_request: malformed request, answered
///                     with STATUS_MALFORMED_REQUEST
/// ```
///
/// 1. [`post`](Self::post), client: `Free(s) → Claimed(s+1)`; the ticket is
///    (slot, s+1).
/// 2. [`post`](Self::post), client: `Claimed → Posted` after writing the
///    request. Then ring the server's doorbell.
/// 3. [`take_request`](Self::take_request), server: `Posted → Serving`.
/// 4. [`reply`](Self::reply), server: `Serving → Replied` after writing the
///    response over the request. Then ring the client's doorbell.
///    (4') [`take_request`](Self::take_request) makes the same transition
///    itself for a request whose length is out of range.
/// 5. [`poll_reply`](Self::poll_reply), client: `Replied → Free` after
///    reading the response (5': also, discarding it, when its length is out
///    of range).
/// 6. [`cancel`](Self::cancel), client: `Posted → Free`, only while the
///    server has not taken the request; it races (3) and exactly one wins.
///
/// The sequence changes only in (1), so a ticket names one request for good.
/// Nothing here trusts the other side: a control word in an unexpected state,
/// under another sequence, or changing between read and commit, is reported as
/// an error (or, in the server's scan, skipped) and never panics. Neither side
/// keeps any shared-memory state of its own beyond its tickets; the two scan
/// cursors live in this view, in private memory.
pub struct Mailbox<'a> {
    header: &'a Header,
    slots: &'a [Slot],
    /// Where the next client scan for a free slot starts; advanced on every
    /// post so that clients sharing this view do not all fight over slot 0.
    next_claim: AtomicUsize,
    /// Where the next server scan for a posted slot starts: just past the
    /// last slot taken, so every posted slot is reached within one sweep.
    next_take: AtomicUsize,
}

impl<'a> Mailbox<'a> {
    /// Prepares `header` and `slots` as an empty mailbox and returns the
    /// creator's view. Call before the memory is shared: it overwrites
    /// everything.
    ///
    /// # Errors
    ///
    /// [`MailboxError::NoSlots`] or [`MailboxError::TooManySlots`].
    pub fn initialize(header: &'a Header, slots: &'a [Slot]) -> Result<Self, MailboxError> {
        let slot_count = slot_count(slots)?;
        for slot in slots {
            slot.control.store(0, Ordering::Relaxed);
            slot.request_length.store(0, Ordering::Relaxed);
            slot.response_length.store(0, Ordering::Relaxed);
            slot.status.store(0, Ordering::Relaxed);
            for word in slot.reserved.iter() {
                word.store(0, Ordering::Relaxed);
            }
            for word in slot.data.iter() {
                word.store(0, Ordering::Relaxed);
            }
        }
        for word in header.reserved.iter() {
            word.store(0, Ordering::Relaxed);
        }
        header.version.store(VERSION, Ordering::Relaxed);
        header.slot_count.store(slot_count, Ordering::Relaxed);
        header.slot_bytes.store(SLOT_BYTES as u32, Ordering::Relaxed);
        header.message_bytes.store(MESSAGE_BYTES as u32, Ordering::Relaxed);
        // Last, and releasing: whoever sees the magic sees the rest.
        header.magic.store(MAGIC, Ordering::Release);
        Ok(Self::view(header, slots))
    }

    /// A view of a mailbox someone else initialised, after checking its
    /// header against this crate's layout and against `slots`.
    ///
    /// The header is read only here; later changes to it are ignored.
    ///
    /// # Errors
    ///
    /// The first header field that disagrees, as a [`MailboxError`].
    pub fn new(header: &'a Header, slots: &'a [Slot]) -> Result<Self, MailboxError> {
        let magic = header.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(MailboxError::BadMagic { found: magic });
        }
        let version = header.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(MailboxError::BadVersion { found: version });
        }
        let slot_bytes = header.slot_bytes.load(Ordering::Relaxed);
        let message_bytes = header.message_bytes.load(Ordering::Relaxed);
        if slot_bytes as usize != SLOT_BYTES || message_bytes as usize != MESSAGE_BYTES {
            return Err(MailboxError::LayoutMismatch { slot_bytes, message_bytes });
        }
        let count = slot_count(slots)?;
        let header_count = header.slot_count.load(Ordering::Relaxed);
        if header_count != count {
            return Err(MailboxError::SlotCountMismatch { header: header_count, slots: slots.len() });
        }
        Ok(Self::view(header, slots))
    }

    fn view(header: &'a Header, slots: &'a [Slot]) -> Self {
        Self { header, slots, next_claim: AtomicUsize::new(0), next_take: AtomicUsize::new(0) }
    }

    /// The header this view was made from.
    pub fn header(&self) -> &'a Header {
        self.header
    }

    /// Number of slots: the most requests that can be outstanding at once.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of shared memory a mailbox of `slot_count` slots needs
    /// (saturating, for counts no mailbox could have).
    pub const fn mapping_bytes(slot_count: usize) -> usize {
        HEADER_BYTES.saturating_add(slot_count.saturating_mul(SLOT_BYTES))
    }

    // ---- client side ----

    /// Client: claims a free slot, writes `request` into it and posts it
    /// (transitions 1 and 2). Ring the server's doorbell afterwards.
    ///
    /// # Errors
    ///
    /// [`PostError::TooLarge`] and [`PostError::Full`] leave every slot as it
    /// was. [`PostError::SlotChanged`] means someone else rewrote the slot
    /// this call had claimed; the call leaves that slot to them.
    pub fn post(&self, request: &[u8]) -> Result<Ticket, PostError> {
        if request.len() > MESSAGE_BYTES {
            return Err(PostError::TooLarge { length: request.len() });
        }
        let start = self.next_claim.fetch_add(1, Ordering::Relaxed);
        self.scan(start, |index, slot| {
            let found = sync::peek(&slot.control, Ordering::Relaxed);
            let free = Control::from_word(found);
            if free.slot_state() != Some(SlotState::Free) {
                return None;
            }
            let ticket = Ticket { index, sequence: free.sequence.wrapping_add(1) };
            // Acquire: pairs with the Release that freed the slot, so the
            // previous owner's reads are over before this call writes.
            if slot
                .control
                .compare_exchange(found, ticket.control(SlotState::Claimed), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                // Another client got there first (or the word changed): try the next slot.
                return None;
            }
            store_message(&slot.data, request);
            // Cannot truncate: request.len() <= MESSAGE_BYTES.
            slot.request_length.store(request.len() as u32, Ordering::Relaxed);
            // Release: the request's words are visible to whoever sees Posted.
            Some(
                match slot.control.compare_exchange(
                    ticket.control(SlotState::Claimed),
                    ticket.control(SlotState::Posted),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => Ok(ticket),
                    Err(found) => Err(PostError::SlotChanged { ticket, found: Control::from_word(found) }),
                },
            )
        })
        .unwrap_or(Err(PostError::Full))
    }

    /// Client: if the request `ticket` names has been answered, copies the
    /// response into the start of `out`, frees the slot (transition 5) and
    /// returns its length and status; `Ok(None)` while it is still posted or
    /// being served.
    ///
    /// # Errors
    ///
    /// A [`PollError`]; see each variant for what it leaves in the slot.
    /// Only [`PollError::BufferTooSmall`] leaves the ticket worth polling
    /// again.
    pub fn poll_reply(&self, ticket: Ticket, out: &mut [u8]) -> Result<Option<Reply>, PollError> {
        let slot = self.slot(ticket).ok_or(PollError::InvalidTicket { ticket })?;
        // Acquire: pairs with the server's Release of Replied, so the
        // response's words are visible below.
        let found = Control::from_word(sync::peek(&slot.control, Ordering::Acquire));
        if found.sequence != ticket.sequence {
            return Err(PollError::Stale { ticket, found });
        }
        match found.slot_state() {
            Some(SlotState::Posted | SlotState::Serving) => return Ok(None),
            Some(SlotState::Replied) => {}
            Some(SlotState::Free) => return Err(PollError::Released { ticket }),
            Some(SlotState::Claimed) | None => return Err(PollError::Corrupt { ticket, found }),
        }

        let response_length = slot.response_length.load(Ordering::Relaxed);
        let status = slot.status.load(Ordering::Relaxed);
        let length = response_length as usize;
        if length > MESSAGE_BYTES {
            // Nothing sensible can be read; free the slot so it is not lost.
            // If the free fails the slot has changed hands already: either
            // way this ticket is finished.
            let _ = release(slot, ticket);
            return Err(PollError::MalformedReply { ticket, response_length });
        }
        let Some(destination) = out.get_mut(..length) else {
            return Err(PollError::BufferTooSmall { ticket, needed: length, available: out.len() });
        };
        load_message(&slot.data, destination);
        match release(slot, ticket) {
            Ok(()) => Ok(Some(Reply { length, status })),
            Err(found) => Err(PollError::SlotChanged { ticket, found }),
        }
    }

    /// Client: withdraws a request the server has not taken yet, freeing its
    /// slot (transition 6). Races [`take_request`](Self::take_request):
    /// exactly one of the two succeeds.
    ///
    /// # Errors
    ///
    /// A [`CancelError`] saying where the request is instead; nothing is
    /// changed. After [`CancelError::InService`] or [`CancelError::Replied`]
    /// the reply is still to be collected with
    /// [`poll_reply`](Self::poll_reply).
    pub fn cancel(&self, ticket: Ticket) -> Result<(), CancelError> {
        let slot = self.slot(ticket).ok_or(CancelError::InvalidTicket { ticket })?;
        // Release: orders this side's writes before the next claimer's.
        let found = match slot.control.compare_exchange(
            ticket.control(SlotState::Posted),
            ticket.control(SlotState::Free),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Ok(()),
            Err(found) => Control::from_word(found),
        };
        if found.sequence != ticket.sequence {
            return Err(CancelError::Stale { ticket, found });
        }
        Err(match found.slot_state() {
            Some(SlotState::Serving) => CancelError::InService { ticket },
            Some(SlotState::Replied) => CancelError::Replied { ticket },
            Some(SlotState::Free) => CancelError::Released { ticket },
            // Posted would have been exchanged; seeing it here means the word
            // changed between the exchange and nothing: treat as corruption.
            Some(SlotState::Posted | SlotState::Claimed) | None => CancelError::Corrupt { ticket, found },
        })
    }

    // ---- server side ----

    /// Server: finds a posted request, takes it (transition 3) and copies it
    /// into the start of `out`, which must hold [`MESSAGE_BYTES`]. `Ok(None)`
    /// when no request is posted.
    ///
    /// The scan starts just past the slot last taken, so a busy slot cannot
    /// starve the others. Slots in any other state, valid or not, are
    /// skipped.
    ///
    /// # Errors
    ///
    /// [`TakeError::BufferTooSmall`] before anything is touched. A taken
    /// request that turns out malformed, or whose slot changes while it is
    /// read, is reported as [`TakeError::MalformedRequest`] (and answered) or
    /// [`TakeError::SlotChanged`] (and left alone); the next call goes on
    /// with the next slot.
    pub fn take_request(&self, out: &mut [u8]) -> Result<Option<Request>, TakeError> {
        let Some(destination) = out.get_mut(..MESSAGE_BYTES) else {
            return Err(TakeError::BufferTooSmall { available: out.len() });
        };
        let start = self.next_take.load(Ordering::Relaxed);
        self.scan(start, |index, slot| {
            let found = sync::peek(&slot.control, Ordering::Relaxed);
            let posted = Control::from_word(found);
            if posted.slot_state() != Some(SlotState::Posted) {
                return None;
            }
            let ticket = Ticket { index, sequence: posted.sequence };
            // Acquire: pairs with the client's Release of Posted, so the
            // request's words are visible below.
            if slot
                .control
                .compare_exchange(found, ticket.control(SlotState::Serving), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                // Cancelled (or changed) since the scan read it.
                return None;
            }
            self.next_take.store(index as usize + 1, Ordering::Relaxed);

            let request_length = slot.request_length.load(Ordering::Relaxed);
            let length = request_length as usize;
            if length > MESSAGE_BYTES {
                // Answer it, so an honest client that got here by a bug is
                // not left waiting; if that fails the slot has changed hands
                // and is not ours to answer.
                slot.response_length.store(0, Ordering::Relaxed);
                slot.status.store(STATUS_MALFORMED_REQUEST, Ordering::Relaxed);
                let _ = slot.control.compare_exchange(
                    ticket.control(SlotState::Serving),
                    ticket.control(SlotState::Replied),
                    Ordering::Release,
                    Ordering::Relaxed,
                );
                return Some(Err(TakeError::MalformedRequest { ticket, request_length }));
            }
            load_message(&slot.data, destination.get_mut(..length).unwrap_or_default());
            // A slot that left Serving while the words were read (only a
            // misbehaving party can do that) may have given torn bytes.
            let now = slot.control.load(Ordering::Relaxed);
            if now != ticket.control(SlotState::Serving) {
                return Some(Err(TakeError::SlotChanged { ticket, found: Control::from_word(now) }));
            }
            Some(Ok(Some(Request { ticket, length })))
        })
        .unwrap_or(Ok(None))
    }

    /// Server: writes `response` and `status` over the request `ticket`
    /// names and hands the slot back to its client (transition 4). Ring the
    /// client's doorbell afterwards.
    ///
    /// # Errors
    ///
    /// A [`ReplyError`]; on every one of them the slot is left as found.
    pub fn reply(&self, ticket: Ticket, response: &[u8], status: u32) -> Result<(), ReplyError> {
        if response.len() > MESSAGE_BYTES {
            return Err(ReplyError::TooLarge { length: response.len() });
        }
        if status == STATUS_MALFORMED_REQUEST {
            return Err(ReplyError::ReservedStatus);
        }
        let slot = self.slot(ticket).ok_or(ReplyError::InvalidTicket { ticket })?;
        let found = Control::from_word(slot.control.load(Ordering::Relaxed));
        if found.sequence != ticket.sequence {
            return Err(ReplyError::Stale { ticket, found });
        }
        if found.slot_state() != Some(SlotState::Serving) {
            return Err(ReplyError::NotServing { ticket, found });
        }
        store_message(&slot.data, response);
        // Cannot truncate: response.len() <= MESSAGE_BYTES.
        slot.response_length.store(response.len() as u32, Ordering::Relaxed);
        slot.status.store(status, Ordering::Relaxed);
        // Release: the response's words are visible to whoever sees Replied.
        match slot.control.compare_exchange(
            ticket.control(SlotState::Serving),
            ticket.control(SlotState::Replied),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(found) => Err(ReplyError::SlotChanged { ticket, found: Control::from_word(found) }),
        }
    }

    // ---- helpers ----

    /// The slot a ticket names, if this mailbox has it.
    fn slot(&self, ticket: Ticket) -> Option<&'a Slot> {
        self.slots.get(usize::try_from(ticket.index).ok()?)
    }

    /// Calls `visit` with every slot once, and its index, starting at
    /// `start` modulo the count, until it returns something.
    ///
    /// Two plain runs over the slice, from `start` to the end and then from
    /// the beginning, rather than a modulo per step: the server's scan that
    /// finds nothing visits every slot once per wait.
    fn scan<T>(&self, start: usize, mut visit: impl FnMut(u32, &'a Slot) -> Option<T>) -> Option<T> {
        let count = self.slots.len();
        // `new` and `initialize` guarantee 1 <= count <= u32::MAX + 1, so
        // the modulo is defined and indices fit a u32. The server's cursor
        // is below the count already, but for its wrap after the last slot.
        let start = if start < count { start } else { start.checked_rem(count).unwrap_or(0) };
        let slots: &'a [Slot] = self.slots;
        let (before, after) = slots.split_at(start);
        for (offset, slot) in after.iter().enumerate() {
            if let Some(found) = visit((start + offset) as u32, slot) {
                return Some(found);
            }
        }
        for (index, slot) in before.iter().enumerate() {
            if let Some(found) = visit(index as u32, slot) {
                return Some(found);
            }
        }
        None
    }
}

/// Transition 5: `Replied → Free` under the ticket's sequence, releasing so
/// the reads before it finish before the next claimer writes.
fn release(slot: &Slot, ticket: Ticket) -> Result<(), Control> {
    slot.control
        .compare_exchange(
            ticket.control(SlotState::Replied),
            ticket.control(SlotState::Free),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .map(drop)
        .map_err(Control::from_word)
}

impl core::fmt::Debug for Mailbox<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.debug_struct("Mailbox").field("slot_count", &self.slots.len()).finish_non_exhaustive()
    }
}

/// The slot count as the header stores it, if the slice is a valid size.
fn slot_count(slots: &[Slot]) -> Result<u32, MailboxError> {
    if slots.is_empty() {
        return Err(MailboxError::NoSlots);
    }
    u32::try_from(slots.len()).map_err(|_| MailboxError::TooManySlots { count: slots.len() })
}

/// Writes `message` into the first words of a slot, little-endian, the last
/// word padded with zeroes. Only the words the message covers are written.
///
/// Whole words go through `as_chunks` (8-byte arrays, zipped with the words
/// as two slices), which compiles to one load and one store per word; only
/// the tail is assembled bytewise.
fn store_message(words: &[AtomicU64; MESSAGE_WORDS], message: &[u8]) {
    let (chunks, tail) = message.as_chunks::<8>();
    for (chunk, word) in chunks.iter().zip(words) {
        word.store(u64::from_le_bytes(*chunk), Ordering::Relaxed);
    }
    if !tail.is_empty() {
        let mut bytes = [0_u8; 8];
        for (byte, value) in bytes.iter_mut().zip(tail) {
            *byte = *value;
        }
        if let Some(word) = words.get(chunks.len()) {
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
    }
}

/// Fills `out` (at most [`MESSAGE_BYTES`]) from the first words of a slot.
fn load_message(words: &[AtomicU64; MESSAGE_WORDS], out: &mut [u8]) {
    let (chunks, tail) = out.as_chunks_mut::<8>();
    let whole = chunks.len();
    for (chunk, word) in chunks.iter_mut().zip(words) {
        *chunk = word.load(Ordering::Relaxed).to_le_bytes();
    }
    if let Some(word) = words.get(whole).filter(|_| !tail.is_empty()) {
        let bytes = word.load(Ordering::Relaxed).to_le_bytes();
        for (byte, value) in tail.iter_mut().zip(bytes) {
            *byte = value;
        }
    }
}
