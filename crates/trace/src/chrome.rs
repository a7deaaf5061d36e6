//! Chrome trace-event JSON from decoded scheduling events (host side, feature
//! `std`).
//!
//! The output opens in Perfetto (ui.perfetto.dev) and in `chrome://tracing`.
//! It is one process, [`PID`], named "Orrery", with one track per CPU whose
//! thread id is the CPU number. On each track:
//!
//! - a **complete event** (`"ph":"X"`) for every stretch a thread ran there:
//!   it opens at a [`Switch`](EventKind::Switch) whose `b` (next thread) is the
//!   thread and closes at the CPU's next `Switch` or [`Idle`](EventKind::Idle).
//!   A stretch still open when the CPU's events end closes at that CPU's last
//!   event, the last moment the thread is known to have been running;
//! - an **instant event** (`"ph":"i"`, thread scope) for every other kind:
//!   wake-up, block, migration, preemption, and also spawn, exit and custom
//!   events, with the operands as named arguments.
//!
//! Time stamps and durations are in microseconds, as the format requires,
//! counted from the earliest time stamp among all events and written with
//! three decimals (nanoseconds). Converting needs the TSC frequency; the
//! kernel measures it at boot and prints it.
//!
//! The JSON is written by hand rather than through serde: the shape is small
//! and fixed, hand-written output keeps its key order and spacing stable (the
//! tests compare it byte for byte), and the crate keeps no dependency. Names
//! are escaped per RFC 8259; the tests check the output with `serde_json`.

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::string::String;
use std::vec::Vec;

use crate::{Event, EventKind};

/// The process id every track belongs to.
pub const PID: u32 = 1;

/// Why [`write_json`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChromeError {
    /// The TSC frequency was 0 Hz: time stamps cannot be converted.
    ZeroFrequency,
    /// The output refused a write.
    Write(fmt::Error),
}

impl fmt::Display for ChromeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroFrequency => formatter.write_str("TSC frequency of 0 Hz"),
            Self::Write(_) => formatter.write_str("could not write the trace JSON"),
        }
    }
}

impl std::error::Error for ChromeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ZeroFrequency => None,
            Self::Write(error) => Some(error),
        }
    }
}

impl From<fmt::Error> for ChromeError {
    fn from(error: fmt::Error) -> Self {
        Self::Write(error)
    }
}

/// [`write_json`] into a new string.
///
/// # Errors
/// [`ChromeError::ZeroFrequency`] if `tsc_hz` is 0.
pub fn to_json(events: &[Event], tsc_hz: u64, thread_names: &[(u64, &str)]) -> Result<String, ChromeError> {
    let mut json = String::new();
    write_json(events, tsc_hz, thread_names, &mut json)?;
    Ok(json)
}

/// Writes the trace-event JSON for `events` (any CPUs, any order) to `out`.
///
/// `tsc_hz` is the time stamp counter's frequency; `thread_names` names
/// threads by id (a thread without a name is shown as `thread <id>`; if an id
/// appears twice, the last name wins). Events of one CPU are taken in time
/// stamp order, ties in the order given.
///
/// # Errors
/// [`ChromeError::ZeroFrequency`] if `tsc_hz` is 0 (nothing is written), or
/// [`ChromeError::Write`] if `out` fails.
pub fn write_json(
    events: &[Event],
    tsc_hz: u64,
    thread_names: &[(u64, &str)],
    out: &mut impl Write,
) -> Result<(), ChromeError> {
    if tsc_hz == 0 {
        return Err(ChromeError::ZeroFrequency);
    }
    let clock = Clock { base_tsc: events.iter().map(|event| event.tsc).min().unwrap_or(0), tsc_hz };
    let names: BTreeMap<u64, &str> = thread_names.iter().copied().collect();
    let mut by_cpu: BTreeMap<u16, Vec<Event>> = BTreeMap::new();
    for event in events {
        by_cpu.entry(event.cpu).or_default().push(*event);
    }

    let mut writer = Writer { out, names: &names, clock, first: true };
    writer.out.write_str("{\"traceEvents\":[")?;
    writer.begin()?;
    write!(writer.out, "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{PID},\"args\":{{\"name\":\"Orrery\"}}}}")?;
    for &cpu in by_cpu.keys() {
        writer.begin()?;
        write!(
            writer.out,
            "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{PID},\"tid\":{cpu},\"args\":{{\"name\":\"CPU {cpu}\"}}}}"
        )?;
        writer.begin()?;
        write!(
            writer.out,
            "{{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":{PID},\"tid\":{cpu},\"args\":{{\"sort_index\":{cpu}}}}}"
        )?;
    }
    for (&cpu, events) in &mut by_cpu {
        // Stable: equal time stamps keep the order they were recorded in.
        events.sort_by_key(|event| event.tsc);
        writer.cpu_track(cpu, events)?;
    }
    writer.out.write_str("\n]}\n")?;
    Ok(())
}

/// Converts time stamps to nanoseconds since the earliest event.
#[derive(Clone, Copy)]
struct Clock {
    base_tsc: u64,
    tsc_hz: u64,
}

impl Clock {
    fn nanoseconds(self, tsc: u64) -> u128 {
        u128::from(tsc - self.base_tsc) * 1_000_000_000 / u128::from(self.tsc_hz)
    }
}

/// Nanoseconds written as microseconds with three decimals.
struct Microseconds(u128);

impl fmt::Display for Microseconds {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

struct Writer<'a, W: Write> {
    out: &'a mut W,
    names: &'a BTreeMap<u64, &'a str>,
    clock: Clock,
    /// No trace event written yet: the next needs no comma.
    first: bool,
}

impl<W: Write> Writer<'_, W> {
    /// Starts a trace event: a separator, and one event per line.
    fn begin(&mut self) -> fmt::Result {
        if !self.first {
            self.out.write_char(',')?;
        }
        self.first = false;
        self.out.write_char('\n')
    }

    /// The slices and markers of one CPU, from its events in time order.
    fn cpu_track(&mut self, cpu: u16, events: &[Event]) -> fmt::Result {
        // The thread running now and the time stamp it started at.
        let mut running: Option<(u64, u64)> = None;
        for event in events {
            match event.kind {
                EventKind::Switch => {
                    if let Some((thread, start_tsc)) = running {
                        self.slice(cpu, thread, start_tsc, event.tsc)?;
                    }
                    running = Some((event.b, event.tsc));
                }
                EventKind::Idle => {
                    if let Some((thread, start_tsc)) = running.take() {
                        self.slice(cpu, thread, start_tsc, event.tsc)?;
                    }
                }
                _ => self.marker(event)?,
            }
        }
        if let (Some((thread, start_tsc)), Some(last)) = (running, events.last()) {
            self.slice(cpu, thread, start_tsc, last.tsc)?;
        }
        Ok(())
    }

    /// A complete event: `thread` ran on `cpu` from `start_tsc` to `end_tsc`.
    fn slice(&mut self, cpu: u16, thread: u64, start_tsc: u64, end_tsc: u64) -> fmt::Result {
        let start = self.clock.nanoseconds(start_tsc);
        let end = self.clock.nanoseconds(end_tsc);
        self.begin()?;
        self.out.write_str("{\"name\":")?;
        self.thread_label(thread)?;
        write!(
            self.out,
            ",\"cat\":\"run\",\"ph\":\"X\",\"ts\":{},\"dur\":{},\"pid\":{PID},\"tid\":{cpu},\"args\":{{\"thread\":{thread}}}}}",
            Microseconds(start),
            Microseconds(end - start),
        )
    }

    /// An instant event for anything but a switch or going idle.
    fn marker(&mut self, event: &Event) -> fmt::Result {
        // The name of `b` in the arguments; `None` for custom events, whose
        // operands are both free.
        let b_name = match event.kind {
            EventKind::Wake | EventKind::Migrate => Some("target_cpu"),
            EventKind::Block | EventKind::Preempt => Some("reason"),
            EventKind::Spawn => Some("parent"),
            EventKind::Exit => Some("status"),
            EventKind::Custom | EventKind::Switch | EventKind::Idle => None,
        };
        self.begin()?;
        self.out.write_str("{\"name\":")?;
        match b_name {
            Some(_) => {
                // "wake worker": the kind, then who it happened to.
                let mut name = String::from(event.kind.name());
                name.push(' ');
                self.push_thread_label(&mut name, event.a);
                write_string(self.out, &name)?;
            }
            None => write_string(self.out, event.kind.name())?,
        }
        write!(
            self.out,
            ",\"cat\":\"sched\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{},\"pid\":{PID},\"tid\":{},\"args\":{{",
            Microseconds(self.clock.nanoseconds(event.tsc)),
            event.cpu,
        )?;
        match b_name {
            Some(b_name) => write!(self.out, "\"thread\":{},\"{b_name}\":{}}}}}", event.a, event.b),
            None => write!(self.out, "\"a\":{},\"b\":{}}}}}", event.a, event.b),
        }
    }

    fn thread_label(&mut self, thread: u64) -> fmt::Result {
        let mut label = String::new();
        self.push_thread_label(&mut label, thread);
        write_string(self.out, &label)
    }

    fn push_thread_label(&self, label: &mut String, thread: u64) {
        match self.names.get(&thread) {
            Some(name) => label.push_str(name),
            None => {
                // Writing to a String cannot fail.
                let _ = write!(label, "thread {thread}");
            }
        }
    }
}

/// Writes `text` as a JSON string (RFC 8259 §7): quotes, backslashes and
/// control characters escaped; everything else, non-ASCII included, as is.
fn write_string(out: &mut impl Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    for character in text.chars() {
        match character {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{08}' => out.write_str("\\b")?,
            '\u{0C}' => out.write_str("\\f")?,
            control if u32::from(control) < 0x20 => write!(out, "\\u{:04x}", u32::from(control))?,
            other => out.write_char(other)?,
        }
    }
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut json = String::new();
        write_string(&mut json, "a\"b\\c\nd\u{1}é\t").unwrap();
        assert_eq!(json, r#""a\"b\\c\nd\u0001é\t""#);
    }

    #[test]
    fn microseconds_keep_nanoseconds() {
        assert_eq!(std::format!("{}", Microseconds(1_234_567)), "1234.567");
        assert_eq!(std::format!("{}", Microseconds(5)), "0.005");
    }
}
