//! Calls the echo server through the mailbox its parent granted, `argument`
//! times (low 32 bits), checking every answer; prints the mean round trip.
//! With bit 32 of `argument` set it sends one fixed 32-byte request each
//! time (checking each answer's length and status, and its bytes at the
//! end), prints nothing and exits with the mean TSC ticks per round trip
//! (for the benchmarks; `u32::MAX` on a wrong answer).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{StartInfo, mailbox::Client, println, sys};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    let Ok(mut client) = Client::open(sys::Handle(start.first_mailbox)) else {
        println!("echo-client: cannot open the mailbox");
        return 2;
    };
    let rounds = (start.argument & 0xffff_ffff).max(1);
    let bench = start.argument & (1 << 32) != 0;
    let mut request = [0u8; 64];
    let mut response = [0u8; 224];
    if bench {
        // The round trip alone: one request, filled once; each answer's
        // length and status are checked, its bytes once at the end.
        let request = [0x5au8; 32];
        let begin = sys::tsc();
        for _ in 0..rounds {
            match client.call(&request, &mut response) {
                Ok((32, 0)) => {}
                _ => return u32::MAX,
            }
        }
        let ticks = sys::tsc() - begin;
        if response[..32] != request {
            return u32::MAX;
        }
        return (ticks / rounds) as u32;
    }
    let begin = sys::tsc();
    for round in 0..rounds {
        let length = 8 + (round % 56) as usize;
        for (index, byte) in request[..length].iter_mut().enumerate() {
            *byte = (round as u8).wrapping_add(index as u8);
        }
        match client.call(&request[..length], &mut response) {
            Ok((answered, 0)) if answered == length && response[..length] == request[..length] => {}
            Ok(other) => {
                println!("echo-client: round {round}: wrong answer {other:?}");
                return 3;
            }
            Err(error) => {
                println!("echo-client: round {round}: {error:?}");
                return 4;
            }
        }
    }
    let ticks = sys::tsc() - begin;
    println!("echo-client: {rounds} round trips, {} TSC ticks each on average (cpu{})", ticks / rounds, sys::cpu_id());
    0
}
