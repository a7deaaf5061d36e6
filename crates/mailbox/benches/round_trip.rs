//! Cost of one request/response round trip through a mailbox, on one thread,
//! against the pairs of queues people would otherwise reach for.
//!
//! Run with `cargo bench -p orrery-mailbox`;
//! figures are recorded in `docs/mailbox.md`. Each round trip does the same
//! work in every variant: the client copies the request in, the server copies
//! it out, copies a response (the request echoed) in, and the client copies
//! that out. Single-threaded, so this is the protocol's own cost (atomics,
//! checks, copies), not cross-core cache traffic or wake-ups.

use std::hint::black_box;
use std::sync::mpsc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use orrery_mailbox::{Header, MESSAGE_BYTES, Mailbox, SLOTS_IN_FIRST_PAGE, Slot};

/// A message as a queue carries it: the mailbox's slot payload, by value.
#[derive(Clone, Copy)]
struct Message {
    length: usize,
    bytes: [u8; MESSAGE_BYTES],
}

impl Message {
    fn from(bytes: &[u8]) -> Self {
        let mut message = Self { length: bytes.len(), bytes: [0; MESSAGE_BYTES] };
        message.bytes[..bytes.len()].copy_from_slice(bytes);
        message
    }

    fn copy_to(&self, out: &mut [u8]) -> usize {
        out[..self.length].copy_from_slice(&self.bytes[..self.length]);
        self.length
    }
}

fn round_trip(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("round_trip");
    for size in [16_usize, MESSAGE_BYTES] {
        let request: Vec<u8> = (0..size).map(|position| position as u8).collect();

        // One page: the header and 15 slots.
        let header = Header::new();
        let slots: Vec<Slot> = (0..SLOTS_IN_FIRST_PAGE).map(|_| Slot::new()).collect();
        let client = Mailbox::initialize(&header, &slots).unwrap();
        let server = Mailbox::new(&header, &slots).unwrap();
        group.bench_with_input(BenchmarkId::new("mailbox", size), &request, |bencher, request| {
            let mut server_buffer = [0_u8; MESSAGE_BYTES];
            let mut client_buffer = [0_u8; MESSAGE_BYTES];
            bencher.iter(|| {
                let ticket = client.post(black_box(request)).unwrap();
                let taken = server.take_request(&mut server_buffer).unwrap().unwrap();
                server.reply(taken.ticket, &server_buffer[..taken.length], 0).unwrap();
                let reply = client.poll_reply(ticket, &mut client_buffer).unwrap().unwrap();
                black_box((reply, &client_buffer));
            });
        });

        let (request_sender, request_receiver) = mpsc::sync_channel::<Message>(SLOTS_IN_FIRST_PAGE);
        let (response_sender, response_receiver) = mpsc::sync_channel::<Message>(SLOTS_IN_FIRST_PAGE);
        group.bench_with_input(BenchmarkId::new("std_mpsc_sync_channel", size), &request, |bencher, request| {
            let mut server_buffer = [0_u8; MESSAGE_BYTES];
            let mut client_buffer = [0_u8; MESSAGE_BYTES];
            bencher.iter(|| {
                request_sender.send(Message::from(black_box(request))).unwrap();
                let length = request_receiver.recv().unwrap().copy_to(&mut server_buffer);
                response_sender.send(Message::from(&server_buffer[..length])).unwrap();
                let length = response_receiver.recv().unwrap().copy_to(&mut client_buffer);
                black_box((length, &client_buffer));
            });
        });

        let requests = ArrayQueue::<Message>::new(SLOTS_IN_FIRST_PAGE);
        let responses = ArrayQueue::<Message>::new(SLOTS_IN_FIRST_PAGE);
        group.bench_with_input(BenchmarkId::new("crossbeam_array_queue", size), &request, |bencher, request| {
            let mut server_buffer = [0_u8; MESSAGE_BYTES];
            let mut client_buffer = [0_u8; MESSAGE_BYTES];
            bencher.iter(|| {
                assert!(requests.push(Message::from(black_box(request))).is_ok());
                let length = requests.pop().unwrap().copy_to(&mut server_buffer);
                assert!(responses.push(Message::from(&server_buffer[..length])).is_ok());
                let length = responses.pop().unwrap().copy_to(&mut client_buffer);
                black_box((length, &client_buffer));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
