//! Thread stress tests of the mailbox: several client threads and a server
//! thread, each with its own view of one shared mailbox (as separate
//! processes would have), exchange thousands of messages; every reply must
//! match its request, and every request must be answered or cancelled exactly
//! once.
//!
//! These run on the real atomics and the machine's memory model; the loom
//! models in `tests/loom.rs` cover every interleaving of smaller cases.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use orrery_mailbox::{CancelError, Header, MESSAGE_BYTES, Mailbox, PostError, Slot, Ticket};

/// A mailbox's memory, shared by the threads.
struct Shared {
    header: Header,
    slots: Vec<Slot>,
}

impl Shared {
    fn new(slot_count: usize) -> Self {
        let shared = Self { header: Header::new(), slots: (0..slot_count).map(|_| Slot::new()).collect() };
        Mailbox::initialize(&shared.header, &shared.slots).unwrap();
        shared
    }

    fn view(&self) -> Mailbox<'_> {
        Mailbox::new(&self.header, &self.slots).unwrap()
    }
}

/// Request `number` of `client`: the client, the number, then a length and
/// content that vary with both, up to the largest message.
fn request(client: u8, number: u32) -> Vec<u8> {
    let length = 5 + (number as usize * 7 + usize::from(client) * 13) % (MESSAGE_BYTES - 4);
    let mut bytes = vec![client];
    bytes.extend_from_slice(&number.to_le_bytes());
    bytes.extend((5..length).map(|position| (position as u8) ^ client ^ number as u8));
    bytes
}

/// The server's answer: the request reversed, and its byte sum as status.
fn respond(request: &[u8]) -> (Vec<u8>, u32) {
    (request.iter().rev().copied().collect(), request.iter().map(|&byte| u32::from(byte)).sum())
}

/// Serves until `stop`, returning how many requests it answered.
fn serve(mailbox: &Mailbox<'_>, stop: &AtomicBool) -> u64 {
    let mut buffer = [0; MESSAGE_BYTES];
    let mut served = 0;
    loop {
        match mailbox.take_request(&mut buffer).expect("honest clients post well-formed requests") {
            Some(request) => {
                let (response, status) = respond(&buffer[..request.length]);
                mailbox.reply(request.ticket, &response, status).expect("nobody else touches a served slot");
                served += 1;
            }
            None if stop.load(Ordering::Acquire) => return served,
            None => thread::yield_now(),
        }
    }
}

/// Collects one reply, waiting for it, and checks it against its request.
fn collect(mailbox: &Mailbox<'_>, ticket: Ticket, sent: &[u8]) {
    let mut out = [0; MESSAGE_BYTES];
    loop {
        match mailbox.poll_reply(ticket, &mut out).expect("honest server") {
            Some(reply) => {
                let (response, status) = respond(sent);
                assert_eq!(&out[..reply.length], &response[..], "reply to {ticket} does not match its request");
                assert_eq!(reply.status, status);
                return;
            }
            None => thread::yield_now(),
        }
    }
}

#[test]
fn clients_and_server_exchange_thousands_of_messages() {
    const CLIENTS: u8 = 3;
    const MESSAGES: u32 = 2000;
    const IN_FLIGHT: usize = 4;
    let shared = Shared::new(8);
    let stop = AtomicBool::new(false);
    let served = thread::scope(|scope| {
        let server = scope.spawn(|| serve(&shared.view(), &stop));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let shared = &shared;
                scope.spawn(move || {
                    let mailbox = shared.view();
                    let mut pending: HashMap<Ticket, Vec<u8>> = HashMap::new();
                    let mut order = Vec::new();
                    for number in 0..MESSAGES {
                        let sent = request(client, number);
                        // Keep a few requests in flight; collect the oldest
                        // when the window (or the mailbox) is full.
                        let ticket = loop {
                            if pending.len() < IN_FLIGHT {
                                match mailbox.post(&sent) {
                                    Ok(ticket) => break ticket,
                                    Err(PostError::Full) => {}
                                    Err(error) => panic!("post: {error}"),
                                }
                            }
                            if order.is_empty() {
                                thread::yield_now();
                                continue;
                            }
                            let oldest: Ticket = order.remove(0);
                            collect(&mailbox, oldest, &pending.remove(&oldest).unwrap());
                        };
                        assert!(pending.insert(ticket, sent).is_none(), "ticket {ticket} issued twice");
                        order.push(ticket);
                    }
                    for ticket in order {
                        collect(&mailbox, ticket, &pending.remove(&ticket).unwrap());
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        server.join().unwrap()
    });
    assert_eq!(served, u64::from(CLIENTS) * u64::from(MESSAGES));
    // Every slot is free again.
    let mut out = [0; MESSAGE_BYTES];
    assert_eq!(shared.view().take_request(&mut out), Ok(None));
    let mailbox = shared.view();
    let tickets: Vec<_> = (0..8).map(|_| mailbox.post(b"x").unwrap()).collect();
    assert_eq!(tickets.len(), 8);
}

#[test]
fn cancels_race_the_server_and_every_request_is_settled_once() {
    const CLIENTS: u8 = 2;
    const MESSAGES: u32 = 3000;
    let shared = Shared::new(4);
    let stop = AtomicBool::new(false);
    let cancelled = AtomicU64::new(0);
    let answered = AtomicU64::new(0);
    let served = thread::scope(|scope| {
        let server = scope.spawn(|| serve(&shared.view(), &stop));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (shared, cancelled, answered) = (&shared, &cancelled, &answered);
                scope.spawn(move || {
                    let mailbox = shared.view();
                    for number in 0..MESSAGES {
                        let sent = request(client, number);
                        let ticket = loop {
                            match mailbox.post(&sent) {
                                Ok(ticket) => break ticket,
                                Err(PostError::Full) => thread::yield_now(),
                                Err(error) => panic!("post: {error}"),
                            }
                        };
                        // Give the server a varying head start, then try to
                        // take the request back.
                        for _ in 0..number % 4 {
                            thread::yield_now();
                        }
                        match mailbox.cancel(ticket) {
                            Ok(()) => {
                                cancelled.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(CancelError::InService { .. } | CancelError::Replied { .. }) => {
                                collect(&mailbox, ticket, &sent);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => panic!("cancel: {error}"),
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        server.join().unwrap()
    });
    let (cancelled, answered) = (cancelled.into_inner(), answered.into_inner());
    assert_eq!(cancelled + answered, u64::from(CLIENTS) * u64::from(MESSAGES));
    assert_eq!(served, answered, "the server answered exactly the requests that were not cancelled");
    // Both outcomes happen, or the race was not exercised.
    assert!(cancelled > 0 && answered > 0, "cancelled {cancelled}, answered {answered}");
}

#[test]
fn clients_contend_for_a_single_slot() {
    const CLIENTS: u8 = 3;
    const MESSAGES: u32 = 500;
    let shared = Shared::new(1);
    let stop = AtomicBool::new(false);
    let served = thread::scope(|scope| {
        let server = scope.spawn(|| serve(&shared.view(), &stop));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let shared = &shared;
                scope.spawn(move || {
                    let mailbox = shared.view();
                    for number in 0..MESSAGES {
                        let sent = request(client, number);
                        let ticket = loop {
                            match mailbox.post(&sent) {
                                Ok(ticket) => break ticket,
                                Err(PostError::Full) => thread::yield_now(),
                                Err(error) => panic!("post: {error}"),
                            }
                        };
                        assert_eq!(ticket.index(), 0);
                        collect(&mailbox, ticket, &sent);
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        server.join().unwrap()
    });
    assert_eq!(served, u64::from(CLIENTS) * u64::from(MESSAGES));
    // One slot, claimed once per message: its sequence counted every claim.
    let mailbox = shared.view();
    assert_eq!(mailbox.post(b"last").unwrap().sequence(), u32::from(CLIENTS) * MESSAGES + 1);
}
