//! The supervisor (init): the first process. It holds the program images
//! the loader handed over and creates every other process from them. At
//! boot it runs the demonstrations — hello, a mailbox echo server and
//! client, and the fault demos — checks how each ended, and exits 0 when
//! all ended as they should.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;

use orrery_runtime::{
    ExitStatus, StartInfo,
    abi::FaultKind,
    mailbox::Server,
    println,
    sys::{self, Handle},
};

orrery_runtime::entry!(main);

fn image(name: &str) -> Option<u64> {
    let count = sys::image_count().ok()?;
    let mut buffer = [0u8; 64];
    (0..count)
        .find(|index| sys::image_name(*index, &mut buffer).is_ok_and(|length| &buffer[..length] == name.as_bytes()))
}

fn run(name: &str, argument: u64) -> Result<ExitStatus, String> {
    let image = image(name).ok_or_else(|| alloc::format!("no image {name}"))?;
    let child = sys::process_create(image, name, argument).map_err(|e| alloc::format!("create {name}: {e}"))?;
    sys::process_start(child).map_err(|e| alloc::format!("start {name}: {e}"))?;
    sys::process_wait(child).map_err(|e| alloc::format!("wait {name}: {e}"))
}

fn echo(rounds: u64) -> Result<(ExitStatus, ExitStatus), String> {
    let mailbox = Server::create(8).map_err(|e| alloc::format!("mailbox: {e:?}"))?;
    let server_image = image("echo-server").ok_or("no echo-server image")?;
    let client_image = image("echo-client").ok_or("no echo-client image")?;
    let server = sys::process_create(server_image, "echo-server", 0).map_err(|e| alloc::format!("{e}"))?;
    let client = sys::process_create(client_image, "echo-client", rounds).map_err(|e| alloc::format!("{e}"))?;
    sys::mailbox_grant(mailbox.handle(), server, true).map_err(|e| alloc::format!("grant: {e}"))?;
    sys::mailbox_grant(mailbox.handle(), client, false).map_err(|e| alloc::format!("grant: {e}"))?;
    // The client may only talk to its mailbox, print and exit.
    use orrery_runtime::abi::Syscall::*;
    let allowed = [Log, Exit, MailboxCall, MailboxWait, MailboxRing, MailboxAddress, MailboxSlots, TscHz, CpuId]
        .iter()
        .fold(0, |mask, call| mask | call.bit());
    sys::process_restrict(client, allowed).map_err(|e| alloc::format!("restrict: {e}"))?;
    sys::process_start(server).map_err(|e| alloc::format!("{e}"))?;
    sys::process_start(client).map_err(|e| alloc::format!("{e}"))?;
    let client_status = sys::process_wait(client).map_err(|e| alloc::format!("{e}"))?;
    sys::process_kill(server, 0).map_err(|e| alloc::format!("{e}"))?;
    let server_status = sys::process_wait(server).map_err(|e| alloc::format!("{e}"))?;
    let _ = Handle(0);
    Ok((client_status, server_status))
}

fn main(_start: &StartInfo) -> u32 {
    let mut failures = 0;
    let mut check = |what: &str, got: Result<ExitStatus, String>, wanted: fn(&ExitStatus) -> bool| match got {
        Ok(status) if wanted(&status) => println!("init: {what}: {status:?} (as expected)"),
        Ok(status) => {
            println!("init: {what}: {status:?} (UNEXPECTED)");
            failures += 1;
        }
        Err(error) => {
            println!("init: {what}: {error}");
            failures += 1;
        }
    };
    println!("init: {} program images", sys::image_count().unwrap_or(0));
    check("hello", run("hello", 0), |status| *status == ExitStatus::Exited(0));
    match echo(1000) {
        Ok((client, server)) => {
            check("echo client", Ok(client), |status| *status == ExitStatus::Exited(0));
            check("echo server", Ok(server), |status| *status == ExitStatus::Killed(0));
        }
        Err(error) => check("echo", Err(error), |_| false),
    }
    check("fault demo: page fault", run("fault-demo", 0), |status| {
        matches!(status, ExitStatus::Faulted { kind: FaultKind::PageFault, address: 0xdead_0000 })
    });
    check("fault demo: general protection", run("fault-demo", 1), |status| {
        matches!(status, ExitStatus::Faulted { kind: FaultKind::GeneralProtection, .. })
    });
    check("fault demo: invalid opcode", run("fault-demo", 2), |status| {
        matches!(status, ExitStatus::Faulted { kind: FaultKind::InvalidOpcode, .. })
    });
    check("fault demo: divide error", run("fault-demo", 3), |status| {
        matches!(status, ExitStatus::Faulted { kind: FaultKind::DivideError, .. })
    });
    check("fault demo: write to text", run("fault-demo", 4), |status| {
        matches!(status, ExitStatus::Faulted { kind: FaultKind::PageFault, .. })
    });
    check("fault demo: panic", run("fault-demo", 5), |status| {
        *status == ExitStatus::Exited(orrery_runtime::PANIC_STATUS)
    });
    println!("init: done, {failures} unexpected");
    if failures == 0 { 0 } else { 1 }
}
