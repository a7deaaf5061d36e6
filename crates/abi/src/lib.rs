//! The Orrery system-call ABI, shared by the kernel and user programs.
//!
//! One crate both sides compile, so a number, an error code or a layout can
//! never disagree between them (Hubris keeps its ABI the same way). Nothing
//! here does anything: it is numbers, `#[repr(C)]` layouts and their
//! documentation.
//!
//! # Calling convention
//!
//! `syscall` with the number in `rax` and up to six arguments in `rdi`,
//! `rsi`, `rdx`, `r10`, `r8`, `r9`. The result comes back in `rax`: a value
//! `>= 0` is success, a value in `-4095..0` is `-(error code)` (see
//! [`Error`]). `rcx` and `r11` are clobbered by the instruction itself, and
//! a system call may clobber every other register the System V ABI makes
//! caller-saved (`rdx`, `rsi`, `rdi`, `r8`-`r10`; the kernel zeroes those it
//! does not restore); `rbx`, `rbp`, `rsp` and `r12`-`r15` are preserved.
//!
//! The vector registers (`xmm`/`ymm`) and the x87 stack are caller-saved
//! across a system call, exactly as across a function call in the System V
//! ABI: the kernel preserves MXCSR and the x87 control word but not the
//! registers' contents, so a thread blocked in a system call needs no saved
//! vector state. User code calls through wrappers that declare this
//! (`clobber_abi("C")`). The kernel never leaks another context's registers:
//! they come back zeroed or as the thread left them.
//!
//! # Pointers
//!
//! Every pointer a program passes is a claim the kernel checks before use:
//! it must lie wholly in the program's half of the address space, be mapped
//! with the access the call needs, and be aligned as the call says. A bad
//! pointer, length or flag gives an error code, never a fault in the kernel.
#![no_std]
#![forbid(unsafe_code)]

pub mod layout;

pub use layout::*;

/// System-call numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// Does nothing and returns 0 (measures the round trip).
    Null = 0,
    /// `exit(status)`: ends the calling process with `status`. Does not return.
    Exit = 1,
    /// `yield()`: gives up the CPU; returns 0.
    Yield = 2,
    /// `sleep_until(deadline_tsc)`: sleeps until the TSC reaches the deadline.
    SleepUntil = 3,
    /// `log(text, length)`: writes UTF-8 text to the kernel console, prefixed
    /// with the process name. At most [`MAX_LOG_BYTES`] bytes.
    Log = 4,
    /// `tsc_hz()`: the TSC frequency.
    TscHz = 5,
    /// `map_memory(length, flags)`: maps zeroed private memory (flags:
    /// [`MAP_WRITE`]) and returns its address.
    MapMemory = 6,
    /// `unmap_memory(address, length)`: unmaps memory mapped by `map_memory`
    /// (the whole mapping). Pages of it shared with a child stay mapped
    /// there until the child ends.
    UnmapMemory = 7,
    /// `image_count()`: how many program images the supervisor holds.
    /// Supervisor only.
    ImageCount = 8,
    /// `image_name(index, buffer, length)`: copies the image's name; returns
    /// its length. Supervisor only.
    ImageName = 9,
    /// `process_create(image, name, name_length)`: creates a process from an
    /// image, in the CREATED state; returns its handle.
    ProcessCreate = 10,
    /// `process_start(handle)`: makes a CREATED process runnable.
    /// `WrongState` if it is not CREATED, or was killed before the call
    /// returned (it does not run on); a failure after it left CREATED
    /// (`OutOfMemory`, or `LimitReached` when the kernel's thread table is
    /// full) ends it, so a wait for it returns.
    ProcessStart = 11,
    /// `process_wait(handle)`: waits until the process has ended; returns its
    /// packed [`ExitStatus`].
    ProcessWait = 12,
    /// `process_kill(handle, reason)`: kills a process this one controls.
    ProcessKill = 13,
    /// `process_restrict(handle, allowed)`: limits the system calls a CREATED
    /// process may make to the bit set `allowed` (bit n = syscall n).
    ProcessRestrict = 14,
    /// `process_share(handle, address, length, reserved, flags)`: maps pages
    /// of this process into a CREATED child's shared region (flags:
    /// [`SHARE_WRITE`]) and returns where they are mapped there. The pages
    /// must be this process's memory; stack pages it has not touched yet are
    /// mapped first, as a touch would map them. They stay allocated for as
    /// long as either process maps them: this one may end, or unmap them,
    /// first. `reserved` must be 0 (else `BadFlags`).
    ProcessShare = 15,
    /// `mailbox_create(slots)`: makes a mailbox, maps it here (this process
    /// may serve it and grant it) and returns its handle; its address comes
    /// from `mailbox_address`.
    MailboxCreate = 16,
    /// `mailbox_grant(handle, process, role)`: gives a CREATED child a
    /// handle to a mailbox this process created, as its server
    /// ([`RING_SERVER`]) or a client ([`RING_CLIENT`]), mapped into the
    /// child; returns the child's handle number.
    MailboxGrant = 17,
    /// `mailbox_address(handle)`: where the mailbox is mapped in this process.
    MailboxAddress = 18,
    /// `mailbox_ring(handle, side)`: rings the other side's doorbell; `side`
    /// is [`RING_SERVER`] or [`RING_CLIENT`].
    MailboxRing = 19,
    /// `mailbox_wait(handle, side, seen, deadline_tsc)`: waits until `side`'s
    /// doorbell count differs from `seen` (or the deadline, 0 for none);
    /// returns the count.
    MailboxWait = 20,
    /// `mailbox_call(handle, seen)`: rings the server and waits on the
    /// client doorbell in one call (see `mailbox_wait`).
    MailboxCall = 21,
    /// `mailbox_reply_wait(handle, seen)`: rings the clients and waits on
    /// the server doorbell in one call.
    MailboxReplyWait = 22,
    /// `handle_close(handle)`.
    HandleClose = 23,
    /// `process_set_name(handle, name, length)`: renames a CREATED child.
    ProcessSetName = 24,
    /// `process_id()`: the caller's process id.
    ProcessId = 25,
    /// `cpu_id()`: the CPU the caller runs on (a hint: it may move).
    CpuId = 26,
    /// `mailbox_slots(handle)`: how many slots the mailbox has.
    MailboxSlots = 27,
}

/// Number of system calls; numbers at or above this are invalid.
pub const SYSCALL_COUNT: u64 = 28;

impl Syscall {
    /// The call with this number.
    pub fn from_number(number: u64) -> Option<Self> {
        use Syscall::*;
        Some(match number {
            0 => Null,
            1 => Exit,
            2 => Yield,
            3 => SleepUntil,
            4 => Log,
            5 => TscHz,
            6 => MapMemory,
            7 => UnmapMemory,
            8 => ImageCount,
            9 => ImageName,
            10 => ProcessCreate,
            11 => ProcessStart,
            12 => ProcessWait,
            13 => ProcessKill,
            14 => ProcessRestrict,
            15 => ProcessShare,
            16 => MailboxCreate,
            17 => MailboxGrant,
            18 => MailboxAddress,
            19 => MailboxRing,
            20 => MailboxWait,
            21 => MailboxCall,
            22 => MailboxReplyWait,
            23 => HandleClose,
            24 => ProcessSetName,
            25 => ProcessId,
            26 => CpuId,
            27 => MailboxSlots,
            _ => return None,
        })
    }

    /// Its bit in a syscall mask (`process_restrict`).
    pub const fn bit(self) -> u64 {
        1 << self as u64
    }
}

/// Every system call allowed.
pub const ALL_SYSCALLS: u64 = (1 << SYSCALL_COUNT) - 1;

/// `map_memory` flag: writable (memory is never executable).
pub const MAP_WRITE: u64 = 1;
/// `process_share` flag: the child may write the shared pages.
pub const SHARE_WRITE: u64 = 1;
/// `mailbox_ring`/`mailbox_wait` side: the server's doorbell (requests).
pub const RING_SERVER: u64 = 0;
/// `mailbox_ring`/`mailbox_wait` side: the clients' doorbell (replies).
pub const RING_CLIENT: u64 = 1;
/// Longest `log` text.
pub const MAX_LOG_BYTES: u64 = 1024;
/// Longest process or image name.
pub const MAX_NAME_BYTES: u64 = 64;
/// Most slots in one mailbox.
pub const MAX_MAILBOX_SLOTS: u64 = 256;
/// Largest single `map_memory` request.
pub const MAX_MAP_BYTES: u64 = 64 << 20;

/// Error codes, returned negated in `rax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// No such system call.
    NoSuchCall = 1,
    /// A pointer argument is not in user memory, not mapped with the needed
    /// access, or its range wraps.
    BadAddress = 2,
    /// A length is zero where it may not be, or too large.
    BadLength = 3,
    /// A pointer is not aligned as the call requires.
    Misaligned = 4,
    /// A flag or selector is not one the call knows.
    BadFlags = 5,
    /// No such handle in this process.
    BadHandle = 6,
    /// The handle is of the wrong kind for this call.
    WrongHandleKind = 7,
    /// The process is not in a state that allows this (e.g. not CREATED).
    WrongState = 8,
    /// The caller does not control the target process.
    NotPermitted = 9,
    /// The call is not in this process's allowed set.
    Restricted = 10,
    /// Out of memory.
    OutOfMemory = 11,
    /// Too many handles, processes, or slots.
    LimitReached = 12,
    /// A deadline passed.
    TimedOut = 13,
    /// The other side of a mailbox has gone.
    PeerGone = 14,
    /// Text is not UTF-8.
    NotUtf8 = 15,
    /// No such image.
    NoSuchImage = 16,
    /// The range is not mapped memory this process may unmap.
    NotMapped = 17,
    /// The address range overlaps an existing mapping.
    Overlaps = 18,
}

impl Error {
    /// The error for a negated `rax` code.
    pub fn from_code(code: i64) -> Option<Self> {
        use Error::*;
        Some(match code {
            1 => NoSuchCall,
            2 => BadAddress,
            3 => BadLength,
            4 => Misaligned,
            5 => BadFlags,
            6 => BadHandle,
            7 => WrongHandleKind,
            8 => WrongState,
            9 => NotPermitted,
            10 => Restricted,
            11 => OutOfMemory,
            12 => LimitReached,
            13 => TimedOut,
            14 => PeerGone,
            15 => NotUtf8,
            16 => NoSuchImage,
            17 => NotMapped,
            18 => Overlaps,
            _ => return None,
        })
    }

    /// The value put in `rax`.
    pub const fn to_return(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// A short description.
    pub const fn description(self) -> &'static str {
        match self {
            Error::NoSuchCall => "no such system call",
            Error::BadAddress => "bad address",
            Error::BadLength => "bad length",
            Error::Misaligned => "misaligned pointer",
            Error::BadFlags => "bad flags",
            Error::BadHandle => "bad handle",
            Error::WrongHandleKind => "wrong kind of handle",
            Error::WrongState => "wrong process state",
            Error::NotPermitted => "not permitted",
            Error::Restricted => "system call not allowed for this process",
            Error::OutOfMemory => "out of memory",
            Error::LimitReached => "limit reached",
            Error::TimedOut => "timed out",
            Error::PeerGone => "the other side has gone",
            Error::NotUtf8 => "text is not UTF-8",
            Error::NoSuchImage => "no such image",
            Error::NotMapped => "not mapped",
            Error::Overlaps => "overlaps a mapping",
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.description())
    }
}

/// Decodes a raw `rax` result.
pub fn decode_result(rax: u64) -> Result<u64, Error> {
    let signed = rax as i64;
    if (-4095..0).contains(&signed) { Err(Error::from_code(-signed).unwrap_or(Error::NoSuchCall)) } else { Ok(rax) }
}

/// How a process ended, as `process_wait` reports it (packed in a `u64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)` (or returned `code` from `main`).
    Exited(u32),
    /// Another process killed it with this reason.
    Killed(u32),
    /// It faulted and the kernel ended it.
    Faulted {
        /// Which fault.
        kind: FaultKind,
        /// The faulting address for page faults, else the instruction address.
        address: u64,
    },
}

/// The faults that end a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultKind {
    /// A page fault: unmapped, or an access the mapping does not allow.
    PageFault = 1,
    /// A general-protection fault (a privileged instruction, a
    /// non-canonical address).
    GeneralProtection = 2,
    /// An invalid opcode.
    InvalidOpcode = 3,
    /// A divide error.
    DivideError = 4,
    /// Any other exception (the vector is kept in the low bits).
    Other = 5,
    /// Not a CPU fault: the kernel had no memory to keep the thread's state
    /// when it left user mode (its vector registers, saved at an interrupt
    /// or exception), so the thread could not go on. The address is the
    /// instruction it was at.
    OutOfMemory = 6,
}

const TAG_SHIFT: u32 = 62;
const TAG_EXITED: u64 = 0;
const TAG_KILLED: u64 = 1;
const TAG_FAULTED: u64 = 2;

impl ExitStatus {
    /// Packs the status for `rax`: two tag bits, then for faults the kind
    /// (8 bits) and 48 bits of address, else the 32-bit code.
    pub fn encode(self) -> u64 {
        match self {
            ExitStatus::Exited(code) => (TAG_EXITED << TAG_SHIFT) | u64::from(code),
            ExitStatus::Killed(reason) => (TAG_KILLED << TAG_SHIFT) | u64::from(reason),
            ExitStatus::Faulted { kind, address } => {
                (TAG_FAULTED << TAG_SHIFT) | (u64::from(kind as u8) << 48) | (address & 0xffff_ffff_ffff)
            }
        }
    }

    /// Unpacks what [`ExitStatus::encode`] made; `None` for anything else.
    pub fn decode(word: u64) -> Option<Self> {
        let low = (word & 0xffff_ffff) as u32;
        match word >> TAG_SHIFT {
            TAG_EXITED if word >> 32 == 0 => Some(ExitStatus::Exited(low)),
            TAG_KILLED if (word >> 32) & 0x3fff_ffff == 0 => Some(ExitStatus::Killed(low)),
            TAG_FAULTED => {
                let kind = match ((word >> 48) & 0xff) as u8 {
                    1 => FaultKind::PageFault,
                    2 => FaultKind::GeneralProtection,
                    3 => FaultKind::InvalidOpcode,
                    4 => FaultKind::DivideError,
                    5 => FaultKind::Other,
                    6 => FaultKind::OutOfMemory,
                    _ => return None,
                };
                let mut address = word & 0xffff_ffff_ffff;
                // Sign-extend: kernel addresses show as themselves.
                if address & (1 << 47) != 0 {
                    address |= 0xffff_0000_0000_0000;
                }
                Some(ExitStatus::Faulted { kind, address })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips() {
        for number in 0..SYSCALL_COUNT {
            let call = Syscall::from_number(number).expect("numbers are dense");
            assert_eq!(call as u64, number);
        }
        assert_eq!(Syscall::from_number(SYSCALL_COUNT), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    #[test]
    fn errors_round_trip_through_rax() {
        for code in 1..=18 {
            let error = Error::from_code(code).expect("codes are dense");
            assert_eq!(decode_result(error.to_return()), Err(error));
        }
        assert_eq!(decode_result(0), Ok(0));
        assert_eq!(decode_result(0x7fff_ffff_ffff), Ok(0x7fff_ffff_ffff));
        // Large positive values (addresses in the upper half) are not errors.
        assert_eq!(decode_result(u64::MAX - 5000), Ok(u64::MAX - 5000));
    }

    #[test]
    fn exit_statuses_round_trip() {
        let statuses = [
            ExitStatus::Exited(0),
            ExitStatus::Exited(u32::MAX),
            ExitStatus::Killed(7),
            ExitStatus::Faulted { kind: FaultKind::PageFault, address: 0x1000 },
            ExitStatus::Faulted { kind: FaultKind::GeneralProtection, address: 0xffff_8000_0000_0000 },
            ExitStatus::Faulted { kind: FaultKind::DivideError, address: 0x40_1234 },
            ExitStatus::Faulted { kind: FaultKind::Other, address: 0x40_0000 },
            ExitStatus::Faulted { kind: FaultKind::OutOfMemory, address: 0x40_1000 },
        ];
        for status in statuses {
            assert_eq!(ExitStatus::decode(status.encode()), Some(status), "{status:?}");
        }
        assert_eq!(ExitStatus::decode(u64::MAX), None);
    }

    #[test]
    fn every_fault_kind_decodes_to_itself() {
        let fault = |code: u64| (TAG_FAULTED << TAG_SHIFT) | (code << 48) | 0x40_1000;
        for code in 1..=6 {
            match ExitStatus::decode(fault(code)) {
                Some(ExitStatus::Faulted { kind, address: 0x40_1000 }) => assert_eq!(kind as u64, code),
                other => panic!("fault kind {code} decoded as {other:?}"),
            }
        }
        // Kinds are dense: the next code is not one.
        assert_eq!(ExitStatus::decode(fault(7)), None);
        assert_eq!(ExitStatus::decode(fault(0)), None);
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_word_never_panics(word in proptest::num::u64::ANY) {
            if let Some(status) = ExitStatus::decode(word) {
                // What decodes, encodes back to something that decodes the same.
                proptest::prop_assert_eq!(ExitStatus::decode(status.encode()), Some(status));
            }
        }
    }
}
