//! Layouts shared between the kernel and user programs: where things are in
//! a process's address space, and what the kernel writes at program start.

/// Where user programs are linked (the first text page).
pub const USER_IMAGE_BASE: u64 = 0x0000_0000_0040_0000;
/// Lowest address a program image may use.
pub const USER_LOWEST: u64 = 0x0000_0000_0010_0000;
/// First address above the region for program images.
pub const USER_IMAGE_END: u64 = 0x0000_0000_3000_0000;
/// Where `map_memory` places mappings, growing upward.
pub const USER_MAP_BASE: u64 = 0x0000_0010_0000_0000;
/// First address above the `map_memory` region.
pub const USER_MAP_END: u64 = 0x0000_0040_0000_0000;
/// Where the kernel maps mailboxes.
pub const USER_MAILBOX_BASE: u64 = 0x0000_0040_0000_0000;
/// First address above the mailbox region.
pub const USER_MAILBOX_END: u64 = 0x0000_0050_0000_0000;
/// Where memory shared by a parent (`process_share`) appears in a child.
pub const USER_SHARED_BASE: u64 = 0x0000_0050_0000_0000;
/// First address above the shared region.
pub const USER_SHARED_END: u64 = 0x0000_0060_0000_0000;
/// The top of the initial stack (it grows down from here, up to the
/// program's stack size, with an unmapped guard page below). Placed in the
/// same gigabyte as the program's image, so text, data and stack share their
/// upper page tables.
pub const USER_STACK_TOP: u64 = 0x0000_0000_4000_0000;
/// First address above user space.
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// Registers at program start: `rdi` holds the address of a [`StartInfo`]
/// block on the initial stack, `rsp` is 16-byte aligned below it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: u64,
    /// The process's id.
    pub process_id: u64,
    /// Handle of the first mailbox granted by the parent before start, or
    /// `u64::MAX` if none.
    pub first_mailbox: u64,
    /// Number of mailbox handles granted before start (handles
    /// `first_mailbox ..`).
    pub mailbox_count: u64,
    /// Address of memory the parent shared before start, or 0.
    pub shared_address: u64,
    /// Its length in bytes.
    pub shared_length: u64,
    /// The TSC frequency in Hz.
    pub tsc_hz: u64,
    /// The value the parent passed to `process_create`.
    pub argument: u64,
    /// The process's name, UTF-8, `name_length` bytes.
    pub name: [u8; 64],
    /// Bytes of `name` in use.
    pub name_length: u64,
}

impl StartInfo {
    /// An empty block with the magic set.
    pub const fn new() -> Self {
        Self {
            magic: START_INFO_MAGIC,
            process_id: 0,
            first_mailbox: u64::MAX,
            mailbox_count: 0,
            shared_address: 0,
            shared_length: 0,
            tsc_hz: 0,
            argument: 0,
            name: [0; 64],
            name_length: 0,
        }
    }

    /// The name as text (empty if not UTF-8).
    pub fn name(&self) -> &str {
        let length = (self.name_length as usize).min(self.name.len());
        core::str::from_utf8(&self.name[..length]).unwrap_or("")
    }
}

impl Default for StartInfo {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks a valid [`StartInfo`].
pub const START_INFO_MAGIC: u64 = 0x4f52_5245_5259_0001;
