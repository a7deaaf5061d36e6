//! The slotted mailbox of Orrery: how a server process and its clients
//! exchange requests and responses through shared memory.
//!
//! A mailbox is a page-aligned mapping shared between one server and one or
//! more clients: a [`Header`] followed by an array of [`Slot`]s, each big
//! enough for the largest request and, in the same place afterwards, its
//! response ([`MESSAGE_BYTES`]). This follows the Hypatia design note: "a
//! mappable data structure that may be modeled as an array of messages and
//! their responses; the mailbox is sized so that each element can hold the
//! largest message that can be sent, as well as its response."
//!
//! The kernel maps the pages and provides doorbells (futex-like counters) to
//! wake the other side, but never reads or trusts the slots. This crate is
//! the part both sides run in user space:
//!
//! - [`layout`]'s `#[repr(C)]` types are the shared-memory ABI, re-exported
//!   by the ABI crate;
//! - [`Mailbox`] is one party's view, with the client operations
//!   ([`Mailbox::post`], [`Mailbox::poll_reply`], [`Mailbox::cancel`]) and
//!   the server's ([`Mailbox::take_request`], [`Mailbox::reply`]); its doc
//!   draws the slot state machine.
//!
//! Each side treats the other as untrusted: any field may hold any value at
//! any moment. Every access goes through atomics (no `&mut` ever points into
//! shared memory), every transition is a compare-exchange on the expected
//! (sequence, state) pair, lengths are checked before use, and anything
//! unexpected becomes a typed error that names the slot and what was found.
//! What the protocol cannot give is the *content* of a message against a
//! party that writes the slot's words without changing its state: a hostile
//! server can always answer nonsense. It does guarantee that the honest side
//! never panics, never reads or writes outside its buffers, and never
//! confuses one request with another through a stale ticket.
//!
//! `docs/mailbox.md` in the repository describes the layout, the proofs
//! (unit, property, thread-stress and loom tests) and the measured cost.
#![no_std]
#![forbid(unsafe_code)]
// Every public item is part of the protocol both sides implement.
#![deny(missing_docs)]

mod error;
pub mod layout;
mod mailbox;
mod sync;

#[cfg(all(test, not(loom)))]
mod tests;

pub use error::{CancelError, MailboxError, PollError, PostError, ReplyError, TakeError};
pub use layout::{
    Control, HEADER_BYTES, Header, MAGIC, MESSAGE_BYTES, MESSAGE_WORDS, SLOT_BYTES, SLOTS_IN_FIRST_PAGE, Slot,
    SlotState, VERSION, slot_capacity,
};
pub use mailbox::{Mailbox, Reply, Request, STATUS_MALFORMED_REQUEST, Ticket};
