//! The kernel's GDB stub, driven over the GDB remote protocol the way GDB
//! drives it: the machine stops at the end of boot with every thread
//! listed and named; registers of running and switched-away threads point
//! into kernel code; a thread with its own address space stops at a
//! breakpoint, and memory reads go through the selected thread's page
//! tables; GDB's Ctrl-C stops the running machine.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use orrery_runner::{Machine, QemuConfig};

/// `TASK_SET_AREA` in `kernel/src/task/domain.rs`.
const TASK_SET_AREA: u64 = 0x0000_7f00_0000_0000;
/// `MARKER` in `kernel/src/tests/debug.rs`.
const MARKER: &[u8; 16] = b"orrery-gdb-stub!";
/// The end of the user half of every address space.
const USER_END: u64 = 0x0000_8000_0000_0000;
/// Where the kernel half of every address space begins.
const KERNEL_BASE: u64 = 0xffff_8000_0000_0000;
/// Where the kernel's image is linked.
const KERNEL_TEXT: u64 = 0xffff_ffff_8000_0000;

/// A minimal GDB remote-protocol client: packets with checksums, acks,
/// run-length decoding.
struct Remote {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Remote {
    fn connect(port: u16) -> Self {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                // A connection to a port nobody listens on yet can meet
                // itself (TCP simultaneous open, from the same port).
                Ok(stream) if stream.local_addr().map(|address| address.port()).ok() == Some(port) => {
                    drop(stream);
                    thread::sleep(Duration::from_millis(100));
                }
                Ok(stream) => {
                    stream.set_read_timeout(Some(Duration::from_secs(300))).expect("timeout");
                    return Self { stream, pending: Vec::new() };
                }
                Err(error) if Instant::now() > deadline => panic!("no stub on port {port}: {error}"),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn send(&mut self, command: &str) {
        let checksum = command.bytes().fold(0u8, |sum, byte| sum.wrapping_add(byte));
        write!(self.stream, "${command}#{checksum:02x}").expect("send");
    }

    fn receive(&mut self) -> String {
        self.try_receive().expect("the stub answers").expect("the stub closed the connection")
    }

    /// The next packet, or `None` when the connection closed.
    fn try_receive(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(start) = self.pending.iter().position(|&byte| byte == b'$')
                && let Some(end) = self.pending[start..].iter().position(|&byte| byte == b'#').map(|at| start + at)
                && self.pending.len() >= end + 3
            {
                let body = self.pending[start + 1..end].to_vec();
                let checksum = u8::from_str_radix(std::str::from_utf8(&self.pending[end + 1..end + 3]).unwrap(), 16);
                assert_eq!(checksum, Ok(body.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte))), "checksum");
                self.pending.drain(..end + 3);
                self.stream.write_all(b"+").expect("ack");
                return Ok(Some(run_length_decoded(&body)));
            }
            let mut buffer = [0u8; 4096];
            let read = self.stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(None);
            }
            self.pending.extend_from_slice(&buffer[..read]);
        }
    }

    /// Connects and opens the session, again if QEMU drops a connection
    /// made while the machine was starting.
    ///
    /// Like GDB, it asks again when no answer comes within two seconds:
    /// what it sent before the kernel set the port up is lost.
    fn open(port: u16) -> Self {
        let mut remote = Self::connect(port);
        remote.stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        for _ in 0..60 {
            remote.send("qSupported:multiprocess+");
            match remote.try_receive() {
                Ok(Some(features)) => {
                    assert!(features.contains("multiprocess+"), "{features}");
                    remote.stream.set_read_timeout(Some(Duration::from_secs(300))).expect("timeout");
                    return remote;
                }
                // Closed: connect again.
                Ok(None) => remote = Self::connect(port),
                // No answer yet: ask again.
                Err(_) => remote.pending.clear(),
            }
        }
        panic!("no session with the stub on port {port}");
    }

    fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.receive()
    }

    /// Thread ids (`p1.N` form) and their descriptions.
    fn threads(&mut self) -> Vec<(String, String)> {
        let mut ids = Vec::new();
        let mut reply = self.ask("qfThreadInfo");
        while let Some(list) = reply.strip_prefix('m') {
            ids.extend(list.split(',').map(String::from));
            reply = self.ask("qsThreadInfo");
        }
        assert_eq!(reply, "l", "the thread list ends");
        ids.into_iter()
            .map(|id| {
                let hex = self.ask(&format!("qThreadExtraInfo,{id}"));
                let name = String::from_utf8(hex_bytes(&hex)).expect("text");
                (id, name)
            })
            .collect()
    }

    /// The id of the thread whose description starts with `prefix`.
    fn thread_named(&mut self, prefix: &str) -> String {
        let threads = self.threads();
        threads
            .iter()
            .find(|(_, name)| name.starts_with(prefix))
            .map(|(id, _)| normalised(id))
            .unwrap_or_else(|| panic!("no thread {prefix:?} in {threads:?}"))
    }

    /// `rip` and `rsp` of thread `id`.
    fn pc_and_sp(&mut self, id: &str) -> (u64, u64) {
        assert_eq!(self.ask(&format!("Hg{id}")), "OK");
        let registers = hex_bytes(&self.ask("g"));
        let word = |index: usize| u64::from_le_bytes(registers[index * 8..index * 8 + 8].try_into().unwrap());
        (word(16), word(7))
    }

    /// `length` bytes at `address` in thread `id`'s address space, or the
    /// error reply.
    fn read(&mut self, id: &str, address: u64, length: usize) -> Result<Vec<u8>, String> {
        assert_eq!(self.ask(&format!("Hg{id}")), "OK");
        let reply = self.ask(&format!("m{address:x},{length:x}"));
        if reply.starts_with('E') { Err(reply) } else { Ok(hex_bytes(&reply)) }
    }

    /// Continues and waits for the next stop; returns the stopped thread.
    fn continue_to_stop(&mut self) -> String {
        let reply = self.ask("c");
        stop_thread(&reply)
    }
}

fn run_length_decoded(body: &[u8]) -> String {
    let mut out = Vec::new();
    let mut bytes = body.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'*' {
            let count = bytes.next().expect("a run length") - 29;
            let last = *out.last().expect("a run repeats something");
            out.extend(std::iter::repeat_n(last, usize::from(count)));
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).expect("ASCII")
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2).map(|at| u8::from_str_radix(&hex[2 * at..2 * at + 2], 16).expect("hex")).collect()
}

/// The thread of a `T05thread:ID;` stop reply.
fn stop_thread(reply: &str) -> String {
    let thread = reply.split(';').find_map(|part| part.strip_prefix("T05thread:")).unwrap_or_else(|| {
        panic!("a stop with a thread, got {reply:?}");
    });
    // Normalise `p01.0a` to `p1.a`, the form qfThreadInfo lists.
    normalised(thread)
}

fn normalised(id: &str) -> String {
    let (process, thread) = id.trim_start_matches('p').split_once('.').expect("p<pid>.<tid>");
    let number = |text: &str| u64::from_str_radix(text, 16).expect("hex id");
    format!("p{:x}.{:x}", number(process), number(thread))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

#[test]
fn the_gdb_stub_shows_threads_and_their_address_spaces() {
    let port = free_port();
    let config = QemuConfig {
        gdb_stub: Some(port),
        ..QemuConfig::for_tests(Machine::Q35, "2", "gdb test=breakpoints_stop_only_for_a_debugger")
    };
    let machine = thread::spawn(move || config.run_for_tests());
    let mut remote = Remote::open(port);

    // The stop at the end of boot: the main thread, at the breakpoint.
    let stopped = stop_thread(&remote.ask("?"));
    let threads: Vec<(String, String)> =
        remote.threads().into_iter().map(|(id, name)| (normalised(&id), name)).collect();
    let named = |prefix: &str| threads.iter().filter(|(_, name)| name.starts_with(prefix)).count();
    assert_eq!(named("dispatcher0 (kernel"), 1, "{threads:?}");
    assert_eq!(named("dispatcher1 (kernel"), 1, "{threads:?}");
    assert_eq!(named("main (kernel"), 1, "{threads:?}");
    let main = threads.iter().find(|(_, name)| name.starts_with("main ")).map(|(id, _)| id.clone()).unwrap();
    assert_eq!(stopped, main, "the boot stop is the main thread's: {threads:?}");
    // Every thread's registers: the stopped one's trap frame, the other
    // CPU's interrupted frame, switched-away threads' saved registers. All
    // are kernel threads now, so every rip is kernel code, readable there.
    for (id, name) in &threads {
        let (rip, rsp) = remote.pc_and_sp(id);
        assert!(rip >= KERNEL_TEXT, "{name}: rip {rip:#x}");
        assert!(rsp >= 0xffff_8000_0000_0000, "{name}: rsp {rsp:#x}");
        let code = remote.read(id, rip, 8).unwrap_or_else(|error| panic!("{name}: code at {rip:#x}: {error}"));
        assert_eq!(code.len(), 8);
    }
    assert!(remote.read(&main, TASK_SET_AREA, 16).is_err(), "no task-set area in the kernel's space");

    // The test's thread with its own address space stops at its breakpoint:
    // its task-set area holds the marker, read through its page tables;
    // the main thread's space still maps nothing there.
    let stopped = remote.continue_to_stop();
    let target = remote.thread_named("gdb-target (kernel");
    assert_eq!(stopped, target);
    assert_eq!(remote.read(&target, TASK_SET_AREA, 16).as_deref(), Ok(&MARKER[..]));
    // The user thread waiting in a system call: its saved user registers,
    // and its code read through its own page tables (not mapped in the
    // kernel's space).
    let spinner = remote.thread_named("spinner (user");
    let (rip, rsp) = remote.pc_and_sp(&spinner);
    assert!(rip < USER_END && rip != 0, "user rip {rip:#x}");
    assert!(rsp < USER_END && rsp != 0, "user rsp {rsp:#x}");
    let code = remote.read(&spinner, rip - 2, 2).expect("the spinner's code");
    assert_eq!(code, [0x0f, 0x05], "it stopped right after its `syscall`");
    assert!(remote.read(&main, rip, 2).is_err(), "user code is not in the kernel's space");
    // The user thread running on the other CPU: the frame that CPU was
    // stopped in. Nearly always a user-mode frame, whose code is read
    // through the thread's page tables; when the stop found that CPU in its
    // dispatcher handling one of the thread's traps (the debug interrupt
    // waits while a timer tick is handled with interrupts off, and lands as
    // the dispatcher turns them on), the kernel path it is in.
    let busy = remote.thread_named("busy-spinner (user, Running, cpu1)");
    let (rip, rsp) = remote.pc_and_sp(&busy);
    if rip < USER_END {
        assert!(rip != 0, "user rip {rip:#x}");
        assert!(rsp < USER_END && rsp != 0, "user rsp {rsp:#x}");
        assert_eq!(remote.read(&busy, rip, 4).map(|code| code.len()), Ok(4));
    } else {
        assert!(rip >= KERNEL_TEXT && rsp >= KERNEL_BASE, "neither a user nor a kernel frame: {rip:#x} {rsp:#x}");
        assert_eq!(remote.read(&busy, rip, 4).map(|code| code.len()), Ok(4), "kernel code at {rip:#x}");
    }
    assert!(remote.read(&main, TASK_SET_AREA, 16).is_err(), "the area is in the target's space only");
    // Writes are refused.
    assert!(remote.ask(&format!("M{TASK_SET_AREA:x},1:00")).starts_with('E'));

    // Ctrl-C while the machine runs (the test waits for it): it stops, in
    // the thread that polls the port.
    remote.send("c");
    thread::sleep(Duration::from_millis(500));
    remote.stream.write_all(&[0x03]).expect("Ctrl-C");
    let reply = remote.receive();
    assert!(reply.starts_with("T02thread:"), "a SIGINT stop: {reply}");
    assert_eq!(
        normalised(reply.trim_start_matches("T02thread:").trim_end_matches(';')),
        remote.thread_named("gdb-poll")
    );

    // Let it go: the test finishes and the machine exits.
    remote.send("c");
    let outcome = machine.join().expect("QEMU ran");
    outcome.assert_all_passed();
}
