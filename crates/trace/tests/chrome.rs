//! Tests of the Chrome trace-event JSON writer (feature `std`): a small known
//! trace compared byte for byte, and random traces checked to be valid JSON
//! with the structure the module documents.
//!
//! Run with `cargo test -p orrery-trace --features std`; `Cargo.toml` marks
//! this file `required-features = ["std"]`.

use orrery_trace::chrome::{ChromeError, PID, to_json, write_json};
use orrery_trace::{Event, EventKind};
use proptest::prelude::*;
use serde_json::Value;

fn event(tsc: u64, kind: EventKind, cpu: u16, a: u64, b: u64) -> Event {
    Event::new(tsc, kind, cpu, a, b)
}

/// Two CPUs, given interleaved and out of order, at 2 GHz (two ticks per
/// nanosecond) so the conversion is visible. Thread 2's name needs escaping.
fn small_trace() -> Vec<Event> {
    vec![
        event(2000, EventKind::Switch, 1, 0, 3),
        event(5000, EventKind::Switch, 0, 1, 2),
        event(1000, EventKind::Switch, 0, 0, 1),
        event(4000, EventKind::Migrate, 1, 3, 0),
        event(3000, EventKind::Wake, 0, 2, 1),
        event(6000, EventKind::Preempt, 1, 3, 0),
        event(9000, EventKind::Idle, 0, 2, 0),
        event(7000, EventKind::Block, 1, 3, 42),
        event(7000, EventKind::Custom, 1, 5, 6),
    ]
}

const SMALL_TRACE_NAMES: [(u64, &str); 2] = [(1, "init"), (2, "shell \"sh\"")];

const SMALL_TRACE_JSON: &str = r#"{"traceEvents":[
{"name":"process_name","ph":"M","pid":1,"args":{"name":"Orrery"}},
{"name":"thread_name","ph":"M","pid":1,"tid":0,"args":{"name":"CPU 0"}},
{"name":"thread_sort_index","ph":"M","pid":1,"tid":0,"args":{"sort_index":0}},
{"name":"thread_name","ph":"M","pid":1,"tid":1,"args":{"name":"CPU 1"}},
{"name":"thread_sort_index","ph":"M","pid":1,"tid":1,"args":{"sort_index":1}},
{"name":"wake shell \"sh\"","cat":"sched","ph":"i","s":"t","ts":1.000,"pid":1,"tid":0,"args":{"thread":2,"target_cpu":1}},
{"name":"init","cat":"run","ph":"X","ts":0.000,"dur":2.000,"pid":1,"tid":0,"args":{"thread":1}},
{"name":"shell \"sh\"","cat":"run","ph":"X","ts":2.000,"dur":2.000,"pid":1,"tid":0,"args":{"thread":2}},
{"name":"migrate thread 3","cat":"sched","ph":"i","s":"t","ts":1.500,"pid":1,"tid":1,"args":{"thread":3,"target_cpu":0}},
{"name":"preempt thread 3","cat":"sched","ph":"i","s":"t","ts":2.500,"pid":1,"tid":1,"args":{"thread":3,"reason":0}},
{"name":"block thread 3","cat":"sched","ph":"i","s":"t","ts":3.000,"pid":1,"tid":1,"args":{"thread":3,"reason":42}},
{"name":"custom","cat":"sched","ph":"i","s":"t","ts":3.000,"pid":1,"tid":1,"args":{"a":5,"b":6}},
{"name":"thread 3","cat":"run","ph":"X","ts":0.500,"dur":2.500,"pid":1,"tid":1,"args":{"thread":3}}
]}
"#;

#[test]
fn a_small_trace_gives_exactly_the_expected_json() {
    let json = to_json(&small_trace(), 2_000_000_000, &SMALL_TRACE_NAMES).unwrap();
    assert_eq!(json, SMALL_TRACE_JSON);
}

#[test]
fn the_small_trace_parses_as_the_documented_structure() {
    let json = to_json(&small_trace(), 2_000_000_000, &SMALL_TRACE_NAMES).unwrap();
    let value: Value = serde_json::from_str(&json).unwrap();
    let events = value["traceEvents"].as_array().unwrap();
    assert_eq!(events.len(), 13);
    let slices: Vec<(&str, f64, f64)> = events
        .iter()
        .filter(|event| event["ph"] == "X")
        .map(|event| (event["name"].as_str().unwrap(), event["ts"].as_f64().unwrap(), event["dur"].as_f64().unwrap()))
        .collect();
    assert_eq!(slices, [("init", 0.0, 2.0), ("shell \"sh\"", 2.0, 2.0), ("thread 3", 0.5, 2.5)]);
    assert!(events.iter().all(|event| event["pid"] == PID));
}

#[test]
fn a_zero_frequency_is_refused_before_writing() {
    let mut json = String::new();
    assert_eq!(write_json(&small_trace(), 0, &[], &mut json), Err(ChromeError::ZeroFrequency));
    assert!(json.is_empty());
}

#[test]
fn a_failing_output_is_reported() {
    struct Full;
    impl std::fmt::Write for Full {
        fn write_str(&mut self, _: &str) -> std::fmt::Result {
            Err(std::fmt::Error)
        }
    }
    assert_eq!(write_json(&small_trace(), 1, &[], &mut Full), Err(ChromeError::Write(std::fmt::Error)));
}

#[test]
fn an_empty_trace_is_just_the_process() {
    let json = to_json(&[], 1_000_000_000, &[]).unwrap();
    assert_eq!(
        json,
        "{\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"Orrery\"}}\n]}\n"
    );
    serde_json::from_str::<Value>(&json).unwrap();
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

fn random_event() -> impl Strategy<Value = Event> {
    (0..1_000_000_u64, kind(), 0..4_u16, 0..6_u64, any::<u64>())
        .prop_map(|(tsc, kind, cpu, a, b)| Event::new(tsc, kind, cpu, a, b % 8))
}

proptest! {
    #[test]
    fn random_traces_are_valid_json_with_sane_slices(
        events in prop::collection::vec(random_event(), 0..60),
        tsc_hz in 1..10_000_000_000_u64,
        name in ".*",
    ) {
        let json = to_json(&events, tsc_hz, &[(1, name.as_str())]).unwrap();
        let value: Value = serde_json::from_str(&json).unwrap();
        let trace = value["traceEvents"].as_array().unwrap();
        let switches = events.iter().filter(|event| event.kind == EventKind::Switch).count();
        let slices: Vec<&Value> = trace.iter().filter(|event| event["ph"] == "X").collect();
        prop_assert!(slices.len() <= switches);
        for slice in &slices {
            prop_assert!(slice["dur"].as_f64().unwrap() >= 0.0);
            prop_assert!(slice["ts"].as_f64().unwrap() >= 0.0);
            // Escaping round-trips whatever the name holds.
            if slice["args"]["thread"] == 1 {
                prop_assert_eq!(slice["name"].as_str().unwrap(), name.as_str());
            }
        }
        let markers = trace.iter().filter(|event| event["ph"] == "i").count();
        let expected_markers = events
            .iter()
            .filter(|event| !matches!(event.kind, EventKind::Switch | EventKind::Idle))
            .count();
        prop_assert_eq!(markers, expected_markers);
    }
}
