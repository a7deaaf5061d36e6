//! Sequential tests of the mailbox protocol: one test per transition and per
//! error, then a property test in which an adversary writes random values
//! into random slot fields between honest operations, checked against an
//! exact model of the honest slots, and a threaded test with a live
//! adversary.
//!
//! These live inside the crate because the adversary needs the slots' private
//! fields. The concurrent guarantees between honest parties are proven by
//! `tests/stress.rs` (threads) and `tests/loom.rs` (every interleaving).

extern crate std;

use std::sync::atomic::AtomicBool;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::sync::Ordering;

/// A mailbox's memory, as a test owns it.
struct Shared {
    header: Header,
    slots: Vec<Slot>,
}

impl Shared {
    fn new(slot_count: usize) -> Self {
        let shared = Self { header: Header::new(), slots: (0..slot_count).map(|_| Slot::new()).collect() };
        Mailbox::initialize(&shared.header, &shared.slots).expect("initialize");
        shared
    }

    fn view(&self) -> Mailbox<'_> {
        Mailbox::new(&self.header, &self.slots).expect("view")
    }

    fn control(&self, index: usize) -> Control {
        Control::from_word(self.slots[index].control.load(Ordering::Relaxed))
    }

    fn set_control(&self, index: usize, sequence: u32, state: u32) {
        self.slots[index].control.store(Control { sequence, state }.word(), Ordering::Relaxed);
    }
}

fn control(sequence: u32, state: SlotState) -> Control {
    Control::new(sequence, state)
}

/// The response the tests' servers give: the request reversed.
fn answer(request: &[u8]) -> Vec<u8> {
    request.iter().rev().copied().collect()
}

/// Posts, takes and replies to one request, returning the client's ticket.
fn answered(mailbox: &Mailbox<'_>, request: &[u8], status: u32) -> Ticket {
    let ticket = mailbox.post(request).unwrap();
    let mut buffer = [0; MESSAGE_BYTES];
    let taken = mailbox.take_request(&mut buffer).unwrap().unwrap();
    assert_eq!(taken.ticket, ticket);
    mailbox.reply(taken.ticket, &answer(&buffer[..taken.length]), status).unwrap();
    ticket
}

// ---- creating and opening ----

#[test]
fn initialize_writes_a_header_that_new_accepts() {
    let shared = Shared::new(3);
    let mailbox = shared.view();
    assert_eq!(mailbox.slot_count(), 3);
    assert_eq!(shared.header.magic.load(Ordering::Relaxed), MAGIC);
    assert_eq!(shared.header.slot_count.load(Ordering::Relaxed), 3);
    for index in 0..3 {
        assert_eq!(shared.control(index), control(0, SlotState::Free));
    }
}

#[test]
fn initialize_resets_used_slots() {
    let shared = Shared::new(2);
    shared.set_control(0, 7, 99);
    shared.slots[1].data[3].store(5, Ordering::Relaxed);
    Mailbox::initialize(&shared.header, &shared.slots).unwrap();
    assert_eq!(shared.control(0), control(0, SlotState::Free));
    assert_eq!(shared.slots[1].data[3].load(Ordering::Relaxed), 0);
}

#[test]
fn zeroed_memory_is_not_a_mailbox() {
    let header = Header::new();
    let slots = [Slot::new()];
    assert_eq!(Mailbox::new(&header, &slots).unwrap_err(), MailboxError::BadMagic { found: 0 });
}

#[test]
fn new_checks_every_header_field() {
    let shared = Shared::new(2);
    shared.header.version.store(2, Ordering::Relaxed);
    assert_eq!(Mailbox::new(&shared.header, &shared.slots).unwrap_err(), MailboxError::BadVersion { found: 2 });

    let shared = Shared::new(2);
    shared.header.slot_bytes.store(128, Ordering::Relaxed);
    assert_eq!(
        Mailbox::new(&shared.header, &shared.slots).unwrap_err(),
        MailboxError::LayoutMismatch { slot_bytes: 128, message_bytes: MESSAGE_BYTES as u32 }
    );

    let shared = Shared::new(2);
    shared.header.message_bytes.store(96, Ordering::Relaxed);
    assert_eq!(
        Mailbox::new(&shared.header, &shared.slots).unwrap_err(),
        MailboxError::LayoutMismatch { slot_bytes: SLOT_BYTES as u32, message_bytes: 96 }
    );

    let shared = Shared::new(2);
    assert_eq!(
        Mailbox::new(&shared.header, &shared.slots[..1]).unwrap_err(),
        MailboxError::SlotCountMismatch { header: 2, slots: 1 }
    );
}

#[test]
fn a_mailbox_needs_a_slot() {
    let header = Header::new();
    assert_eq!(Mailbox::initialize(&header, &[]).unwrap_err(), MailboxError::NoSlots);
    // And the header stays unmarked.
    assert_eq!(header.magic.load(Ordering::Relaxed), 0);
}

#[test]
fn header_changes_after_opening_are_ignored() {
    let shared = Shared::new(2);
    let mailbox = shared.view();
    shared.header.slot_count.store(1000, Ordering::Relaxed);
    shared.header.magic.store(0, Ordering::Relaxed);
    let ticket = answered(&mailbox, b"still works", 0);
    let mut out = [0; MESSAGE_BYTES];
    assert_eq!(mailbox.poll_reply(ticket, &mut out).unwrap().unwrap().length, 11);
}

#[test]
fn sizes_match_the_layout() {
    assert_eq!(slot_capacity(4096), SLOTS_IN_FIRST_PAGE);
    assert_eq!(slot_capacity(2 * 4096), 31);
    assert_eq!(slot_capacity(100), 0);
    assert_eq!(Mailbox::mapping_bytes(SLOTS_IN_FIRST_PAGE), 4096);
}

// ---- transitions 1 and 2: post ----

#[test]
fn post_claims_a_free_slot_and_posts_the_request() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"0123456789").unwrap();
    assert_eq!((ticket.index(), ticket.sequence()), (0, 1));
    assert_eq!(shared.control(0), control(1, SlotState::Posted));
    assert_eq!(shared.slots[0].request_length.load(Ordering::Relaxed), 10);
    // Little-endian packing: byte i is byte i % 8 of word i / 8, the last
    // word padded with zeroes.
    assert_eq!(shared.slots[0].data[0].load(Ordering::Relaxed), u64::from_le_bytes(*b"01234567"));
    assert_eq!(shared.slots[0].data[1].load(Ordering::Relaxed), u64::from_le_bytes(*b"89\0\0\0\0\0\0"));
}

#[test]
fn post_accepts_empty_and_largest_requests() {
    let shared = Shared::new(2);
    let mailbox = shared.view();
    assert!(mailbox.post(&[]).is_ok());
    assert!(mailbox.post(&[0xab; MESSAGE_BYTES]).is_ok());
}

#[test]
fn post_refuses_an_oversized_request_without_claiming() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    assert_eq!(mailbox.post(&[0; MESSAGE_BYTES + 1]), Err(PostError::TooLarge { length: MESSAGE_BYTES + 1 }));
    assert_eq!(shared.control(0), control(0, SlotState::Free));
}

#[test]
fn post_reports_full_when_no_slot_is_free() {
    let shared = Shared::new(2);
    let mailbox = shared.view();
    mailbox.post(b"a").unwrap();
    mailbox.post(b"b").unwrap();
    assert_eq!(mailbox.post(b"c"), Err(PostError::Full));
}

#[test]
fn post_skips_slots_in_invalid_states() {
    let shared = Shared::new(3);
    shared.set_control(0, 5, 77);
    shared.set_control(1, 5, SlotState::Claimed as u32);
    let mailbox = shared.view();
    assert_eq!(mailbox.post(b"x").unwrap().index(), 2);
    assert_eq!(mailbox.post(b"y"), Err(PostError::Full));
}

#[test]
fn post_rotates_through_the_slots() {
    let shared = Shared::new(3);
    let mailbox = shared.view();
    let indices: Vec<u32> = (0..3).map(|_| mailbox.post(b"r").unwrap().index()).collect();
    assert_eq!(indices, [0, 1, 2]);
}

#[test]
fn sequence_wraps_around() {
    let shared = Shared::new(1);
    shared.set_control(0, u32::MAX, SlotState::Free as u32);
    let mailbox = shared.view();
    assert_eq!(mailbox.post(b"w").unwrap().sequence(), 0);
}

// ---- transition 3: take_request ----

#[test]
fn take_request_takes_and_copies_a_posted_request() {
    let shared = Shared::new(2);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"hello server").unwrap();
    let mut buffer = [0; MESSAGE_BYTES];
    let request = mailbox.take_request(&mut buffer).unwrap().unwrap();
    assert_eq!(request, Request { ticket, length: 12 });
    assert_eq!(&buffer[..12], b"hello server");
    assert_eq!(shared.control(ticket.index() as usize), control(1, SlotState::Serving));
    assert_eq!(mailbox.take_request(&mut buffer), Ok(None));
}

#[test]
fn take_request_finds_nothing_in_an_idle_mailbox() {
    let shared = Shared::new(4);
    let mut buffer = [0; MESSAGE_BYTES];
    assert_eq!(shared.view().take_request(&mut buffer), Ok(None));
}

#[test]
fn take_request_needs_room_for_the_largest_request() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    mailbox.post(b"x").unwrap();
    let mut buffer = [0; MESSAGE_BYTES - 1];
    assert_eq!(mailbox.take_request(&mut buffer), Err(TakeError::BufferTooSmall { available: MESSAGE_BYTES - 1 }));
    assert_eq!(shared.control(0), control(1, SlotState::Posted));
}

#[test]
fn take_request_serves_slots_in_turn() {
    // Slot 0 is reposted as soon as it is answered; the server must still get
    // to slot 1 before coming back to slot 0.
    let shared = Shared::new(2);
    let mailbox = shared.view();
    let first = mailbox.post(b"A").unwrap();
    let second = mailbox.post(b"B").unwrap();
    let mut buffer = [0; MESSAGE_BYTES];
    assert_eq!(mailbox.take_request(&mut buffer).unwrap().unwrap().ticket, first);
    mailbox.reply(first, b"a", 0).unwrap();
    mailbox.poll_reply(first, &mut buffer).unwrap().unwrap();
    let third = mailbox.post(b"C").unwrap();
    assert_eq!(third.index(), first.index());
    assert_eq!(mailbox.take_request(&mut buffer).unwrap().unwrap().ticket, second);
    assert_eq!(mailbox.take_request(&mut buffer).unwrap().unwrap().ticket, third);
}

#[test]
fn take_request_skips_slots_in_other_or_invalid_states() {
    let shared = Shared::new(4);
    shared.set_control(0, 1, 9);
    shared.set_control(1, 1, SlotState::Claimed as u32);
    shared.set_control(2, 1, SlotState::Replied as u32);
    let mailbox = shared.view();
    let mut buffer = [0; MESSAGE_BYTES];
    assert_eq!(mailbox.take_request(&mut buffer), Ok(None));
    assert_eq!(shared.control(0), Control { sequence: 1, state: 9 });
}

#[test]
fn malformed_request_is_answered_by_the_protocol() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"fine").unwrap();
    shared.slots[0].request_length.store(MESSAGE_BYTES as u32 + 1, Ordering::Relaxed);
    let mut buffer = [0; MESSAGE_BYTES];
    assert_eq!(
        mailbox.take_request(&mut buffer),
        Err(TakeError::MalformedRequest { ticket, request_length: MESSAGE_BYTES as u32 + 1 })
    );
    assert_eq!(
        mailbox.poll_reply(ticket, &mut buffer),
        Ok(Some(Reply { length: 0, status: STATUS_MALFORMED_REQUEST }))
    );
    assert_eq!(shared.control(0), control(1, SlotState::Free));
}

// ---- transition 4: reply ----

#[test]
fn reply_writes_the_response_over_the_request() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    mailbox.post(&[1; 100]).unwrap();
    let mut buffer = [0; MESSAGE_BYTES];
    let request = mailbox.take_request(&mut buffer).unwrap().unwrap();
    mailbox.reply(request.ticket, b"ok", 42).unwrap();
    assert_eq!(shared.control(0), control(1, SlotState::Replied));
    assert_eq!(shared.slots[0].response_length.load(Ordering::Relaxed), 2);
    assert_eq!(shared.slots[0].status.load(Ordering::Relaxed), 42);
}

#[test]
fn reply_refuses_what_it_cannot_send() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    mailbox.post(b"q").unwrap();
    let mut buffer = [0; MESSAGE_BYTES];
    let ticket = mailbox.take_request(&mut buffer).unwrap().unwrap().ticket;
    assert_eq!(
        mailbox.reply(ticket, &[0; MESSAGE_BYTES + 1], 0),
        Err(ReplyError::TooLarge { length: MESSAGE_BYTES + 1 })
    );
    assert_eq!(mailbox.reply(ticket, b"", STATUS_MALFORMED_REQUEST), Err(ReplyError::ReservedStatus));
    assert_eq!(shared.control(0), control(1, SlotState::Serving));
    // The largest response fits.
    assert_eq!(mailbox.reply(ticket, &[7; MESSAGE_BYTES], 0), Ok(()));
}

#[test]
fn reply_checks_the_ticket_against_the_slot() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"q").unwrap();
    // Not taken yet.
    assert_eq!(
        mailbox.reply(ticket, b"", 0),
        Err(ReplyError::NotServing { ticket, found: control(1, SlotState::Posted) })
    );
    let mut buffer = [0; MESSAGE_BYTES];
    mailbox.take_request(&mut buffer).unwrap().unwrap();
    mailbox.reply(ticket, b"once", 0).unwrap();
    // Twice.
    assert_eq!(
        mailbox.reply(ticket, b"twice", 0),
        Err(ReplyError::NotServing { ticket, found: control(1, SlotState::Replied) })
    );
    // Out of range.
    let foreign = Ticket { index: 5, sequence: 1 };
    assert_eq!(mailbox.reply(foreign, b"", 0), Err(ReplyError::InvalidTicket { ticket: foreign }));
    // Slot reused since.
    mailbox.poll_reply(ticket, &mut buffer).unwrap().unwrap();
    mailbox.post(b"again").unwrap();
    mailbox.take_request(&mut buffer).unwrap().unwrap();
    assert_eq!(
        mailbox.reply(ticket, b"late", 0),
        Err(ReplyError::Stale { ticket, found: control(2, SlotState::Serving) })
    );
}

// ---- transition 5: poll_reply ----

#[test]
fn poll_reply_returns_the_response_and_frees_the_slot() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = answered(&mailbox, b"abcdefghijk", 3);
    let mut out = [0; MESSAGE_BYTES];
    assert_eq!(mailbox.poll_reply(ticket, &mut out), Ok(Some(Reply { length: 11, status: 3 })));
    assert_eq!(&out[..11], b"kjihgfedcba");
    assert_eq!(shared.control(0), control(1, SlotState::Free));
}

#[test]
fn poll_reply_waits_while_posted_or_serving() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"wait").unwrap();
    let mut out = [0; MESSAGE_BYTES];
    assert_eq!(mailbox.poll_reply(ticket, &mut out), Ok(None));
    mailbox.take_request(&mut out).unwrap().unwrap();
    assert_eq!(mailbox.poll_reply(ticket, &mut out), Ok(None));
}

#[test]
fn poll_reply_with_a_small_buffer_keeps_the_reply() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = answered(&mailbox, &[9; 20], 0);
    let mut small = [0; 19];
    assert_eq!(
        mailbox.poll_reply(ticket, &mut small),
        Err(PollError::BufferTooSmall { ticket, needed: 20, available: 19 })
    );
    assert_eq!(shared.control(0), control(1, SlotState::Replied));
    let mut exact = [0; 20];
    assert_eq!(mailbox.poll_reply(ticket, &mut exact), Ok(Some(Reply { length: 20, status: 0 })));
}

#[test]
fn poll_reply_after_collection_is_released_then_stale() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = answered(&mailbox, b"once", 0);
    let mut out = [0; MESSAGE_BYTES];
    mailbox.poll_reply(ticket, &mut out).unwrap().unwrap();
    assert_eq!(mailbox.poll_reply(ticket, &mut out), Err(PollError::Released { ticket }));
    mailbox.post(b"next").unwrap();
    assert_eq!(
        mailbox.poll_reply(ticket, &mut out),
        Err(PollError::Stale { ticket, found: control(2, SlotState::Posted) })
    );
}

#[test]
fn poll_reply_refuses_a_malformed_length_and_frees_the_slot() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = answered(&mailbox, b"x", 0);
    shared.slots[0].response_length.store(u32::MAX, Ordering::Relaxed);
    let mut out = [0; MESSAGE_BYTES];
    assert_eq!(
        mailbox.poll_reply(ticket, &mut out),
        Err(PollError::MalformedReply { ticket, response_length: u32::MAX })
    );
    assert_eq!(shared.control(0), control(1, SlotState::Free));
    assert_eq!(out, [0; MESSAGE_BYTES]);
}

#[test]
fn poll_reply_reports_impossible_states_as_corrupt() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"x").unwrap();
    let mut out = [0; MESSAGE_BYTES];
    for state in [SlotState::Claimed as u32, 5, u32::MAX] {
        shared.set_control(0, 1, state);
        assert_eq!(
            mailbox.poll_reply(ticket, &mut out),
            Err(PollError::Corrupt { ticket, found: Control { sequence: 1, state } })
        );
    }
}

#[test]
fn poll_reply_refuses_a_ticket_from_elsewhere() {
    let shared = Shared::new(1);
    let ticket = Ticket { index: 1, sequence: 1 };
    let mut out = [0; 8];
    assert_eq!(shared.view().poll_reply(ticket, &mut out), Err(PollError::InvalidTicket { ticket }));
}

// ---- transition 6: cancel ----

#[test]
fn cancel_withdraws_a_posted_request() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"never mind").unwrap();
    assert_eq!(mailbox.cancel(ticket), Ok(()));
    assert_eq!(shared.control(0), control(1, SlotState::Free));
    let mut buffer = [0; MESSAGE_BYTES];
    assert_eq!(mailbox.take_request(&mut buffer), Ok(None));
    assert_eq!(mailbox.cancel(ticket), Err(CancelError::Released { ticket }));
    assert_eq!(mailbox.poll_reply(ticket, &mut buffer), Err(PollError::Released { ticket }));
}

#[test]
fn cancel_after_the_server_took_it_leaves_the_reply_to_collect() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"too late").unwrap();
    let mut buffer = [0; MESSAGE_BYTES];
    mailbox.take_request(&mut buffer).unwrap().unwrap();
    assert_eq!(mailbox.cancel(ticket), Err(CancelError::InService { ticket }));
    mailbox.reply(ticket, b"done", 0).unwrap();
    assert_eq!(mailbox.cancel(ticket), Err(CancelError::Replied { ticket }));
    assert_eq!(mailbox.poll_reply(ticket, &mut buffer), Ok(Some(Reply { length: 4, status: 0 })));
}

#[test]
fn cancel_checks_the_ticket_against_the_slot() {
    let shared = Shared::new(1);
    let mailbox = shared.view();
    let ticket = mailbox.post(b"x").unwrap();
    mailbox.cancel(ticket).unwrap();
    mailbox.post(b"y").unwrap();
    assert_eq!(mailbox.cancel(ticket), Err(CancelError::Stale { ticket, found: control(2, SlotState::Posted) }));
    let foreign = Ticket { index: 3, sequence: 2 };
    assert_eq!(mailbox.cancel(foreign), Err(CancelError::InvalidTicket { ticket: foreign }));
    let current = Ticket { index: 0, sequence: 2 };
    shared.set_control(0, 2, 1234);
    assert_eq!(
        mailbox.cancel(current),
        Err(CancelError::Corrupt { ticket: current, found: Control { sequence: 2, state: 1234 } })
    );
}

#[test]
fn errors_name_the_slot_and_what_was_found() {
    let ticket = Ticket { index: 3, sequence: 9 };
    let error = PollError::Stale { ticket, found: Control { sequence: 10, state: 2 } };
    assert_eq!(std::format!("{error}"), "slot 3 sequence 9 is stale: the slot holds Posted (sequence 10)");
    let error = CancelError::Corrupt { ticket, found: Control { sequence: 9, state: 77 } };
    assert_eq!(std::format!("{error}"), "slot 3 sequence 9 is corrupt: invalid state 0x4d (sequence 9)");
}

// ---- the adversary model ----

/// What an honest slot holds, as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expected {
    Free { sequence: u32 },
    Posted { sequence: u32, request: Vec<u8> },
    Serving { sequence: u32, request: Vec<u8> },
    Replied { sequence: u32, response: Vec<u8>, status: u32 },
}

impl Expected {
    fn control(&self) -> Control {
        match *self {
            Self::Free { sequence } => control(sequence, SlotState::Free),
            Self::Posted { sequence, .. } => control(sequence, SlotState::Posted),
            Self::Serving { sequence, .. } => control(sequence, SlotState::Serving),
            Self::Replied { sequence, .. } => control(sequence, SlotState::Replied),
        }
    }
}

/// A slot field the adversary can overwrite.
#[derive(Clone, Copy, Debug)]
enum Field {
    Control,
    RequestLength,
    ResponseLength,
    Status,
    Data(usize),
}

#[derive(Clone, Debug)]
enum Operation {
    Post(Vec<u8>),
    Take,
    Reply(prop::sample::Index),
    Poll(prop::sample::Index, usize),
    Cancel(prop::sample::Index),
    Scribble { slot: prop::sample::Index, field: Field, value: u64 },
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        4 => Just(Field::Control),
        2 => Just(Field::RequestLength),
        2 => Just(Field::ResponseLength),
        1 => Just(Field::Status),
        1 => (0..MESSAGE_WORDS).prop_map(Field::Data),
    ]
}

/// Values that hit the protocol's edges: valid states under nearby
/// sequences, lengths on either side of the limit, and noise.
fn scribble_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0_u64..4, 0_u64..8).prop_map(|(sequence, state)| sequence << 32 | state),
        Just(MESSAGE_BYTES as u64),
        Just(MESSAGE_BYTES as u64 + 1),
        Just(u64::from(u32::MAX)),
        any::<u64>(),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..=MESSAGE_BYTES + 2).prop_map(Operation::Post),
        4 => Just(Operation::Take),
        3 => any::<prop::sample::Index>().prop_map(Operation::Reply),
        4 => (any::<prop::sample::Index>(), prop_oneof![Just(MESSAGE_BYTES), 0_usize..MESSAGE_BYTES])
            .prop_map(|(pick, buffer)| Operation::Poll(pick, buffer)),
        2 => any::<prop::sample::Index>().prop_map(Operation::Cancel),
        1 => (any::<prop::sample::Index>(), field(), scribble_value())
            .prop_map(|(slot, field, value)| Operation::Scribble { slot, field, value }),
    ]
}

/// The honest parties' expectations. Slots the adversary has written to are
/// "tainted" for good: the model expects nothing of them beyond typed
/// results and bounded lengths. Untainted slots must behave exactly as the
/// model says, whatever happens in the tainted ones.
struct Model {
    slots: Vec<Expected>,
    tainted: Vec<bool>,
    /// Every ticket a client was given, kept to poll and cancel even after
    /// they are finished.
    client_tickets: Vec<Ticket>,
    /// Tickets the server has taken and not yet answered.
    server_tickets: Vec<(Ticket, Vec<u8>)>,
}

impl Model {
    fn clean(&self, ticket: Ticket) -> Option<&Expected> {
        let index = ticket.index() as usize;
        (!self.tainted[index]).then(|| &self.slots[index])
    }
}

fn run_against_model(slot_count: usize, operations: &[Operation]) -> Result<(), TestCaseError> {
    let shared = Shared::new(slot_count);
    let client = shared.view();
    let server = shared.view();
    let mut model = Model {
        slots: vec![Expected::Free { sequence: 0 }; slot_count],
        tainted: vec![false; slot_count],
        client_tickets: Vec::new(),
        server_tickets: Vec::new(),
    };

    for operation in operations {
        match operation {
            Operation::Post(request) => {
                let result = client.post(request);
                if request.len() > MESSAGE_BYTES {
                    prop_assert_eq!(result, Err(PostError::TooLarge { length: request.len() }));
                    continue;
                }
                match result {
                    Ok(ticket) => {
                        model.client_tickets.push(ticket);
                        let index = ticket.index() as usize;
                        if let Some(expected) = model.clean(ticket) {
                            let Expected::Free { sequence } = *expected else {
                                return Err(TestCaseError::fail(std::format!("posted into busy {expected:?}")));
                            };
                            prop_assert_eq!(ticket.sequence(), sequence.wrapping_add(1));
                            model.slots[index] =
                                Expected::Posted { sequence: ticket.sequence(), request: request.clone() };
                        }
                    }
                    Err(PostError::Full) => {
                        for (index, expected) in model.slots.iter().enumerate() {
                            prop_assert!(
                                model.tainted[index] || !matches!(expected, Expected::Free { .. }),
                                "Full while clean slot {} is free",
                                index
                            );
                        }
                    }
                    Err(error) => return Err(TestCaseError::fail(std::format!("post: {error}"))),
                }
            }
            Operation::Take => {
                let mut buffer = [0; MESSAGE_BYTES];
                match server.take_request(&mut buffer) {
                    Ok(Some(request)) => {
                        prop_assert!(request.length <= MESSAGE_BYTES);
                        let bytes = buffer[..request.length].to_vec();
                        let index = request.ticket.index() as usize;
                        if let Some(expected) = model.clean(request.ticket) {
                            let Expected::Posted { sequence, request: posted } = expected.clone() else {
                                return Err(TestCaseError::fail(std::format!("took {expected:?}")));
                            };
                            prop_assert_eq!(request.ticket.sequence(), sequence);
                            prop_assert_eq!(&bytes, &posted);
                            model.slots[index] = Expected::Serving { sequence, request: posted };
                        }
                        model.server_tickets.push((request.ticket, bytes));
                    }
                    Ok(None) => {
                        for (index, expected) in model.slots.iter().enumerate() {
                            prop_assert!(
                                model.tainted[index] || !matches!(expected, Expected::Posted { .. }),
                                "nothing taken while clean slot {} is posted",
                                index
                            );
                        }
                    }
                    Err(TakeError::MalformedRequest { ticket, .. } | TakeError::SlotChanged { ticket, .. }) => {
                        prop_assert!(model.tainted[ticket.index() as usize], "error from a clean slot");
                    }
                    Err(error @ TakeError::BufferTooSmall { .. }) => {
                        return Err(TestCaseError::fail(std::format!("take: {error}")));
                    }
                }
            }
            Operation::Reply(pick) => {
                if model.server_tickets.is_empty() {
                    continue;
                }
                let (ticket, request) = model.server_tickets.remove(pick.index(model.server_tickets.len()));
                let response = answer(&request);
                let status = request.len() as u32;
                let result = server.reply(ticket, &response, status);
                if let Some(expected) = model.clean(ticket) {
                    let found = expected.control();
                    if found.sequence != ticket.sequence() {
                        prop_assert_eq!(result, Err(ReplyError::Stale { ticket, found }));
                    } else if let Expected::Serving { .. } = expected {
                        prop_assert_eq!(result, Ok(()));
                        model.slots[ticket.index() as usize] =
                            Expected::Replied { sequence: ticket.sequence(), response, status };
                    } else {
                        prop_assert_eq!(result, Err(ReplyError::NotServing { ticket, found }));
                    }
                }
            }
            Operation::Poll(pick, buffer_bytes) => {
                if model.client_tickets.is_empty() {
                    continue;
                }
                let ticket = model.client_tickets[pick.index(model.client_tickets.len())];
                let mut out = vec![0; *buffer_bytes];
                let result = client.poll_reply(ticket, &mut out);
                if let Ok(Some(reply)) = result {
                    prop_assert!(reply.length <= out.len());
                }
                let Some(expected) = model.clean(ticket).cloned() else { continue };
                let found = expected.control();
                if found.sequence != ticket.sequence() {
                    prop_assert_eq!(result, Err(PollError::Stale { ticket, found }));
                    continue;
                }
                match expected {
                    Expected::Posted { .. } | Expected::Serving { .. } => prop_assert_eq!(result, Ok(None)),
                    Expected::Free { .. } => prop_assert_eq!(result, Err(PollError::Released { ticket })),
                    Expected::Replied { sequence, response, status } => {
                        if response.len() > out.len() {
                            prop_assert_eq!(
                                result,
                                Err(PollError::BufferTooSmall { ticket, needed: response.len(), available: out.len() })
                            );
                        } else {
                            prop_assert_eq!(result, Ok(Some(Reply { length: response.len(), status })));
                            prop_assert_eq!(&out[..response.len()], &response[..]);
                            model.slots[ticket.index() as usize] = Expected::Free { sequence };
                        }
                    }
                }
            }
            Operation::Cancel(pick) => {
                if model.client_tickets.is_empty() {
                    continue;
                }
                let ticket = model.client_tickets[pick.index(model.client_tickets.len())];
                let result = client.cancel(ticket);
                let Some(expected) = model.clean(ticket).cloned() else { continue };
                let found = expected.control();
                if found.sequence != ticket.sequence() {
                    prop_assert_eq!(result, Err(CancelError::Stale { ticket, found }));
                    continue;
                }
                match expected {
                    Expected::Posted { sequence, .. } => {
                        prop_assert_eq!(result, Ok(()));
                        model.slots[ticket.index() as usize] = Expected::Free { sequence };
                    }
                    Expected::Serving { .. } => prop_assert_eq!(result, Err(CancelError::InService { ticket })),
                    Expected::Replied { .. } => prop_assert_eq!(result, Err(CancelError::Replied { ticket })),
                    Expected::Free { .. } => prop_assert_eq!(result, Err(CancelError::Released { ticket })),
                }
            }
            Operation::Scribble { slot, field, value } => {
                let index = slot.index(slot_count);
                model.tainted[index] = true;
                let target = &shared.slots[index];
                // Truncations intended: the adversary writes whatever fits.
                match *field {
                    Field::Control => target.control.store(*value, Ordering::Relaxed),
                    Field::RequestLength => target.request_length.store(*value as u32, Ordering::Relaxed),
                    Field::ResponseLength => target.response_length.store(*value as u32, Ordering::Relaxed),
                    Field::Status => target.status.store(*value as u32, Ordering::Relaxed),
                    Field::Data(word) => target.data[word].store(*value, Ordering::Relaxed),
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Honest operations with an adversary writing between them: no panic,
    /// untainted slots exactly as modelled, tainted ones only typed results.
    #[test]
    fn adversary_cannot_break_the_honest_side(
        slot_count in 1_usize..6,
        operations in proptest::collection::vec(operation(), 1..120),
    ) {
        run_against_model(slot_count, &operations)?;
    }

    /// The same without an adversary: every slot stays clean, so every
    /// result is checked exactly.
    #[test]
    fn honest_operations_match_the_model(
        slot_count in 1_usize..6,
        operations in proptest::collection::vec(
            operation().prop_filter("no adversary", |operation| !matches!(operation, Operation::Scribble { .. })),
            1..120,
        ),
    ) {
        run_against_model(slot_count, &operations)?;
    }
}

// ---- a live adversary ----

/// A client and a server exchange messages while a third thread scribbles
/// on slot 0 as fast as it can. Nobody panics; every reply that does come
/// back from another slot is the right one; errors and wrong replies come
/// only from slot 0.
#[test]
fn live_adversary_on_one_slot_does_not_disturb_the_others() {
    const MESSAGES: u32 = 2000;
    let shared = Shared::new(4);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            while !done.load(Ordering::Relaxed) {
                // xorshift: cheap noise without a dependency.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let slot = &shared.slots[0];
                match state % 5 {
                    0 => slot.control.store(state >> 8 & 0x3_0000_0007, Ordering::Relaxed),
                    1 => slot.request_length.store((state >> 16) as u32 % 300, Ordering::Relaxed),
                    2 => slot.response_length.store((state >> 16) as u32 % 300, Ordering::Relaxed),
                    3 => slot.data[(state >> 32) as usize % MESSAGE_WORDS].store(state, Ordering::Relaxed),
                    _ => std::thread::yield_now(),
                }
            }
        });
        scope.spawn(|| {
            let server = shared.view();
            let mut buffer = [0; MESSAGE_BYTES];
            while !done.load(Ordering::Relaxed) {
                match server.take_request(&mut buffer) {
                    Ok(Some(request)) => {
                        let _ = server.reply(request.ticket, &answer(&buffer[..request.length]), 0);
                    }
                    Ok(None) => std::thread::yield_now(),
                    Err(error) => assert_eq!(error_slot_of_take(error), 0, "take error from a clean slot: {error}"),
                }
            }
        });
        let client = shared.view();
        let mut out = [0; MESSAGE_BYTES];
        let mut correct_from_clean_slots = 0;
        for message in 0..MESSAGES {
            let request = message.to_le_bytes();
            let ticket = loop {
                match client.post(&request) {
                    Ok(ticket) => break ticket,
                    Err(PostError::Full) => std::thread::yield_now(),
                    Err(PostError::SlotChanged { ticket, .. }) => assert_eq!(ticket.index(), 0),
                    Err(error) => panic!("post: {error}"),
                }
            };
            // The adversary may keep slot 0 from ever being answered: give up
            // on it after a while, but never on a clean slot.
            let mut polls = 0_u32;
            loop {
                match client.poll_reply(ticket, &mut out) {
                    Ok(Some(reply)) => {
                        if ticket.index() != 0 {
                            assert_eq!(&out[..reply.length], &answer(&request)[..]);
                            correct_from_clean_slots += 1;
                        }
                        break;
                    }
                    Ok(None) if ticket.index() == 0 && polls > 10_000 => break,
                    Ok(None) => {
                        polls += 1;
                        std::thread::yield_now();
                    }
                    Err(error) => {
                        assert_eq!(ticket.index(), 0, "poll error from a clean slot: {error}");
                        break;
                    }
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        assert!(correct_from_clean_slots > MESSAGES / 2, "only {correct_from_clean_slots} exchanges completed");
    });
}

fn error_slot_of_take(error: TakeError) -> u32 {
    match error {
        TakeError::MalformedRequest { ticket, .. } | TakeError::SlotChanged { ticket, .. } => ticket.index(),
        TakeError::BufferTooSmall { .. } => u32::MAX,
    }
}
