//! Mailbox clients and servers over the kernel's mapping and doorbells.
//!
//! The slot protocol is `orrery-mailbox`; this module builds its view over
//! the pages the kernel mapped, and adds the doorbells: a client posts a
//! request and rings the server; the server takes requests, replies in the
//! same slot and rings the clients back. Waiting uses the doorbell counts,
//! so a ring that comes between a look at the slots and the wait is never
//! lost.

use orrery_abi::{Error, RING_CLIENT, RING_SERVER};
use orrery_mailbox::{HEADER_BYTES, Header, Mailbox, PostError, SLOT_BYTES, Slot, Ticket};

use crate::sys::{self, Handle};

/// What went wrong with a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxFailure {
    /// A system call failed.
    Kernel(Error),
    /// Every slot is busy (non-blocking post).
    Full,
    /// The request or response is larger than a slot holds.
    TooLarge,
    /// The other side broke the protocol (a malformed slot).
    Protocol,
}

impl From<Error> for MailboxFailure {
    fn from(error: Error) -> Self {
        MailboxFailure::Kernel(error)
    }
}

fn view(handle: Handle) -> Result<Mailbox<'static>, MailboxFailure> {
    let address = sys::mailbox_address(handle)?;
    let count = sys::mailbox_slots(handle)? as usize;
    // SAFETY: the kernel mapped the mailbox at `address` for this process's
    // whole life (handles are never unmapped while open), page aligned and
    // zero-initialised. `Header` and `Slot` consist only of atomics, for
    // which every bit pattern is valid, and all access goes through them, so
    // sharing the memory with another process is sound.
    let header = unsafe { &*(address as *const Header) };
    let slots_address = address + HEADER_BYTES as u64;
    // SAFETY: as above; the kernel mapped `HEADER_BYTES + count * SLOT_BYTES`
    // bytes at least (it sized the mapping from this slot count, which the
    // header repeats and `Mailbox::new` checks).
    let slots = unsafe { core::slice::from_raw_parts(slots_address as *const Slot, count) };
    Mailbox::new(header, slots).map_err(|_| MailboxFailure::Protocol)
}

/// The serving side of a mailbox.
pub struct Server {
    handle: Handle,
    mailbox: Mailbox<'static>,
    seen: u64,
}

impl Server {
    /// Creates a mailbox of `slots` slots (the kernel lays it out); this
    /// process serves it and may grant it to its children.
    pub fn create(slots: usize) -> Result<Self, MailboxFailure> {
        let handle = sys::mailbox_create(slots as u64)?;
        Self::open(handle)
    }

    /// Serves a mailbox granted to this process as its server.
    pub fn open(handle: Handle) -> Result<Self, MailboxFailure> {
        Ok(Self { handle, mailbox: view(handle)?, seen: 0 })
    }

    /// The handle (to grant).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Answers requests for ever with `answer(request, response) -> (length,
    /// status)`, waiting when there are none.
    pub fn serve(&mut self, mut answer: impl FnMut(&[u8], &mut [u8]) -> (usize, u32)) -> Result<(), MailboxFailure> {
        let mut request = [0u8; orrery_mailbox::MESSAGE_BYTES];
        let mut response = [0u8; orrery_mailbox::MESSAGE_BYTES];
        let mut replied = false;
        loop {
            match self.mailbox.take_request(&mut request) {
                Ok(Some(taken)) => {
                    let (length, status) = answer(&request[..taken.length], &mut response);
                    let _ = self.mailbox.reply(taken.ticket, &response[..length.min(response.len())], status);
                    replied = true;
                }
                Ok(None) => {
                    // Ring the clients for what was answered, and wait for
                    // the next request, in one call.
                    self.seen = if replied {
                        sys::mailbox_reply_wait(self.handle, self.seen)?
                    } else {
                        sys::mailbox_wait(self.handle, RING_SERVER, self.seen, 0)?
                    };
                    replied = false;
                }
                // A malformed slot from a client: skipped (the scan goes on).
                Err(_) => {}
            }
        }
    }
}

/// The calling side of a mailbox.
pub struct Client {
    handle: Handle,
    mailbox: Mailbox<'static>,
    seen: u64,
}

impl Client {
    /// Calls a mailbox granted to this process as a client.
    pub fn open(handle: Handle) -> Result<Self, MailboxFailure> {
        Ok(Self { handle, mailbox: view(handle)?, seen: 0 })
    }

    /// Posts `request` without waiting; `Full` when every slot is busy.
    pub fn post(&self, request: &[u8]) -> Result<Ticket, MailboxFailure> {
        let ticket = self.mailbox.post(request).map_err(|error| match error {
            PostError::Full => MailboxFailure::Full,
            PostError::TooLarge { .. } => MailboxFailure::TooLarge,
            _ => MailboxFailure::Protocol,
        })?;
        sys::mailbox_ring(self.handle, RING_SERVER)?;
        Ok(ticket)
    }

    /// Looks for the reply to `ticket` without waiting.
    pub fn try_reply(&self, ticket: Ticket, response: &mut [u8]) -> Result<Option<(usize, u32)>, MailboxFailure> {
        match self.mailbox.poll_reply(ticket, response) {
            Ok(Some(reply)) => Ok(Some((reply.length, reply.status))),
            Ok(None) => Ok(None),
            Err(_) => Err(MailboxFailure::Protocol),
        }
    }

    /// Sends `request` and waits for the response in `response`; returns its
    /// length and status.
    pub fn call(&mut self, request: &[u8], response: &mut [u8]) -> Result<(usize, u32), MailboxFailure> {
        let ticket = loop {
            match self.mailbox.post(request) {
                Ok(ticket) => break ticket,
                Err(PostError::Full) => {
                    // Wait for any reply to free a slot.
                    self.seen = sys::mailbox_wait(self.handle, RING_CLIENT, self.seen, 0)?;
                }
                Err(PostError::TooLarge { .. }) => return Err(MailboxFailure::TooLarge),
                Err(_) => return Err(MailboxFailure::Protocol),
            }
        };
        // Ring the server and wait for the client doorbell in one call,
        // then look; repeat while the reply is not there yet (another
        // client's reply rang the doorbell). No look before the call: a
        // reply that came before it rang the client doorbell past `seen`,
        // so the call returns at once and the look after it finds it.
        self.seen = sys::mailbox_call(self.handle, self.seen)?;
        loop {
            if let Some(reply) = self.try_reply(ticket, response)? {
                return Ok(reply);
            }
            self.seen = sys::mailbox_wait(self.handle, RING_CLIENT, self.seen, 0)?;
        }
    }
}

/// Bytes a mailbox of `slots` slots maps.
pub const fn mapping_bytes(slots: usize) -> usize {
    HEADER_BYTES + slots * SLOT_BYTES
}
