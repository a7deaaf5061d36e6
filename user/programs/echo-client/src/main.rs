//! Calls the echo server through the mailbox its parent granted, `argument`
//! times (low 32 bits), checking every answer; prints the mean round trip.
//! With bit 32 of `argument` set it prints nothing and exits with the mean
//! TSC ticks per round trip instead (for the benchmarks).
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
    if bench {
        return (ticks / rounds) as u32;
    }
    println!("echo-client: {rounds} round trips, {} TSC ticks each on average (cpu{})", ticks / rounds, sys::cpu_id());
    0
}
