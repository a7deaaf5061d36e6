//! Starting QEMU with the kernel, feeding it a command line, and collecting
//! its serial output and exit status (with a time-out).

use std::{
    fmt,
    io::{BufRead, BufReader, Write},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::TestReport;

/// QEMU's exit status when the kernel writes `Success` to `isa-debug-exit`.
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel writes `Failure`.
pub const EXIT_FAILURE: i32 = 35;

/// The QEMU binary the runner starts.
pub const QEMU: &str = "qemu-system-x86_64";

/// How the guest CPUs are emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation; works everywhere.
    Tcg,
    /// Hardware virtualisation; needs a working `/dev/kvm`.
    Kvm,
}

/// The emulated machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// A PC with PCIe (ACPI, HPET, PIT); the default.
    Q35,
    /// A minimal machine that boots faster (ACPI, PIT, no PCI).
    Microvm,
}

/// Everything that decides how the kernel is booted.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The kernel image to boot.
    pub kernel: String,
    /// `-smp` argument: a CPU count or a topology like `8,sockets=1,cores=4,threads=2`.
    pub smp: String,
    /// `-m` argument.
    pub memory: String,
    /// CPU emulation.
    pub accel: Accel,
    /// Machine type.
    pub machine: Machine,
    /// Make the TSC count guest instructions (`-icount shift=0,sleep=off`).
    pub icount: bool,
    /// Wait for a debugger on TCP port 1234 before running (`-s -S`).
    pub gdb: bool,
    /// Serve the kernel's own GDB stub (COM2) on this TCP port of
    /// 127.0.0.1; the caller adds `gdb` to the command line.
    pub gdb_stub: Option<u16>,
    /// The kernel command line.
    pub cmdline: String,
    /// Give up after this long; `None` waits for ever.
    pub timeout: Option<Duration>,
    /// Copy the serial output to the runner's stdout as it arrives.
    pub echo: bool,
}

impl Default for QemuConfig {
    fn default() -> Self {
        Self {
            kernel: crate::KERNEL_IMAGE.to_string(),
            smp: "4".into(),
            memory: "512M".into(),
            accel: Accel::Tcg,
            machine: Machine::Q35,
            icount: false,
            gdb: false,
            gdb_stub: None,
            cmdline: String::new(),
            timeout: None,
            echo: false,
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Every line the kernel printed on its serial console.
    pub output: Vec<String>,
    /// QEMU's exit status, or `None` when the run timed out and was killed.
    pub status: Option<ExitStatus>,
    /// How long the run took on the host.
    pub elapsed: Duration,
}

impl Outcome {
    /// True when the kernel exited through `isa-debug-exit` with success.
    pub fn succeeded(&self) -> bool {
        self.status.and_then(|status| status.code()) == Some(EXIT_SUCCESS)
    }

    /// True when QEMU was killed after the time-out.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// A one-line description of how the run ended.
    pub fn describe(&self) -> String {
        match self.status.and_then(|status| status.code()) {
            _ if self.status.is_none() => format!("timed out after {:.1} s", self.elapsed.as_secs_f64()),
            Some(EXIT_SUCCESS) => "kernel reported success".into(),
            Some(EXIT_FAILURE) => "kernel reported failure".into(),
            Some(code) => format!("QEMU exited with status {code} (not through isa-debug-exit)"),
            None => "QEMU was killed by a signal".into(),
        }
    }
}

impl QemuConfig {
    /// A run of the in-kernel tests (or benchmarks) from the host tests:
    /// `machine`, `-smp smp`, kernel command line `cmdline`, and a time-out
    /// that only catches hangs (a full suite on 16 virtual CPUs sharing a
    /// 2-core host with other test runs takes about a minute).
    pub fn for_tests(machine: Machine, smp: &str, cmdline: &str) -> Self {
        Self {
            machine,
            smp: smp.into(),
            cmdline: cmdline.into(),
            timeout: Some(Duration::from_secs(600)),
            ..Self::default()
        }
    }

    /// Runs it; panics (failing the host test) if QEMU cannot be run.
    pub fn run_for_tests(&self) -> Outcome {
        self.run().unwrap_or_else(|error| panic!("cannot run QEMU: {error}"))
    }
}

impl Outcome {
    /// The test report, after asserting (for host tests) that every
    /// in-kernel test passed and the kernel exited with success; the
    /// failure message carries the failures and the whole serial output.
    pub fn assert_all_passed(&self) -> TestReport {
        let report = TestReport::parse(&self.output);
        assert!(
            report.all_passed() && self.succeeded(),
            "{}; failures: {:?}\n--- serial output ---\n{}",
            self.describe(),
            report.failures().collect::<Vec<_>>(),
            self.output.join("\n")
        );
        report
    }
}

/// Why QEMU could not be run at all.
#[derive(Debug)]
pub enum RunError {
    /// QEMU is not installed and could not be installed.
    QemuMissing(String),
    /// Starting QEMU failed.
    Spawn(std::io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::QemuMissing(why) => write!(f, "{QEMU} is not available: {why}"),
            RunError::Spawn(error) => write!(f, "cannot start {QEMU}: {error}"),
        }
    }
}

impl std::error::Error for RunError {}

/// True when the QEMU binary runs.
pub fn qemu_available() -> bool {
    Command::new(QEMU).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Installs Debian's `qemu-system-x86` when QEMU is missing, saying so.
pub fn ensure_qemu() -> Result<(), RunError> {
    if qemu_available() {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0"));
    let mut command = if root {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "apt-get"]);
        sudo
    };
    eprintln!("orrery: {QEMU} not found; installing Debian's qemu-system-x86 (apt-get install -y qemu-system-x86)");
    let install = |command: &mut Command| {
        command
            .args(["install", "-y", "--no-install-recommends", "qemu-system-x86"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !install(&mut command) {
        eprintln!("orrery: apt-get install failed; refreshing the package lists and trying again");
        let mut update = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            update.args(["-n", "apt-get"]);
        }
        let _ = update.arg("update").stdout(Stdio::null()).status();
        let mut retry = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            retry.args(["-n", "apt-get"]);
        }
        if !install(&mut retry) {
            return Err(RunError::QemuMissing(
                "apt-get install qemu-system-x86 failed; install QEMU 7.2 or later by hand".into(),
            ));
        }
    }
    if qemu_available() {
        Ok(())
    } else {
        Err(RunError::QemuMissing("installed, but the binary still does not run".into()))
    }
}

impl QemuConfig {
    /// The QEMU command line for this configuration.
    pub fn command(&self) -> Command {
        let mut command = Command::new(QEMU);
        let machine = match self.machine {
            Machine::Q35 => "q35",
            Machine::Microvm => "microvm,acpi=on,pit=on,pic=on,rtc=on",
        };
        command.args(["-machine", machine]);
        match self.accel {
            Accel::Tcg => command.args(["-accel", "tcg", "-cpu", "max"]),
            Accel::Kvm => command.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        };
        command.args(["-smp", &self.smp, "-m", &self.memory]);
        command.args(["-nographic", "-no-reboot", "-display", "none", "-monitor", "none"]);
        command.args(["-serial", "stdio"]);
        if let Some(port) = self.gdb_stub {
            // The second serial port is COM2, where the kernel's stub talks.
            command.args(["-serial", &format!("tcp:127.0.0.1:{port},server=on,wait=off")]);
        }
        command.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        if self.icount {
            command.args(["-icount", "shift=0,sleep=off"]);
        }
        if self.gdb {
            command.args(["-s", "-S"]);
        }
        command.args(["-kernel", &self.kernel]);
        if !self.cmdline.is_empty() {
            command.args(["-append", &self.cmdline]);
        }
        command
    }

    /// Boots the kernel and waits for it to exit or time out.
    pub fn run(&self) -> Result<Outcome, RunError> {
        ensure_qemu()?;
        let start = Instant::now();
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(RunError::Spawn)?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        let echo = self.echo;
        let reader = thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = clean_line(&buffer);
                        if echo {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "{line}");
                            let _ = out.flush();
                        }
                        if sender.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let status = wait_with_timeout(&mut child, self.timeout);
        let _ = reader.join();
        let output = receiver.try_iter().collect();
        Ok(Outcome { output, status, elapsed: start.elapsed() })
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Option<Duration>) -> Option<ExitStatus> {
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One serial line as text, without the carriage return and the terminal
/// escape sequences the firmware prints before the kernel starts.
fn clean_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // Skip a CSI sequence: ESC [ parameters final-byte.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' | '\n' => {}
            c => clean.push(c),
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_line_ends_are_removed() {
        assert_eq!(clean_line(b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\n"), "cSeaBIOS");
        assert_eq!(clean_line(b"ktest: ok\n"), "ktest: ok");
    }

    #[test]
    fn command_line_has_the_expected_switches() {
        let config = QemuConfig { icount: true, gdb: true, cmdline: "test=all".into(), ..QemuConfig::default() };
        let command = config.command();
        let args: Vec<_> = command.get_args().map(|arg| arg.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg -cpu max"), "{joined}");
        assert!(joined.contains("-icount shift=0,sleep=off"), "{joined}");
        assert!(joined.contains("-s -S"), "{joined}");
        assert!(joined.ends_with("-append test=all"), "{joined}");
    }
}
