//! The `#[repr(C)]` layout of a mailbox in shared memory: one [`Header`]
//! followed by an array of [`Slot`]s, and the values their fields may hold.
//!
//! This is what the ABI crate re-exports: the kernel maps these pages but
//! never reads them, so the layout is an agreement between user programs
//! only. Every field is an atomic because the other side may write any field
//! at any time; a plain `u8` that another process writes concurrently would
//! be a data race, undefined behaviour even if the value were then ignored.
//!
//! ```text
//!  mailbox mapping (N pages)         one Slot (256 bytes, 64-aligned)
//!  +------------------+ 0            +--------------------------------+ 0
//!  | Header (256 B)   |              | control: u64                   |
//!  +------------------+ 256          |   bits 0..32  state            |
//!  | Slot 0           |              |   bits 32..64 sequence         |
//!  +------------------+ 512          | request_length: u32            | 8
//!  | Slot 1           |              | response_length: u32           | 12
//!  | ...              |              | status: u32                    | 16
//!  | Slot 16N-2       |              | reserved: [u32; 3] (zero)      | 20
//!  +------------------+ 4096 N       | data: [u64; 28] (224 bytes)    | 32
//!                                    +--------------------------------+ 256
//! ```
//!
//! State and sequence share one 64-bit word so that every transition is a
//! single compare-exchange on both: a transition made with a stale ticket (the
//! slot was freed and claimed again) fails instead of acting on someone
//! else's request. Multi-byte fields are little-endian (x86_64's order);
//! message bytes are packed into the data words in little-endian order, so
//! byte `i` of a message is byte `i % 8` of word `i / 8`.

use crate::sync::{AtomicU32, AtomicU64};

/// Largest request, and largest response, in bytes: what fills a slot to 256
/// bytes after its 32 bytes of control fields.
pub const MESSAGE_BYTES: usize = 224;
/// Words of message data in a slot.
pub const MESSAGE_WORDS: usize = MESSAGE_BYTES / 8;
/// Bytes of one [`Slot`].
pub const SLOT_BYTES: usize = 256;
/// Bytes of the [`Header`]: one slot's worth, so slots stay 256-aligned and a
/// page holds the header and [`SLOTS_IN_FIRST_PAGE`] slots exactly.
pub const HEADER_BYTES: usize = 256;
/// Slots in a one-page mailbox: (4096 - 256) / 256.
pub const SLOTS_IN_FIRST_PAGE: usize = (4096 - HEADER_BYTES) / SLOT_BYTES;

/// `Header::magic` of an initialised mailbox: `"OMBX"` in memory.
pub const MAGIC: u32 = u32::from_le_bytes(*b"OMBX");
/// `Header::version` this crate speaks.
pub const VERSION: u32 = 1;

/// Slots that fit in a mapping of `mapping_bytes` after the header.
pub const fn slot_capacity(mapping_bytes: usize) -> usize {
    mapping_bytes.saturating_sub(HEADER_BYTES) / SLOT_BYTES
}

/// The states of a slot's control word (its low 32 bits). Any other value in
/// shared memory is corruption, reported as the raw number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SlotState {
    /// Unused; any client may claim it. Zeroed memory is all-free.
    Free = 0,
    /// A client owns it and is writing a request.
    Claimed = 1,
    /// A request waits for the server.
    Posted = 2,
    /// The server owns it and is working on the request.
    Serving = 3,
    /// A response waits for the client.
    Replied = 4,
}

impl SlotState {
    /// The state a raw value names, if any.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Free),
            1 => Some(Self::Claimed),
            2 => Some(Self::Posted),
            3 => Some(Self::Serving),
            4 => Some(Self::Replied),
            _ => None,
        }
    }
}

/// A decoded control word, as found in shared memory: what errors report
/// when a slot is not in the state the honest side expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Control {
    /// The slot's claim count, bumped by every claim (wrapping).
    pub sequence: u32,
    /// The raw state; [`SlotState::from_raw`] names it if it is valid.
    pub state: u32,
}

impl Control {
    pub(crate) const fn new(sequence: u32, state: SlotState) -> Self {
        Self { sequence, state: state as u32 }
    }

    pub(crate) const fn from_word(word: u64) -> Self {
        // Truncations intended: the word is two 32-bit halves.
        Self { sequence: (word >> 32) as u32, state: word as u32 }
    }

    pub(crate) const fn word(self) -> u64 {
        ((self.sequence as u64) << 32) | self.state as u64
    }

    /// The state, if the raw value is one.
    pub const fn slot_state(self) -> Option<SlotState> {
        SlotState::from_raw(self.state)
    }
}

/// One element of the mailbox: a request and, later, its response.
///
/// Field meanings and who writes them:
///
/// | field | written by | meaning |
/// |---|---|---|
/// | `control` | whoever makes a transition | state and sequence, see [`crate::Mailbox`] |
/// | `request_length` | client, while `Claimed` | bytes of request in `data` |
/// | `response_length` | server, while `Serving` | bytes of response in `data` |
/// | `status` | server, while `Serving` | the server's result code |
/// | `data` | client, then server | request, then response, in place |
#[repr(C, align(64))]
pub struct Slot {
    pub(crate) control: AtomicU64,
    pub(crate) request_length: AtomicU32,
    pub(crate) response_length: AtomicU32,
    pub(crate) status: AtomicU32,
    /// Zero; room for flags in a later version.
    pub(crate) reserved: [AtomicU32; 3],
    pub(crate) data: [AtomicU64; MESSAGE_WORDS],
}

/// The first 256 bytes of a mailbox: identification, written once by the
/// creator before the mailbox is shared.
///
/// [`crate::Mailbox::new`] checks it once and then relies only on its own
/// copy of the slot count: the other side may rewrite the header later, and
/// nothing reads it again.
#[repr(C, align(64))]
pub struct Header {
    pub(crate) magic: AtomicU32,
    pub(crate) version: AtomicU32,
    pub(crate) slot_count: AtomicU32,
    pub(crate) slot_bytes: AtomicU32,
    pub(crate) message_bytes: AtomicU32,
    /// Zero; pads the header to [`HEADER_BYTES`].
    pub(crate) reserved: [AtomicU32; 59],
}

#[cfg(not(loom))]
impl Slot {
    /// A free slot with sequence 0, as zeroed memory is.
    pub const fn new() -> Self {
        Self {
            control: AtomicU64::new(0),
            request_length: AtomicU32::new(0),
            response_length: AtomicU32::new(0),
            status: AtomicU32::new(0),
            reserved: [const { AtomicU32::new(0) }; 3],
            data: [const { AtomicU64::new(0) }; MESSAGE_WORDS],
        }
    }
}

#[cfg(not(loom))]
impl Header {
    /// An all-zero header, as zeroed memory is; [`crate::Mailbox::initialize`]
    /// fills it in.
    pub const fn new() -> Self {
        Self {
            magic: AtomicU32::new(0),
            version: AtomicU32::new(0),
            slot_count: AtomicU32::new(0),
            slot_bytes: AtomicU32::new(0),
            message_bytes: AtomicU32::new(0),
            reserved: [const { AtomicU32::new(0) }; 59],
        }
    }
}

// Loom's atomics have no `const` constructors.
#[cfg(loom)]
impl Slot {
    /// A free slot with sequence 0, as zeroed memory is.
    pub fn new() -> Self {
        Self {
            control: AtomicU64::new(0),
            request_length: AtomicU32::new(0),
            response_length: AtomicU32::new(0),
            status: AtomicU32::new(0),
            reserved: core::array::from_fn(|_| AtomicU32::new(0)),
            data: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[cfg(loom)]
impl Header {
    /// An all-zero header, as zeroed memory is.
    pub fn new() -> Self {
        Self {
            magic: AtomicU32::new(0),
            version: AtomicU32::new(0),
            slot_count: AtomicU32::new(0),
            slot_bytes: AtomicU32::new(0),
            message_bytes: AtomicU32::new(0),
            reserved: core::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Header {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Slot {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use crate::sync::Ordering::Relaxed;
        // A snapshot, not a consistent one: the other side may be writing.
        formatter
            .debug_struct("Slot")
            .field("control", &Control::from_word(self.control.load(Relaxed)))
            .field("request_length", &self.request_length.load(Relaxed))
            .field("response_length", &self.response_length.load(Relaxed))
            .field("status", &self.status.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Header {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use crate::sync::Ordering::Relaxed;
        formatter
            .debug_struct("Header")
            .field("magic", &self.magic.load(Relaxed))
            .field("version", &self.version.load(Relaxed))
            .field("slot_count", &self.slot_count.load(Relaxed))
            .field("slot_bytes", &self.slot_bytes.load(Relaxed))
            .field("message_bytes", &self.message_bytes.load(Relaxed))
            .finish_non_exhaustive()
    }
}

// The layout is the ABI: check it at compile time. (Loom's atomics are larger
// than the real ones, so only real builds are checked.)
#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Slot>() == SLOT_BYTES);
    assert!(align_of::<Slot>() == 64);
    assert!(offset_of!(Slot, control) == 0);
    assert!(offset_of!(Slot, request_length) == 8);
    assert!(offset_of!(Slot, response_length) == 12);
    assert!(offset_of!(Slot, status) == 16);
    assert!(offset_of!(Slot, reserved) == 20);
    assert!(offset_of!(Slot, data) == 32);
    assert!(offset_of!(Slot, data) + MESSAGE_BYTES == SLOT_BYTES);
    assert!(size_of::<Header>() == HEADER_BYTES);
    assert!(align_of::<Header>() == 64);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, version) == 4);
    assert!(offset_of!(Header, slot_count) == 8);
    assert!(offset_of!(Header, slot_bytes) == 12);
    assert!(offset_of!(Header, message_bytes) == 16);
    assert!(HEADER_BYTES + SLOTS_IN_FIRST_PAGE * SLOT_BYTES == 4096);
};
