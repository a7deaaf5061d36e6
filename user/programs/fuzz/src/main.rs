//! Makes random system calls with arguments drawn from values that break
//! careless kernels: zero, all ones, page boundaries, the edges of the user
//! half, kernel addresses, pointers into its own stack and text (mapped,
//! misaligned, read-only, not yet touched), and what earlier calls returned
//! (handles, mapped addresses). The kernel must answer each with a result or
//! an error; this program only counts.
//!
//! `argument`: the seed in the low 32 bits, the number of calls in the high
//! 32 (1000 when 0). Never calls `exit` itself; calls that wait are given
//! short deadlines where they take one, and are rare where they do not (the
//! test that runs it kills it when its time is up). Exits with the number
//! of calls that succeeded.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{
    StartInfo,
    abi::{self, Syscall},
    sys,
};

orrery_runtime::entry!(main);

/// xorshift64*: small, fast, and enough to spread the choices.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

const FIXED: [u64; 32] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    31,
    63,
    64,
    65,
    255,
    256,
    4095,
    4096,
    4097,
    0x1_0000,
    abi::MAX_MAP_BYTES,
    abi::MAX_MAP_BYTES + 1,
    1 << 40,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 4095,
    u64::MAX,
    abi::USER_MAP_BASE,
    abi::USER_SHARED_BASE,
    0x0000_7fff_ffff_f000,
    0x0000_7fff_ffff_ffff,
    0x0000_8000_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    0xffff_ffff_ffff_f000,
];

fn main(start: &StartInfo) -> u32 {
    let mut random = Random(u64::from(start.argument as u32) | 1 << 40);
    let calls = match start.argument >> 32 {
        0 => 1000,
        calls => calls,
    };
    // Three pages of stack: the first touched, the rest left for the kernel
    // to find untouched (the stack grows on first touch).
    let mut buffer = [0u8; 3 * 4096];
    buffer[3 * 4096 - 64..].copy_from_slice(&[b'f'; 64]);
    let stack = buffer.as_ptr() as u64;
    let text = main as fn(&StartInfo) -> u32 as usize as u64;
    // What earlier calls returned: handles, addresses, counts.
    let mut found = [0u64; 16];
    let mut made = 0u64;
    for call in 0..calls {
        let number = random.below(abi::SYSCALL_COUNT + 4);
        let mut arguments = [0u64; 6];
        for argument in &mut arguments {
            *argument = match random.below(8) {
                0 | 1 => FIXED[random.below(FIXED.len() as u64) as usize],
                2 => random.below(16),
                3 => stack + random.below(buffer.len() as u64 + 64),
                4 => text + random.below(64),
                5 => found[random.below(found.len() as u64) as usize],
                6 => random.next(),
                _ => start.shared_address + random.below(8192),
            };
        }
        // Half the time, arguments a careful caller might pass, so that the
        // calls get past their checks and reach what lies behind them
        // (children created, set up, started, waited for and killed;
        // mailboxes made, granted and rung; memory mapped and shared).
        if random.below(2) == 0
            && let Some(call) = Syscall::from_number(number)
        {
            let handle = random.below(8);
            let name = stack + random.below(4096);
            let page = (stack & !4095) + 4096 * random.below(3);
            let mapped = found[random.below(found.len() as u64) as usize] & !4095;
            let pages = 4096 * (1 + random.below(4));
            let plausible: Option<[u64; 6]> = match call {
                Syscall::Log => Some([name, random.below(80), 0, 0, 0, 0]),
                Syscall::MapMemory => Some([pages, random.below(2), 0, 0, 0, 0]),
                Syscall::UnmapMemory => Some([mapped, pages, 0, 0, 0, 0]),
                Syscall::ImageName => Some([random.below(16), name, random.below(64), 0, 0, 0]),
                Syscall::ProcessCreate => Some([random.below(16), name, 1 + random.below(16), random.next(), 0, 0]),
                Syscall::ProcessStart | Syscall::ProcessWait | Syscall::HandleClose => Some([handle, 0, 0, 0, 0, 0]),
                Syscall::ProcessKill => Some([handle, random.below(100), 0, 0, 0, 0]),
                Syscall::ProcessRestrict => Some([handle, random.next(), 0, 0, 0, 0]),
                Syscall::ProcessShare => {
                    let address = if random.below(2) == 0 { page } else { mapped };
                    Some([handle, address, pages, 0, random.below(2), 0])
                }
                Syscall::ProcessSetName => Some([handle, name, 1 + random.below(16), 0, 0, 0]),
                Syscall::MailboxCreate => Some([1 + random.below(8), 0, 0, 0, 0, 0]),
                Syscall::MailboxGrant => Some([handle, random.below(8), random.below(2), 0, 0, 0]),
                Syscall::MailboxAddress | Syscall::MailboxSlots => Some([handle, 0, 0, 0, 0, 0]),
                Syscall::MailboxRing => Some([handle, random.below(2), 0, 0, 0, 0]),
                Syscall::MailboxWait => Some([handle, random.below(2), random.below(4), 0, 0, 0]),
                Syscall::MailboxCall | Syscall::MailboxReplyWait => Some([handle, random.below(4), 0, 0, 0, 0]),
                _ => None,
            };
            if let Some(plausible) = plausible {
                arguments = plausible;
            }
        }
        match Syscall::from_number(number) {
            // Ending itself would end the run; the harness ends it instead.
            Some(Syscall::Exit) => continue,
            // A deadline soon, so the run goes on.
            Some(Syscall::SleepUntil) => arguments[0] = sys::tsc() + random.below(200_000),
            Some(Syscall::MailboxWait) if random.below(16) != 0 => arguments[3] = sys::tsc() + random.below(200_000),
            // These wait without a deadline: rare.
            Some(Syscall::MailboxCall | Syscall::MailboxReplyWait | Syscall::ProcessWait) if random.below(8) != 0 => {
                continue;
            }
            _ => {}
        }
        let result = sys::syscall(number, arguments);
        if abi::decode_result(result).is_ok() {
            found[(call % found.len() as u64) as usize] = result;
            made += 1;
        }
    }
    made as u32
}
