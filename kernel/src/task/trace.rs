//! The scheduling trace: each CPU records switches, wake-ups, blocks,
//! migrations and preemptions with TSC time stamps in its own ring, and the
//! whole trace is dumped over the serial port for the runner to turn into a
//! Chrome/Perfetto timeline (`cargo run -- --trace FILE`).
//!
//! Recording is off unless the command line says `trace`; when off, a record
//! costs one load and a branch on the switch path.

use alloc::vec::Vec;
use core::{
    cell::UnsafeCell,
    sync::atomic::{AtomicBool, Ordering},
};

pub use orrery_trace::EventKind;
use orrery_trace::{Event, encode_line};

use crate::{
    arch::{cpu::MAX_CPUS, cpu_index, interrupts, tsc},
    console,
};

/// Events kept per CPU.
pub const EVENTS_PER_CPU: usize = 16384;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// One CPU's events: a heap buffer used as a ring (the events are large in
/// total, so they live on the heap, allocated only when tracing is on).
struct Events {
    buffer: Vec<Event>,
    next: usize,
    dropped: u64,
}

impl Events {
    fn push(&mut self, event: Event) {
        if self.buffer.len() < EVENTS_PER_CPU {
            self.buffer.push(event);
        } else {
            self.buffer[self.next] = event;
            self.next = (self.next + 1) % EVENTS_PER_CPU;
            self.dropped += 1;
        }
    }

    fn oldest_first(&self) -> impl Iterator<Item = &Event> {
        self.buffer[self.next..].iter().chain(self.buffer[..self.next].iter())
    }
}

struct CpuRing {
    /// Written only by its own CPU with interrupts off, read when tracing
    /// is stopped.
    ring: UnsafeCell<Option<Events>>,
}

// SAFETY: see the field's rule.
unsafe impl Sync for CpuRing {}

/// Names of the threads created while tracing, for the timeline's labels.
static NAMES: crate::sync::SpinLock<Vec<(u64, alloc::string::String)>> = crate::sync::SpinLock::new(Vec::new());

/// Remembers a thread's name for the trace (when tracing).
pub fn note_thread(id: u64, name: &str) {
    if ENABLED.load(Ordering::Relaxed) {
        NAMES.lock().push((id, alloc::string::String::from(name)));
    }
}

static RINGS: [CpuRing; MAX_CPUS] = [const { CpuRing { ring: UnsafeCell::new(None) } }; MAX_CPUS];

/// Starts recording on `cpus` CPUs.
pub fn enable(cpus: usize) {
    for ring in RINGS.iter().take(cpus) {
        // SAFETY: tracing is off, so no CPU writes the rings now.
        unsafe { *ring.ring.get() = Some(Events { buffer: Vec::with_capacity(EVENTS_PER_CPU), next: 0, dropped: 0 }) };
    }
    ENABLED.store(true, Ordering::Release);
}

/// True while recording.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Records an event on this CPU.
#[inline]
pub fn record(kind: EventKind, a: u64, b: u64) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    interrupts::without(|| {
        let cpu = cpu_index();
        // SAFETY: this CPU's ring, interrupts off.
        if let Some(ring) = unsafe { (*RINGS[cpu].ring.get()).as_mut() } {
            ring.push(Event::new(tsc::now(), kind, cpu as u16, a, b));
        }
    });
}

/// Stops recording and prints every CPU's events, one `T ...` line each,
/// between `trace: begin` and `trace: end` lines; thread names follow as
/// `trace-thread: ID NAME`.
pub fn dump(cpus: usize) {
    ENABLED.store(false, Ordering::Release);
    // Let CPUs finish a record in flight.
    let settle = tsc::now() + tsc::hz() / 1000;
    while tsc::now() < settle {
        core::hint::spin_loop();
    }
    crate::println!("trace: begin {} Hz", tsc::hz());
    let mut line = alloc::string::String::new();
    for ring in RINGS.iter().take(cpus) {
        // SAFETY: recording is off, nobody writes the rings.
        let Some(ring) = (unsafe { (*ring.ring.get()).as_ref() }) else { continue };
        for event in ring.oldest_first() {
            line.clear();
            if encode_line(event, &mut line).is_ok() {
                console::write_fmt(format_args!("{line}\n"));
            }
        }
        if ring.dropped > 0 {
            crate::println!("trace: dropped {}", ring.dropped);
        }
    }
    for (id, name) in NAMES.lock().iter() {
        crate::println!("trace-thread: {id} {name}");
    }
    crate::println!("trace: end");
}
