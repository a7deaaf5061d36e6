//! Errors of the mailbox operations, one enum per operation, each keeping the
//! ticket concerned and the control word actually found, so that a log line
//! says which slot misbehaved and how.
//!
//! Errors that name a [`Control`] mean the slot was not where the honest
//! protocol would have it: the other side (or a buggy or hostile third party
//! with the same mapping) wrote it. None of them leaves the reporting side's
//! own state inconsistent; what each leaves the *slot* in is documented on the
//! operation that returns it.

use core::fmt;

use crate::{Control, MESSAGE_BYTES, Ticket};

/// Why a mailbox view could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxError {
    /// A mailbox needs at least one slot.
    NoSlots,
    /// More slots than a `u32` slot index can name.
    TooManySlots {
        /// Slots given.
        count: usize,
    },
    /// The header's magic is not [`crate::MAGIC`]: not an initialised mailbox.
    BadMagic {
        /// Magic found.
        found: u32,
    },
    /// The header's version is not [`crate::VERSION`].
    BadVersion {
        /// Version found.
        found: u32,
    },
    /// The header's slot or message size is not this crate's.
    LayoutMismatch {
        /// Slot bytes found.
        slot_bytes: u32,
        /// Message bytes found.
        message_bytes: u32,
    },
    /// The header's slot count differs from the slots given.
    SlotCountMismatch {
        /// Count in the header.
        header: u32,
        /// Slots given.
        slots: usize,
    },
}

/// Why [`crate::Mailbox::post`] sent nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostError {
    /// The request is longer than [`MESSAGE_BYTES`].
    TooLarge {
        /// Its length.
        length: usize,
    },
    /// No slot is free. Retry after a reply is collected.
    Full,
    /// The claimed slot's control word changed while the request was being
    /// written; the request was not posted and the slot is abandoned to
    /// whoever changed it.
    SlotChanged {
        /// The slot and sequence that had been claimed.
        ticket: Ticket,
        /// What was found instead of `Claimed`.
        found: Control,
    },
}

/// Why [`crate::Mailbox::poll_reply`] returned no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollError {
    /// The ticket's slot index is not in this mailbox.
    InvalidTicket {
        /// The ticket.
        ticket: Ticket,
    },
    /// The slot carries another sequence: the ticket's request is gone
    /// (collected, cancelled or dropped) and the slot was claimed again, or the
    /// ticket belongs to another mailbox.
    Stale {
        /// The ticket.
        ticket: Ticket,
        /// What the slot holds now.
        found: Control,
    },
    /// The slot is free under the ticket's sequence: the reply was already
    /// collected, or the request cancelled.
    Released {
        /// The ticket.
        ticket: Ticket,
    },
    /// The slot is in a state a posted request cannot be in (`Claimed`, or
    /// not a state at all).
    Corrupt {
        /// The ticket.
        ticket: Ticket,
        /// What was found.
        found: Control,
    },
    /// The response is longer than the buffer. The reply stays in the slot;
    /// poll again with a larger buffer.
    BufferTooSmall {
        /// The ticket.
        ticket: Ticket,
        /// Bytes of response.
        needed: usize,
        /// Bytes of buffer.
        available: usize,
    },
    /// The response length is larger than a slot can hold. The slot was freed
    /// and the reply discarded.
    MalformedReply {
        /// The ticket.
        ticket: Ticket,
        /// The length found.
        response_length: u32,
    },
    /// The control word changed while the response was being read: what was
    /// read cannot be trusted and was discarded; the slot is left to whoever
    /// changed it.
    SlotChanged {
        /// The ticket.
        ticket: Ticket,
        /// What was found instead of `Replied`.
        found: Control,
    },
}

/// Why [`crate::Mailbox::cancel`] did not withdraw the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelError {
    /// The ticket's slot index is not in this mailbox.
    InvalidTicket {
        /// The ticket.
        ticket: Ticket,
    },
    /// The slot carries another sequence (see [`PollError::Stale`]).
    Stale {
        /// The ticket.
        ticket: Ticket,
        /// What the slot holds now.
        found: Control,
    },
    /// The server has taken the request; it will be answered, and the ticket
    /// stays valid for [`crate::Mailbox::poll_reply`].
    InService {
        /// The ticket.
        ticket: Ticket,
    },
    /// The request is already answered; collect the reply with
    /// [`crate::Mailbox::poll_reply`], which frees the slot.
    Replied {
        /// The ticket.
        ticket: Ticket,
    },
    /// The slot is already free under this ticket's sequence.
    Released {
        /// The ticket.
        ticket: Ticket,
    },
    /// The slot is in a state a posted request cannot be in.
    Corrupt {
        /// The ticket.
        ticket: Ticket,
        /// What was found.
        found: Control,
    },
}

/// Why [`crate::Mailbox::take_request`] returned no request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeError {
    /// The buffer cannot hold the largest request ([`MESSAGE_BYTES`]).
    BufferTooSmall {
        /// Bytes of buffer.
        available: usize,
    },
    /// The taken request's length is larger than a slot can hold. It has been
    /// answered with [`crate::STATUS_MALFORMED_REQUEST`] and an empty
    /// response, so an honest client waiting on it learns why.
    MalformedRequest {
        /// The slot and sequence taken.
        ticket: Ticket,
        /// The length found.
        request_length: u32,
    },
    /// The control word changed while the request was being read: what was
    /// read cannot be trusted and was discarded; the slot is left alone.
    SlotChanged {
        /// The slot and sequence taken.
        ticket: Ticket,
        /// What was found instead of `Serving`.
        found: Control,
    },
}

/// Why [`crate::Mailbox::reply`] did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The response is longer than [`MESSAGE_BYTES`].
    TooLarge {
        /// Its length.
        length: usize,
    },
    /// [`crate::STATUS_MALFORMED_REQUEST`] is the protocol's own answer to a
    /// malformed request; servers may not send it.
    ReservedStatus,
    /// The ticket's slot index is not in this mailbox.
    InvalidTicket {
        /// The ticket.
        ticket: Ticket,
    },
    /// The slot carries another sequence: the ticket is not the one
    /// [`crate::Mailbox::take_request`] returned for what the slot holds now.
    Stale {
        /// The ticket.
        ticket: Ticket,
        /// What the slot holds now.
        found: Control,
    },
    /// The slot is not being served under this ticket (already answered, or
    /// changed by someone else).
    NotServing {
        /// The ticket.
        ticket: Ticket,
        /// What was found.
        found: Control,
    },
    /// The control word changed while the response was being written; the
    /// response was not published and the slot is left alone.
    SlotChanged {
        /// The ticket.
        ticket: Ticket,
        /// What was found instead of `Serving`.
        found: Control,
    },
}

impl fmt::Display for Control {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.slot_state() {
            Some(state) => write!(formatter, "{state:?} (sequence {})", self.sequence),
            None => write!(formatter, "invalid state {:#x} (sequence {})", self.state, self.sequence),
        }
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "slot {} sequence {}", self.index(), self.sequence())
    }
}

impl fmt::Display for MailboxError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSlots => formatter.write_str("a mailbox needs at least one slot"),
            Self::TooManySlots { count } => write!(formatter, "{count} slots cannot be indexed by a u32"),
            Self::BadMagic { found } => write!(formatter, "header magic {found:#010x} is not a mailbox's"),
            Self::BadVersion { found } => write!(formatter, "mailbox version {found} is not {}", crate::VERSION),
            Self::LayoutMismatch { slot_bytes, message_bytes } => write!(
                formatter,
                "layout of {slot_bytes}-byte slots with {message_bytes}-byte messages, expected {} and {MESSAGE_BYTES}",
                crate::SLOT_BYTES
            ),
            Self::SlotCountMismatch { header, slots } => {
                write!(formatter, "header says {header} slots but {slots} were given")
            }
        }
    }
}

impl fmt::Display for PostError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLarge { length } => write!(formatter, "request of {length} bytes exceeds {MESSAGE_BYTES}"),
            Self::Full => formatter.write_str("no free slot"),
            Self::SlotChanged { ticket, found } => {
                write!(formatter, "{ticket} changed to {found} while the request was written")
            }
        }
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InvalidTicket { ticket } => write!(formatter, "{ticket} is not in this mailbox"),
            Self::Stale { ticket, found } => write!(formatter, "{ticket} is stale: the slot holds {found}"),
            Self::Released { ticket } => write!(formatter, "{ticket} was already collected or cancelled"),
            Self::Corrupt { ticket, found } => write!(formatter, "{ticket} is corrupt: {found}"),
            Self::BufferTooSmall { ticket, needed, available } => {
                write!(formatter, "{ticket}: response of {needed} bytes does not fit {available}")
            }
            Self::MalformedReply { ticket, response_length } => {
                write!(formatter, "{ticket}: response length {response_length} exceeds {MESSAGE_BYTES}")
            }
            Self::SlotChanged { ticket, found } => {
                write!(formatter, "{ticket} changed to {found} while the response was read")
            }
        }
    }
}

impl fmt::Display for CancelError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InvalidTicket { ticket } => write!(formatter, "{ticket} is not in this mailbox"),
            Self::Stale { ticket, found } => write!(formatter, "{ticket} is stale: the slot holds {found}"),
            Self::InService { ticket } => write!(formatter, "{ticket} is already being served"),
            Self::Replied { ticket } => write!(formatter, "{ticket} is already answered"),
            Self::Released { ticket } => write!(formatter, "{ticket} was already collected or cancelled"),
            Self::Corrupt { ticket, found } => write!(formatter, "{ticket} is corrupt: {found}"),
        }
    }
}

impl fmt::Display for TakeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { available } => {
                write!(formatter, "buffer of {available} bytes cannot hold a {MESSAGE_BYTES}-byte request")
            }
            Self::MalformedRequest { ticket, request_length } => {
                write!(formatter, "{ticket}: request length {request_length} exceeds {MESSAGE_BYTES}")
            }
            Self::SlotChanged { ticket, found } => {
                write!(formatter, "{ticket} changed to {found} while the request was read")
            }
        }
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLarge { length } => write!(formatter, "response of {length} bytes exceeds {MESSAGE_BYTES}"),
            Self::ReservedStatus => formatter.write_str("status STATUS_MALFORMED_REQUEST is reserved"),
            Self::InvalidTicket { ticket } => write!(formatter, "{ticket} is not in this mailbox"),
            Self::Stale { ticket, found } => write!(formatter, "{ticket} is stale: the slot holds {found}"),
            Self::NotServing { ticket, found } => write!(formatter, "{ticket} is not being served: {found}"),
            Self::SlotChanged { ticket, found } => {
                write!(formatter, "{ticket} changed to {found} while the response was written")
            }
        }
    }
}

impl core::error::Error for MailboxError {}
impl core::error::Error for PostError {}
impl core::error::Error for PollError {}
impl core::error::Error for CancelError {}
impl core::error::Error for TakeError {}
impl core::error::Error for ReplyError {}
