//! The kernel command line: `word word key=value key=a,b`.
//!
//! The boot loader hands the kernel one string; this crate turns it into
//! [`BootOptions`], the typed settings the kernel acts on. Parsing never fails
//! as a whole: a malformed or unknown word becomes a [`Problem`] that the kernel
//! logs, and the setting keeps its default. The kernel therefore boots with any
//! command line, and a typo is reported rather than silently ignored.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// Most test names that `test=` can select at once.
pub const MAX_SELECTED: usize = 64;
/// Most problems recorded; later ones are counted in [`BootOptions::dropped_problems`].
pub const MAX_PROBLEMS: usize = 8;

/// Verbosity of the boot log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// The normal boot log.
    Info,
    /// Detail for debugging.
    Debug,
    /// Everything.
    Trace,
}

/// What the kernel does once it has booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Start the supervisor and run normally.
    Run,
    /// Run in-kernel tests; `selection` names them (empty selects all).
    Test(Selection<'a>),
    /// Run the benchmarks and print their figures; `selection` as for tests.
    Bench(Selection<'a>),
}

/// A comma-separated list of names from `test=` or `bench=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection<'a> {
    raw: &'a str,
}

impl<'a> Selection<'a> {
    /// A selection from a comma-separated list (empty or `all`: everything).
    pub const fn new(raw: &'a str) -> Self {
        Self { raw }
    }

    /// The list as given.
    pub const fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Every name in the list, in order.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.raw.split(',').filter(|name| !name.is_empty() && *name != "all")
    }

    /// True when the list selects everything (`test`, `test=all`, `test=`).
    pub fn is_all(&self) -> bool {
        self.names().next().is_none()
    }

    /// True when `name` is selected, either by name or because all are.
    pub fn selects(&self, name: &str) -> bool {
        self.is_all() || self.names().any(|selected| selected == name)
    }
}

/// Which scheduling policy the CPUs start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyChoice {
    /// Fair share by virtual runtime.
    Fair,
    /// Round robin.
    RoundRobin,
}

/// The settings taken from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions<'a> {
    /// What to do after boot.
    pub mode: Mode<'a>,
    /// Boot log verbosity (`log=info`).
    pub log_level: LogLevel,
    /// Record a scheduling trace and dump it at the end (`trace`).
    pub trace: bool,
    /// Starting policy of every CPU (`sched=fair` or `sched=rr`).
    pub policy: PolicyChoice,
    /// The guest TSC counts instructions (QEMU `-icount shift=0`), so the
    /// benchmarks report their figures as instruction counts (`icount`).
    pub icount: bool,
    /// Time slice in microseconds (`slice_us=3000`), bounded to 100..=1_000_000.
    pub slice_us: u32,
    /// Serve the GDB remote protocol on the second serial port, and stop
    /// for a debugger at the end of boot (`gdb`).
    pub gdb: bool,
    /// Problems met while parsing, in order.
    pub problems: [Option<Problem<'a>>; MAX_PROBLEMS],
    /// Problems that did not fit in `problems`.
    pub dropped_problems: usize,
}

impl Default for BootOptions<'_> {
    fn default() -> Self {
        Self {
            mode: Mode::Run,
            log_level: LogLevel::Info,
            trace: false,
            icount: false,
            policy: PolicyChoice::Fair,
            slice_us: 3000,
            gdb: false,
            problems: [None; MAX_PROBLEMS],
            dropped_problems: 0,
        }
    }
}

/// One word of the command line that the kernel could not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem<'a> {
    /// The whole offending word.
    pub word: &'a str,
    /// What is wrong with it.
    pub kind: ProblemKind,
}

/// Why a word was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// No setting has this name.
    UnknownKey,
    /// The value is not one the setting accepts.
    BadValue,
    /// The setting needs a value (`key=value`) and has none.
    MissingValue,
    /// The setting takes no value.
    UnexpectedValue,
    /// Both `test` and `bench` were given; the first one wins.
    ConflictingMode,
}

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.kind {
            ProblemKind::UnknownKey => "unknown setting",
            ProblemKind::BadValue => "value not accepted",
            ProblemKind::MissingValue => "needs a value (key=value)",
            ProblemKind::UnexpectedValue => "takes no value",
            ProblemKind::ConflictingMode => "conflicts with an earlier test/bench word",
        };
        write!(f, "command line word `{}`: {why}", self.word)
    }
}

impl<'a> BootOptions<'a> {
    /// Parses a command line. Words are separated by ASCII whitespace.
    pub fn parse(line: &'a str) -> Self {
        let mut options = Self::default();
        let mut mode_set = false;
        for word in line.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (word, None),
            };
            let result = match key {
                "test" | "bench" => {
                    if mode_set {
                        Err(ProblemKind::ConflictingMode)
                    } else {
                        mode_set = true;
                        let selection = Selection { raw: value.unwrap_or("") };
                        options.mode = if key == "test" { Mode::Test(selection) } else { Mode::Bench(selection) };
                        Ok(())
                    }
                }
                "log" => parse_log_level(value).map(|level| options.log_level = level),
                "trace" | "icount" | "gdb" => match value {
                    None => {
                        match key {
                            "trace" => options.trace = true,
                            "icount" => options.icount = true,
                            _ => options.gdb = true,
                        }
                        Ok(())
                    }
                    Some(_) => Err(ProblemKind::UnexpectedValue),
                },
                "sched" => match value {
                    None => Err(ProblemKind::MissingValue),
                    Some("fair") => {
                        options.policy = PolicyChoice::Fair;
                        Ok(())
                    }
                    Some("rr") => {
                        options.policy = PolicyChoice::RoundRobin;
                        Ok(())
                    }
                    Some(_) => Err(ProblemKind::BadValue),
                },
                "slice_us" => match value {
                    None => Err(ProblemKind::MissingValue),
                    Some(text) => match text.parse::<u32>() {
                        Ok(us) if (100..=1_000_000).contains(&us) => {
                            options.slice_us = us;
                            Ok(())
                        }
                        _ => Err(ProblemKind::BadValue),
                    },
                },
                _ => Err(ProblemKind::UnknownKey),
            };
            if let Err(kind) = result {
                options.record(Problem { word, kind });
            }
        }
        options
    }

    /// Every problem recorded, in order.
    pub fn problems(&self) -> impl Iterator<Item = &Problem<'a>> {
        self.problems.iter().flatten()
    }

    fn record(&mut self, problem: Problem<'a>) {
        match self.problems.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(problem),
            None => self.dropped_problems += 1,
        }
    }
}

fn parse_log_level(value: Option<&str>) -> Result<LogLevel, ProblemKind> {
    match value {
        None => Err(ProblemKind::MissingValue),
        Some("error") => Ok(LogLevel::Error),
        Some("warn") => Ok(LogLevel::Warn),
        Some("info") => Ok(LogLevel::Info),
        Some("debug") => Ok(LogLevel::Debug),
        Some("trace") => Ok(LogLevel::Trace),
        Some(_) => Err(ProblemKind::BadValue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_gives_defaults() {
        assert_eq!(BootOptions::parse(""), BootOptions::default());
        assert_eq!(BootOptions::parse("   \t "), BootOptions::default());
    }

    #[test]
    fn test_selection() {
        let options = BootOptions::parse("test=frames,heap log=debug");
        let Mode::Test(selection) = options.mode else { panic!("expected test mode, got {:?}", options.mode) };
        assert!(!selection.is_all());
        assert!(selection.selects("frames"));
        assert!(selection.selects("heap"));
        assert!(!selection.selects("fram"));
        assert_eq!(options.log_level, LogLevel::Debug);
        assert_eq!(options.problems().count(), 0);
    }

    #[test]
    fn gdb_is_a_flag() {
        assert!(!BootOptions::parse("").gdb);
        let options = BootOptions::parse("gdb test");
        assert!(options.gdb);
        assert_eq!(options.problems().count(), 0);
        let options = BootOptions::parse("gdb=com2");
        assert!(!options.gdb);
        assert_eq!(options.problems[0].map(|p| p.kind), Some(ProblemKind::UnexpectedValue));
    }

    #[test]
    fn bare_test_selects_all() {
        for line in ["test", "test=", "test=all", "test=,,"] {
            let Mode::Test(selection) = BootOptions::parse(line).mode else { panic!("{line}: expected test mode") };
            assert!(selection.is_all(), "{line}");
            assert!(selection.selects("anything"), "{line}");
        }
    }

    #[test]
    fn problems_are_reported_and_defaults_kept() {
        let options = BootOptions::parse("sched=lottery slice_us=5 frobnicate log trace=1 bench test");
        let kinds: [_; 6] = core::array::from_fn(|i| options.problems[i].map(|p| (p.word, p.kind)));
        assert_eq!(
            kinds,
            [
                Some(("sched=lottery", ProblemKind::BadValue)),
                Some(("slice_us=5", ProblemKind::BadValue)),
                Some(("frobnicate", ProblemKind::UnknownKey)),
                Some(("log", ProblemKind::MissingValue)),
                Some(("trace=1", ProblemKind::UnexpectedValue)),
                Some(("test", ProblemKind::ConflictingMode)),
            ]
        );
        assert_eq!(options.policy, PolicyChoice::Fair);
        assert_eq!(options.slice_us, 3000);
        assert!(!options.trace);
        assert!(matches!(options.mode, Mode::Bench(_)));
    }

    #[test]
    fn excess_problems_are_counted() {
        let options = BootOptions::parse("a b c d e f g h i j");
        assert_eq!(options.problems().count(), MAX_PROBLEMS);
        assert_eq!(options.dropped_problems, 2);
    }

    #[test]
    fn settings_are_taken() {
        let options = BootOptions::parse("sched=rr slice_us=1000 trace log=warn icount");
        assert!(options.icount);
        assert_eq!(options.policy, PolicyChoice::RoundRobin);
        assert_eq!(options.slice_us, 1000);
        assert!(options.trace);
        assert_eq!(options.log_level, LogLevel::Warn);
    }

    proptest::proptest! {
        #[test]
        fn any_line_parses_without_panic(line in "\\PC{0,200}") {
            let options = BootOptions::parse(&line);
            let words = line.split_ascii_whitespace().count();
            proptest::prop_assert!(options.problems().count() + options.dropped_problems <= words);
        }
    }
}
