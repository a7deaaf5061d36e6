//! The serial console (COM1) and the `log` backend that writes to it.
//!
//! Every line carries the CPU number and the time since boot, so output from
//! several CPUs can be read apart. The host runner reads this port: the test
//! harness parses its lines, and the trace dump travels over it.

use core::fmt::{self, Write};

use uart_16550::SerialPort;

use crate::sync::SpinLock;

static COM1: SpinLock<Option<SerialPort>> = SpinLock::new(None);

/// Sets up COM1 at 115200 8N1.
pub fn init() {
    // SAFETY: 0x3f8 is COM1 on every PC-compatible machine QEMU emulates, and
    // nothing else in the kernel touches these ports.
    let mut port = unsafe { SerialPort::new(0x3f8) };
    port.init();
    *COM1.lock() = Some(port);
}

/// Writes formatted text to the console under its lock.
pub fn write_fmt(arguments: fmt::Arguments<'_>) {
    if let Some(port) = COM1.lock().as_mut() {
        let _ = port.write_fmt(arguments);
    }
}

/// Writes to the console from the panic path, where the lock may be held by
/// this very CPU (a panic inside `print!`) or by a CPU that is going away.
pub fn write_fmt_panicking(arguments: fmt::Arguments<'_>) {
    for _ in 0..1_000_000 {
        if let Some(mut guard) = COM1.try_lock() {
            if let Some(port) = guard.as_mut() {
                let _ = port.write_fmt(arguments);
            }
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: this is the panic path; the holder did not let go in a long
    // time and the machine is about to stop, so output matters more than the
    // lock's other user, whose next line may interleave with ours.
    unsafe { COM1.force_unlock() };
    if let Some(port) = COM1.lock().as_mut() {
        let _ = port.write_fmt(arguments);
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::write_fmt(format_args!($($arg)*)));
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))));
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let micros = crate::arch::tsc::micros_since_boot();
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARN ",
            log::Level::Info => "INFO ",
            log::Level::Debug => "DEBUG",
            log::Level::Trace => "TRACE",
        };
        write_fmt(format_args!(
            "[{:>5}.{:06} cpu{}] {level} {}\n",
            micros / 1_000_000,
            micros % 1_000_000,
            crate::arch::cpu_index(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Installs the logger with the given maximum level.
pub fn init_log(level: log::LevelFilter) {
    // A second call (there is none) would fail harmlessly.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
