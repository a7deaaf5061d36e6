//! Tests of frames that several address spaces map (mailbox pages): they
//! stay allocated while any address space maps them, whatever handles are
//! closed, and go back exactly once when the last mapping goes.

use alloc::{format, string::String, vec::Vec};

use orrery_abi::ExitStatus;
use orrery_frames::Frame;

use super::processes::{Footprint, create, end_and_join};
use crate::{
    arch::paging::PAGE_SIZE,
    check, check_eq, ktest,
    mm::frames,
    proc::{Process, mailbox::MailboxObject},
};

/// The frames mapped at `pages` pages from `address` in `process`.
fn frames_at(process: &Process, address: u64, pages: u64) -> Result<Vec<Frame>, String> {
    (0..pages)
        .map(|page| {
            let at = address + page * PAGE_SIZE;
            process
                .task()
                .with_address_space(|space| space.translate(at))
                .flatten()
                .map(|(physical, _)| Frame::containing(physical))
                .ok_or_else(|| format!("{at:#x} is not mapped in process {}", process.id()))
        })
        .collect()
}

/// Fails if a frame of `shared` is free: an address space maps them all.
fn check_allocated(shared: &[Frame], when: &str) -> Result<(), String> {
    for frame in shared {
        check!(!frames::is_free(*frame), "frame {:#x} was freed while mapped, {when}", frame.address());
    }
    Ok(())
}

/// Fails unless every frame of `shared` is free: nothing maps them any more.
fn check_freed(shared: &[Frame], when: &str) -> Result<(), String> {
    for frame in shared {
        check!(frames::is_free(*frame), "frame {:#x} is still allocated {when}", frame.address());
    }
    Ok(())
}

/// A process serving a mailbox closes its handle, the last one: the pages
/// stay while it maps them.
fn mailbox_outlives_its_handles() -> Result<(), String> {
    let server = create("spinner", 1)?;
    let outcome = (|| {
        let mailbox = MailboxObject::new(8).map_err(|e| format!("{e}"))?;
        let handle = server.grant_mailbox(&mailbox, true).map_err(|e| format!("grant: {e}"))?;
        let address = match server.handle(handle) {
            Ok(crate::proc::Handle::Mailbox { address, .. }) => address,
            _ => return Err("no mailbox handle".into()),
        };
        let pages = mailbox.bytes() / PAGE_SIZE;
        let own = frames_at(&server, address, pages)?;
        drop(mailbox);
        check_eq!(server.close_handle(handle), Ok(()));
        check_allocated(&own, "after the last handle to the mailbox was closed")?;
        server.start().map_err(|e| format!("start: {e}"))?;
        end_and_join(&server, ExitStatus::Killed(6));
        check_freed(&own, "once nothing maps them")
    })();
    end_and_join(&server, ExitStatus::Killed(1));
    outcome
}

ktest!(mailbox_pages_stay_while_mapped, || {
    mailbox_outlives_its_handles()?;
    let before = Footprint::settled();
    mailbox_outlives_its_handles()?;
    before.check_nothing_left("a mailbox whose handles closed before its pages were unmapped").map(drop)
});
