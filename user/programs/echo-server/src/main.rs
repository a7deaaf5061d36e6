//! Serves the mailbox its parent granted: answers every request with its
//! own bytes.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{StartInfo, mailbox::Server, println, sys::Handle};

orrery_runtime::entry!(main);

fn main(start: &StartInfo) -> u32 {
    if start.mailbox_count == 0 {
        println!("echo-server: no mailbox granted");
        return 2;
    }
    let mut server = match Server::open(Handle(start.first_mailbox)) {
        Ok(server) => server,
        Err(error) => {
            println!("echo-server: cannot open the mailbox: {error:?}");
            return 3;
        }
    };
    let result = server.serve(|request, response| {
        response[..request.len()].copy_from_slice(request);
        (request.len(), 0)
    });
    println!("echo-server: stopped: {result:?}");
    4
}
