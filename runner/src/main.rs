//! `cargo run [-- OPTIONS]`: builds the kernel and boots it in QEMU with the
//! serial console on this terminal.

use std::{process::ExitCode, time::Duration};

use orrery_runner::{Accel, Machine, QemuConfig, TestReport};

const USAGE: &str = "\
usage: cargo run [-- OPTIONS]

Boots the Orrery kernel in QEMU with its serial console on this terminal.

options:
  --smp SPEC        CPUs, in QEMU -smp syntax: 4, or 8,sockets=1,cores=4,threads=2 [4]
  --memory SIZE     guest memory in QEMU -m syntax, at least where the kernel image
                    ends plus 1M (about 4M) [512M]
  --accel tcg|kvm   CPU emulation; kvm needs hardware virtualisation [tcg]
  --machine q35|microvm
                    machine type [q35]
  --gdb             wait for gdb on localhost:1234 before running (QEMU -s -S)
  --gdb-stub PORT   serve the kernel's task-aware GDB stub (COM2) on localhost:PORT;
                    the kernel stops for the debugger at the end of boot (q35 only)
  --cmdline TEXT    extra words for the kernel command line
  --test [NAMES]    run the in-kernel tests (comma-separated names; all if none)
  --bench [NAMES]   run the benchmarks and print their figures: with one CPU
                    (the default) under -icount shift=0,sleep=off, so figures are
                    instruction counts; with --smp N>1 in plain TCG (wall time)
  --icount          make the guest TSC count instructions (-icount shift=0,sleep=off)
  --trace FILE      record a scheduling trace and write it to FILE as Chrome/Perfetto JSON
  --timeout SECS    stop QEMU after this many seconds
  -h, --help        show this text
";

/// Least guest memory the runner boots with, in whole MiB: one more than
/// where the kernel image, loaded at its physical addresses, ends (below
/// that it does not fit, or leaves no room for the frame allocator's
/// bitmap). Between this and what the kernel needs to run, the kernel says
/// so itself.
fn min_memory_mib() -> Result<f64, String> {
    let image = std::fs::read(orrery_runner::KERNEL_IMAGE)
        .map_err(|error| format!("reading the kernel image {}: {error}", orrery_runner::KERNEL_IMAGE))?;
    let end = load_end(&image).ok_or_else(|| format!("{}: not an ELF64 image", orrery_runner::KERNEL_IMAGE))?;
    Ok((end.div_ceil(1 << 20) + 1) as f64)
}

/// The highest physical address an ELF64 image's loadable segments cover.
fn load_end(image: &[u8]) -> Option<u64> {
    let bytes = |at: usize, count: usize| image.get(at..at + count);
    let u16_at = |at| bytes(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at| bytes(at, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |at| bytes(at, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    if bytes(0, 5)? != b"\x7fELF\x02" {
        return None;
    }
    let header_offset = usize::try_from(u64_at(0x20)?).ok()?;
    let entry_size = usize::from(u16_at(0x36)?);
    let count = usize::from(u16_at(0x38)?);
    let mut end = 0u64;
    for index in 0..count {
        let header = header_offset.checked_add(index.checked_mul(entry_size)?)?;
        const PT_LOAD: u32 = 1;
        if u32_at(header)? == PT_LOAD {
            end = end.max(u64_at(header + 0x18)?.checked_add(u64_at(header + 0x28)?)?);
        }
    }
    Some(end)
}

/// A size in QEMU's `-m` syntax (a number of MiB, or with a K, M, G or T
/// suffix), in MiB; `None` for anything else.
fn memory_mib(size: &str) -> Option<f64> {
    let (number, scale) = match size.char_indices().last()? {
        (at, 'k' | 'K') => (&size[..at], 1.0 / 1024.0),
        (at, 'm' | 'M') => (&size[..at], 1.0),
        (at, 'g' | 'G') => (&size[..at], 1024.0),
        (at, 't' | 'T') => (&size[..at], 1024.0 * 1024.0),
        _ => (size, 1.0),
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * scale)
}

struct Options {
    config: QemuConfig,
    test: bool,
    trace_file: Option<String>,
}

fn parse(arguments: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut config = QemuConfig { echo: true, ..QemuConfig::default() };
    let mut words: Vec<String> = Vec::new();
    let mut test = false;
    let mut bench = false;
    let mut smp_given = false;
    let mut trace_file = None;
    let mut arguments = arguments.collect::<Vec<_>>().into_iter().peekable();
    let value =
        |arguments: &mut std::iter::Peekable<std::vec::IntoIter<String>>, flag: &str| -> Result<String, String> {
            match arguments.next() {
                Some(value) if !value.starts_with("--") => Ok(value),
                _ => Err(format!("{flag} needs a value")),
            }
        };
    let optional_value = |arguments: &mut std::iter::Peekable<std::vec::IntoIter<String>>| -> Option<String> {
        let next: Option<&String> = arguments.peek();
        if next.is_some_and(|next| !next.starts_with('-')) { arguments.next() } else { None }
    };
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--smp" => {
                let spec = value(&mut arguments, "--smp")?;
                let count = spec.split(',').next().unwrap_or("");
                if !count.is_empty() && !count.contains('=') {
                    match count.parse::<u32>() {
                        Ok(1..=64) => {}
                        _ => return Err(format!("--smp {spec}: the CPU count must be 1 to 64")),
                    }
                }
                config.smp = spec;
                smp_given = true;
            }
            "--memory" => {
                let size = value(&mut arguments, "--memory")?;
                let mib = memory_mib(&size).ok_or(format!("--memory {size}: expected a size such as 512M or 2G"))?;
                let least = min_memory_mib()?;
                if mib < least {
                    return Err(format!(
                        "--memory {size}: at least {least}M (the kernel image, with the user programs it carries, is \
                         loaded below {}M)",
                        least - 1.0
                    ));
                }
                config.memory = size;
            }
            "--accel" => {
                config.accel = match value(&mut arguments, "--accel")?.as_str() {
                    "tcg" => Accel::Tcg,
                    "kvm" => Accel::Kvm,
                    other => return Err(format!("--accel {other}: expected tcg or kvm")),
                }
            }
            "--machine" => {
                config.machine = match value(&mut arguments, "--machine")?.as_str() {
                    "q35" => Machine::Q35,
                    "microvm" => Machine::Microvm,
                    other => return Err(format!("--machine {other}: expected q35 or microvm")),
                }
            }
            "--gdb" => config.gdb = true,
            "--gdb-stub" => {
                let port = value(&mut arguments, "--gdb-stub")?;
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or(format!("--gdb-stub {port}: expected a TCP port (1 to 65535)"))?;
                config.gdb_stub = Some(port);
                words.push("gdb".into());
            }
            "--cmdline" => words.push(value(&mut arguments, "--cmdline")?),
            "--test" => {
                test = true;
                words.push(format!("test={}", optional_value(&mut arguments).unwrap_or_default()));
            }
            "--bench" => {
                bench = true;
                words.push(format!("bench={}", optional_value(&mut arguments).unwrap_or_default()));
            }
            "--icount" => config.icount = true,
            "--trace" => {
                trace_file = Some(value(&mut arguments, "--trace")?);
                words.push("trace".into());
            }
            "--timeout" => {
                let seconds = value(&mut arguments, "--timeout")?;
                let seconds: f64 = seconds
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .ok_or(format!("--timeout {seconds}: expected seconds > 0"))?;
                config.timeout = Some(Duration::from_secs_f64(seconds));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if config.gdb_stub.is_some() && config.machine != Machine::Q35 {
        return Err("--gdb-stub needs --machine q35 (the stub talks on COM2)".into());
    }
    if test && bench {
        return Err("--test and --bench cannot be combined".into());
    }
    if bench {
        if !smp_given {
            config.smp = "1".into();
        }
        // QEMU 7.2 in icount mode livelocks a multi-CPU guest whose CPU waits
        // without halting, so cross-CPU figures are taken in plain TCG (wall
        // time) and only one-CPU runs count instructions.
        config.icount = config.smp == "1";
    }
    if config.icount {
        words.push("icount".into());
    }
    config.cmdline = words.join(" ");
    Ok(Options { config, test, trace_file })
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("orrery: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "orrery: booting {} with -smp {} -m {} (command line: {:?})",
        options.config.kernel, options.config.smp, options.config.memory, options.config.cmdline
    );
    if options.config.gdb {
        eprintln!("orrery: waiting for gdb: gdb {} -ex 'target remote :1234'", options.config.kernel);
    }
    let outcome = match options.config.run() {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("orrery: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = &options.trace_file {
        match orrery_runner::trace::write_chrome_trace(&outcome.output, file) {
            Ok(events) => eprintln!("orrery: wrote {events} trace events to {file}"),
            Err(error) => eprintln!("orrery: {error}"),
        }
    }
    eprintln!("orrery: {}", outcome.describe());
    if options.test {
        let report = TestReport::parse(&outcome.output);
        for failure in report.failures() {
            eprintln!("orrery: FAILED {}: {}", failure.name, failure.detail);
        }
        if !report.all_passed() {
            return ExitCode::FAILURE;
        }
    }
    if outcome.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(arguments: &[&str]) -> Result<Options, String> {
        parse(arguments.iter().map(|argument| String::from(*argument)))
    }

    #[test]
    fn memory_sizes_follow_qemu_syntax() {
        assert_eq!(memory_mib("512"), Some(512.0));
        assert_eq!(memory_mib("512M"), Some(512.0));
        assert_eq!(memory_mib("2G"), Some(2048.0));
        assert_eq!(memory_mib("1.5g"), Some(1536.0));
        assert_eq!(memory_mib("16384K"), Some(16.0));
        for bad in ["", "M", "-1G", "12Q", "1e3", "size=1G", "1G,slots=2"] {
            assert_eq!(memory_mib(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn too_little_or_malformed_memory_is_refused_with_a_reason() {
        assert_eq!(parsed(&["--memory", "1G"]).map(|options| options.config.memory), Ok("1G".into()));
        let least = min_memory_mib().expect("the kernel image was built");
        assert!((3.0..=16.0).contains(&least), "{least}");
        let error = parsed(&["--memory", "2M"]).err().expect("2M refused");
        assert!(error.contains(&format!("at least {least}M")), "{error}");
        assert!(parsed(&["--memory", &format!("{least}M")]).is_ok());
        assert_eq!(load_end(b"not an image"), None);
        let error = parsed(&["--memory", "lots"]).err().expect("lots refused");
        assert!(error.contains("expected a size"), "{error}");
    }
}
