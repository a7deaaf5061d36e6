//! Turning the kernel's scheduling-trace dump into a Chrome/Perfetto
//! trace-event file.
//!
//! With `trace` on its command line the kernel prints, before it exits,
//! `trace: begin HZ`, one `T ...` line per event (`orrery_trace::encode_line`),
//! `trace-thread: ID NAME` lines and `trace: end`. Open the JSON written here
//! in `ui.perfetto.dev` or `chrome://tracing` to see who ran where.

use std::{fmt, fs};

use orrery_trace::{Event, chrome, decode_line};

/// A trace read back from serial output.
#[derive(Debug, Default)]
pub struct Trace {
    /// Events of every CPU.
    pub events: Vec<Event>,
    /// TSC frequency the kernel reported.
    pub tsc_hz: u64,
    /// Thread names by id.
    pub names: Vec<(u64, String)>,
    /// Events the kernel's rings overwrote.
    pub dropped: u64,
    /// Lines between begin and end that did not decode.
    pub bad_lines: usize,
}

/// Why no trace file could be written.
#[derive(Debug)]
pub enum TraceError {
    /// The output holds no `trace: begin` ... `trace: end` block.
    NoTrace,
    /// The JSON writer refused the events.
    Json(String),
    /// Writing the file failed.
    Io(std::io::Error),
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::NoTrace => write!(f, "the kernel printed no trace (was `trace` on its command line?)"),
            TraceError::Json(why) => write!(f, "cannot write the trace JSON: {why}"),
            TraceError::Io(error) => write!(f, "cannot write the trace file: {error}"),
        }
    }
}

impl std::error::Error for TraceError {}

impl Trace {
    /// Reads the trace block from the kernel's serial lines.
    pub fn parse(lines: &[String]) -> Result<Self, TraceError> {
        let mut trace = Trace::default();
        let mut inside = false;
        let mut complete = false;
        for line in lines {
            if let Some(hz) = line.strip_prefix("trace: begin ") {
                inside = true;
                trace.tsc_hz = hz.trim_end_matches(" Hz").parse().unwrap_or(0);
            } else if line == "trace: end" {
                complete = inside;
                break;
            } else if !inside {
                continue;
            } else if let Some(dropped) = line.strip_prefix("trace: dropped ") {
                trace.dropped += dropped.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("trace-thread: ") {
                if let Some((id, name)) = rest.split_once(' ')
                    && let Ok(id) = id.parse()
                {
                    trace.names.push((id, name.to_string()));
                }
            } else if line.starts_with("T ") {
                match decode_line(line) {
                    Ok(event) => trace.events.push(event),
                    Err(_) => trace.bad_lines += 1,
                }
            }
        }
        if complete { Ok(trace) } else { Err(TraceError::NoTrace) }
    }

    /// The Chrome/Perfetto JSON of this trace.
    pub fn to_json(&self) -> Result<String, TraceError> {
        let names: Vec<(u64, &str)> = self.names.iter().map(|(id, name)| (*id, name.as_str())).collect();
        chrome::to_json(&self.events, self.tsc_hz, &names).map_err(|error| TraceError::Json(error.to_string()))
    }
}

/// Writes the trace found in `lines` to `path`; returns the number of events.
pub fn write_chrome_trace(lines: &[String], path: &str) -> Result<usize, TraceError> {
    let trace = Trace::parse(lines)?;
    fs::write(path, trace.to_json()?).map_err(TraceError::Io)?;
    Ok(trace.events.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dump_and_writes_json() {
        let lines: Vec<String> = [
            "boot noise",
            "trace: begin 1000000000 Hz",
            "T 0 3e8 switch 1 2",
            "T 0 7d0 switch 2 1",
            "T 1 5dc wake 2 0",
            "garbage inside",
            "trace-thread: 2 worker",
            "trace: end",
        ]
        .iter()
        .map(|line| line.to_string())
        .collect();
        let trace = Trace::parse(&lines).expect("a trace");
        assert_eq!(trace.events.len(), 3);
        assert_eq!(trace.tsc_hz, 1_000_000_000);
        assert_eq!(trace.names, vec![(2, "worker".to_string())]);
        let json = trace.to_json().expect("json");
        assert!(json.contains("\"traceEvents\""), "{json}");
        assert!(json.contains("worker"), "{json}");
    }

    #[test]
    fn no_block_is_an_error() {
        let lines = vec!["trace: begin 1 Hz".to_string(), "T 0 1 switch 1 2".to_string()];
        assert!(matches!(Trace::parse(&lines), Err(TraceError::NoTrace)));
    }
}
