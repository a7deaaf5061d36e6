//! Printing to the kernel console through the `log` system call.

use core::fmt::{self, Write};

use orrery_abi::Syscall;

use crate::sys;

/// Formats into a fixed buffer and sends it in `log` calls of at most
/// `MAX_LOG_BYTES`.
struct Buffer {
    bytes: [u8; 512],
    length: usize,
}

impl Buffer {
    fn flush(&mut self) {
        if self.length > 0 {
            let _ = sys::call(Syscall::Log, [self.bytes.as_ptr() as u64, self.length as u64, 0, 0, 0, 0]);
            self.length = 0;
        }
    }
}

impl Write for Buffer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for chunk in text.as_bytes().chunks(self.bytes.len()) {
            if self.length + chunk.len() > self.bytes.len() {
                self.flush();
            }
            self.bytes[self.length..self.length + chunk.len()].copy_from_slice(chunk);
            self.length += chunk.len();
        }
        Ok(())
    }
}

/// Prints formatted text (one `log` call per 512 bytes; a line printed at
/// once is not interleaved with other processes' output).
pub fn print_fmt(arguments: fmt::Arguments<'_>) {
    let mut buffer = Buffer { bytes: [0; 512], length: 0 };
    let _ = buffer.write_fmt(arguments);
    buffer.flush();
}

/// Remembers the process name (the kernel prefixes output with it already;
/// kept for messages that want it).
pub fn set_name(_name: &str) {}

/// Prints to the kernel console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::io::print_fmt(format_args!($($arg)*)));
}

/// Prints a line to the kernel console.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::io::print_fmt(format_args!("{}\n", format_args!($($arg)*))));
}
