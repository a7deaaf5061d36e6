//! User memory as claims (Hubris's `USlice`): a system call's pointer and
//! length arrive as a [`UserSlice`], which only a checked method turns into
//! bytes the kernel reads or writes.
//!
//! The check has two parts. [`UserSlice::new`] refuses ranges that wrap or
//! leave the user half (so a kernel address can never be copied from or
//! to), and alignment the call requires. The copy itself is fault-tolerant
//! (`arch::usercopy`): an unmapped page, or a write to a read-only page, ends
//! it with [`Error::BadAddress`] instead of a kernel fault. SMAP stays on
//! everywhere else.

use alloc::{string::String, vec};

use orrery_abi::{Error, USER_END};

use crate::arch::usercopy;

/// A range of user memory a program claims is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSlice {
    address: u64,
    length: u64,
}

impl UserSlice {
    /// Checks that `address .. address + length` lies in the user half and
    /// does not wrap, and that `address` is a multiple of `alignment` (a
    /// power of two; 1 for byte buffers).
    pub fn new(address: u64, length: u64, alignment: u64) -> Result<Self, Error> {
        if !address.is_multiple_of(alignment.max(1)) {
            return Err(Error::Misaligned);
        }
        let end = address.checked_add(length).ok_or(Error::BadAddress)?;
        if end > USER_END {
            return Err(Error::BadAddress);
        }
        if length > 0 && address == 0 {
            // The first page is never mapped; say so without trying.
            return Err(Error::BadAddress);
        }
        Ok(Self { address, length })
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.length as usize
    }

    /// True when it is empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Its address.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Copies the user bytes into `destination` (which must be as long).
    pub fn read_into(&self, destination: &mut [u8]) -> Result<(), Error> {
        assert_eq!(destination.len(), self.len(), "destination sized to the claim");
        self.copy_faulting_in(|offset| {
            // SAFETY: the kernel buffer is valid for `length` bytes; the user
            // range lies in the user half (checked in `new`), so a fault can
            // only come from the user side and is caught.
            unsafe {
                usercopy::copy(
                    destination[offset..].as_mut_ptr(),
                    (self.address + offset as u64) as *const u8,
                    self.len() - offset,
                )
            }
        })
    }

    /// Copies `source` to the user range (which must be as long).
    pub fn write_from(&self, source: &[u8]) -> Result<(), Error> {
        assert_eq!(source.len(), self.len(), "source sized to the claim");
        self.copy_faulting_in(|offset| {
            // SAFETY: as in `read_into`, in the other direction.
            unsafe {
                usercopy::copy(
                    (self.address + offset as u64) as *mut u8,
                    source[offset..].as_ptr(),
                    self.len() - offset,
                )
            }
        })
    }

    /// Runs `copy(offset)` (the copy of the range from `offset` on); where
    /// it stops at a page the process would get on a fault of its own (its
    /// stack grows on first touch), maps that page and goes on. Each retry
    /// follows a page newly mapped, so this ends.
    fn copy_faulting_in(&self, mut copy: impl FnMut(usize) -> Result<(), usercopy::CopyFault>) -> Result<(), Error> {
        let mut offset = 0;
        loop {
            match copy(offset) {
                Ok(()) => return Ok(()),
                Err(fault) => {
                    offset += fault.copied;
                    if !crate::proc::fault_in_for_current(self.address + offset as u64) {
                        return Err(Error::BadAddress);
                    }
                }
            }
        }
    }

    /// Reads the range as UTF-8 text of at most `max` bytes.
    pub fn read_text(&self, max: u64) -> Result<String, Error> {
        if self.length > max {
            return Err(Error::BadLength);
        }
        let mut bytes = vec![0u8; self.len()];
        self.read_into(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| Error::NotUtf8)
    }

    /// Writes a value's bytes (a `#[repr(C)]` plain-data struct) to the
    /// range.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        if bytes.len() as u64 > self.length {
            return Err(Error::BadLength);
        }
        UserSlice { address: self.address, length: bytes.len() as u64 }.write_from(bytes)
    }
}
