//! Loom models of the mailbox protocol: every interleaving (and every
//! weak-memory outcome loom models) of two or three parties on one or two
//! slots.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p orrery-mailbox --release --test loom`.
//! Under that cfg the crate's atomics are loom's (`src/sync.rs`), so these
//! models check the code clients and servers run. In particular the message
//! words are stored and loaded `Relaxed`: loom would let a reader see stale
//! words if the `Release`/`Acquire` pairs on the control word did not order
//! them, and the content checks below would fail.
//!
//! Each model counts, outside loom, which outcomes its executions reached and
//! asserts afterwards that every interesting one was reached at least once, so
//! a model that loom explored too narrowly fails instead of passing.
#![cfg(loom)]

use std::sync::Mutex;

use loom::sync::Arc;
use loom::thread;
use orrery_mailbox::{
    CancelError, Header, MESSAGE_BYTES, Mailbox, PollError, PostError, Reply, ReplyError, Slot, Ticket,
};

/// A mailbox's memory, shared by the model's threads.
struct Shared {
    header: Header,
    slots: Vec<Slot>,
}

fn shared(slot_count: usize) -> Arc<Shared> {
    let shared = Shared { header: Header::new(), slots: (0..slot_count).map(|_| Slot::new()).collect() };
    Mailbox::initialize(&shared.header, &shared.slots).unwrap();
    Arc::new(shared)
}

fn view(shared: &Shared) -> Mailbox<'_> {
    Mailbox::new(&shared.header, &shared.slots).unwrap()
}

/// Takes one request, waiting for it, and answers it with its bytes reversed
/// and status 7.
fn serve_one(mailbox: &Mailbox<'_>) -> Ticket {
    let mut buffer = [0; MESSAGE_BYTES];
    loop {
        if let Some(request) = mailbox.take_request(&mut buffer).unwrap() {
            let response: Vec<u8> = buffer[..request.length].iter().rev().copied().collect();
            mailbox.reply(request.ticket, &response, 7).unwrap();
            return request.ticket;
        }
        thread::yield_now();
    }
}

/// Polls until the reply arrives.
fn wait_reply(mailbox: &Mailbox<'_>, ticket: Ticket, out: &mut [u8]) -> Reply {
    loop {
        if let Some(reply) = mailbox.poll_reply(ticket, out).unwrap() {
            return reply;
        }
        thread::yield_now();
    }
}

/// One client, one server, one slot: the reply the client collects is the
/// answer to its own request, bytes included, and the slot ends free.
#[test]
fn post_take_reply_poll() {
    loom::model(|| {
        let memory = shared(1);
        let server = {
            let memory = Arc::clone(&memory);
            thread::spawn(move || serve_one(&view(&memory)))
        };
        let mailbox = view(&memory);
        // Two words, so a torn or stale word would show.
        let ticket = mailbox.post(b"ping-pong-ping").unwrap();
        let mut out = [0; MESSAGE_BYTES];
        let reply = wait_reply(&mailbox, ticket, &mut out);
        assert_eq!(reply, Reply { length: 14, status: 7 });
        assert_eq!(&out[..14], b"gnip-gnop-gnip");
        assert_eq!(server.join().unwrap(), ticket);
        assert_eq!(mailbox.poll_reply(ticket, &mut out), Err(PollError::Released { ticket }));
    });
}

/// The client cancels while the server scans: exactly one wins. If the
/// cancel wins the server finds nothing; if the server wins the cancel says
/// so and the reply still arrives. Both happen in some execution.
#[test]
fn cancel_races_take() {
    static OUTCOMES: Mutex<[usize; 2]> = Mutex::new([0; 2]);
    loom::model(|| {
        let memory = shared(1);
        let mailbox = view(&memory);
        let ticket = mailbox.post(b"maybe").unwrap();
        let server = {
            let memory = Arc::clone(&memory);
            thread::spawn(move || {
                let mailbox = view(&memory);
                let mut buffer = [0; MESSAGE_BYTES];
                let request = mailbox.take_request(&mut buffer).unwrap();
                if let Some(request) = request {
                    assert_eq!(&buffer[..request.length], b"maybe");
                    mailbox.reply(request.ticket, b"done", 0).unwrap();
                }
                request.is_some()
            })
        };
        let cancelled = match mailbox.cancel(ticket) {
            Ok(()) => true,
            Err(CancelError::InService { .. } | CancelError::Replied { .. }) => false,
            Err(error) => panic!("cancel: {error}"),
        };
        let mut out = [0; MESSAGE_BYTES];
        if !cancelled {
            assert_eq!(wait_reply(&mailbox, ticket, &mut out), Reply { length: 4, status: 0 });
        }
        let served = server.join().unwrap();
        assert_ne!(cancelled, served, "exactly one of cancel and take wins");
        OUTCOMES.lock().unwrap()[usize::from(served)] += 1;
    });
    let outcomes = *OUTCOMES.lock().unwrap();
    assert!(outcomes.iter().all(|&count| count > 0), "cancel and take should each win somewhere: {outcomes:?}");
}

/// Two clients race for the only slot: one gets it, the other is told the
/// mailbox is full, and the winner's request is the one served.
#[test]
fn two_clients_race_for_one_slot() {
    static WINNERS: Mutex<[usize; 2]> = Mutex::new([0; 2]);
    loom::model(|| {
        let memory = shared(1);
        let other = {
            let memory = Arc::clone(&memory);
            thread::spawn(move || view(&memory).post(b"B").map(|ticket| ticket.sequence()))
        };
        let mailbox = view(&memory);
        let mine = mailbox.post(b"A").map(|ticket| ticket.sequence());
        let theirs = other.join().unwrap();
        let winner = match (mine, theirs) {
            (Ok(1), Err(PostError::Full)) => 0,
            (Err(PostError::Full), Ok(1)) => 1,
            outcome => panic!("exactly one post should win: {outcome:?}"),
        };
        let mut buffer = [0; MESSAGE_BYTES];
        let request = mailbox.take_request(&mut buffer).unwrap().unwrap();
        assert_eq!(&buffer[..request.length], [b"A", b"B"][winner]);
        WINNERS.lock().unwrap()[winner] += 1;
    });
    let winners = *WINNERS.lock().unwrap();
    assert!(winners.iter().all(|&count| count > 0), "each client should win somewhere: {winners:?}");
}

/// A ticket whose reply was collected races a new client claiming the same
/// slot: the old ticket can never cancel the new request, whatever the
/// order, because state and sequence are exchanged together.
#[test]
fn stale_ticket_cannot_cancel_a_new_request() {
    static OUTCOMES: Mutex<[usize; 2]> = Mutex::new([0; 2]);
    loom::model(|| {
        let memory = shared(1);
        let mailbox = view(&memory);
        let old = mailbox.post(b"old").unwrap();
        serve_one(&mailbox);
        let mut out = [0; MESSAGE_BYTES];
        mailbox.poll_reply(old, &mut out).unwrap().unwrap();

        let newcomer = {
            let memory = Arc::clone(&memory);
            thread::spawn(move || view(&memory).post(b"new").unwrap())
        };
        let outcome = mailbox.cancel(old);
        let new = newcomer.join().unwrap();
        let index = match outcome {
            Err(CancelError::Released { .. }) => 0,
            Err(CancelError::Stale { ticket, found }) => {
                assert_eq!((ticket, found.sequence), (old, new.sequence()));
                1
            }
            other => panic!("a stale ticket must not act: {other:?}"),
        };
        // The new request is intact and still posted.
        let request = mailbox.take_request(&mut out).unwrap().unwrap();
        assert_eq!((request.ticket, &out[..request.length]), (new, &b"new"[..]));
        OUTCOMES.lock().unwrap()[index] += 1;
    });
    let outcomes = *OUTCOMES.lock().unwrap();
    assert!(outcomes.iter().all(|&count| count > 0), "both orders should be explored: {outcomes:?}");
}

/// Two server threads answer the same ticket (a server bug, or a hostile
/// party holding a copy of it): exactly one reply is published, and the other
/// is refused, either up front (`NotServing`, the slot already answered) or at
/// the commit (`SlotChanged`, the word changed while it wrote). Both refusals
/// are reached.
#[test]
fn a_ticket_is_answered_once() {
    static REFUSALS: Mutex<[usize; 2]> = Mutex::new([0; 2]);
    loom::model(|| {
        let memory = shared(1);
        let mailbox = view(&memory);
        let posted = mailbox.post(b"x").unwrap();
        let mut buffer = [0; MESSAGE_BYTES];
        let ticket = mailbox.take_request(&mut buffer).unwrap().unwrap().ticket;
        assert_eq!(ticket, posted);

        let rival = {
            let memory = Arc::clone(&memory);
            thread::spawn(move || view(&memory).reply(ticket, b"rival", 2))
        };
        let mine = mailbox.reply(ticket, b"mine", 1);
        let theirs = rival.join().unwrap();
        let refusal = match (mine, theirs) {
            (Ok(()), Err(refusal)) | (Err(refusal), Ok(())) => refusal,
            outcome => panic!("exactly one reply should be published: {outcome:?}"),
        };
        let index = match refusal {
            ReplyError::NotServing { .. } => 0,
            ReplyError::SlotChanged { .. } => 1,
            other => panic!("unexpected refusal: {other}"),
        };
        // The client collects exactly one reply (its bytes may mix both
        // writers': content is the server's responsibility).
        let reply = mailbox.poll_reply(ticket, &mut buffer).unwrap().unwrap();
        assert!(reply.status == 1 || reply.status == 2);
        REFUSALS.lock().unwrap()[index] += 1;
    });
    let refusals = *REFUSALS.lock().unwrap();
    assert!(refusals.iter().all(|&count| count > 0), "both refusals should be reached: {refusals:?}");
}
