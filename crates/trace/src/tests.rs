//! Tests of the ring and the line encoding. The JSON writer is tested in
//! `tests/chrome.rs` (feature `std`).

extern crate std;

use std::collections::VecDeque;
use std::string::String;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

fn switch(tsc: u64, previous: u64, next: u64) -> Event {
    Event::new(tsc, EventKind::Switch, 0, previous, next)
}

fn tscs<const N: usize>(ring: &Ring<N>) -> Vec<u64> {
    ring.iter().map(|event| event.tsc).collect()
}

#[test]
fn event_layout_is_fixed() {
    assert_eq!(core::mem::size_of::<Event>(), 32);
    assert_eq!(core::mem::offset_of!(Event, tsc), 0);
    assert_eq!(core::mem::offset_of!(Event, kind), 8);
    assert_eq!(core::mem::offset_of!(Event, cpu), 10);
    assert_eq!(core::mem::offset_of!(Event, a), 16);
    assert_eq!(core::mem::offset_of!(Event, b), 24);
    assert_eq!(core::mem::size_of::<EventKind>(), 1);
}

#[test]
fn kinds_round_trip_through_bytes_and_names() {
    for (index, kind) in EventKind::ALL.into_iter().enumerate() {
        assert_eq!(kind as u8, u8::try_from(index).unwrap() + 1);
        assert_eq!(EventKind::from_u8(kind as u8), Some(kind));
        assert_eq!(EventKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(EventKind::from_u8(0), None, "a zeroed record is no event");
    assert_eq!(EventKind::from_u8(10), None);
    assert_eq!(EventKind::from_name("Switch"), None);
}

#[test]
fn a_new_ring_is_empty() {
    let ring = Ring::<4>::new();
    assert!(ring.is_empty());
    assert_eq!(ring.len(), 0);
    assert_eq!(ring.capacity(), 4);
    assert_eq!(ring.dropped(), 0);
    assert_eq!(ring.iter().count(), 0);
}

#[test]
fn a_ring_below_capacity_keeps_everything_in_order() {
    let mut ring = Ring::<4>::new();
    for tsc in 1..=3 {
        ring.push(switch(tsc, 0, tsc));
    }
    assert_eq!(tscs(&ring), [1, 2, 3]);
    assert_eq!(ring.dropped(), 0);
    ring.push(switch(4, 0, 4));
    assert_eq!(tscs(&ring), [1, 2, 3, 4]);
    assert_eq!(ring.dropped(), 0, "exactly full drops nothing");
}

#[test]
fn a_full_ring_overwrites_the_oldest_and_counts_it() {
    let mut ring = Ring::<4>::new();
    for tsc in 1..=6 {
        ring.push(switch(tsc, 0, tsc));
    }
    assert_eq!(tscs(&ring), [3, 4, 5, 6]);
    assert_eq!(ring.dropped(), 2);
    assert_eq!(ring.len(), 4);
    // Wrapping several times over.
    for tsc in 7..=13 {
        ring.push(switch(tsc, 0, tsc));
    }
    assert_eq!(tscs(&ring), [10, 11, 12, 13]);
    assert_eq!(ring.dropped(), 9);
}

#[test]
fn iteration_is_exact_sized_and_reversible() {
    let mut ring = Ring::<3>::new();
    for tsc in 1..=5 {
        ring.push(switch(tsc, 0, tsc));
    }
    let iter = ring.iter();
    assert_eq!(iter.len(), 3);
    let newest_first: Vec<u64> = ring.iter().rev().map(|event| event.tsc).collect();
    assert_eq!(newest_first, [5, 4, 3]);
    let by_reference: Vec<u64> = (&ring).into_iter().map(|event| event.tsc).collect();
    assert_eq!(by_reference, [3, 4, 5]);
}

#[test]
fn a_one_slot_ring_keeps_the_newest() {
    let mut ring = Ring::<1>::new();
    ring.push(switch(1, 0, 1));
    ring.push(switch(2, 1, 2));
    assert_eq!(tscs(&ring), [2]);
    assert_eq!(ring.dropped(), 1);
}

#[test]
fn clear_forgets_events_and_dropped_count() {
    let mut ring = Ring::<2>::new();
    for tsc in 1..=5 {
        ring.push(switch(tsc, 0, tsc));
    }
    ring.clear();
    assert!(ring.is_empty());
    assert_eq!(ring.dropped(), 0);
    ring.push(switch(9, 0, 9));
    assert_eq!(tscs(&ring), [9]);
}

#[test]
fn encoding_matches_the_documented_format() {
    let mut line = String::new();
    let event = Event::new(1_000_000_000, EventKind::Switch, 1, 4, 7);
    encode_line(&event, &mut line).unwrap();
    assert_eq!(line, "T 1 3b9aca00 switch 4 7");
}

#[test]
fn the_longest_line_is_max_line_len() {
    let mut longest = 0;
    for kind in EventKind::ALL {
        let mut line = String::new();
        let event = Event::new(u64::MAX, kind, u16::MAX, u64::MAX, u64::MAX);
        encode_line(&event, &mut line).unwrap();
        assert_eq!(decode_line(&line), Ok(event));
        longest = longest.max(line.len());
    }
    assert_eq!(longest, MAX_LINE_LEN);
}

#[test]
fn decoding_takes_line_terminators_and_uppercase_hex() {
    let event = Event::new(0xAB, EventKind::Wake, 2, 0, 0x1F);
    assert_eq!(decode_line("T 2 ab wake 0 1f\n"), Ok(event));
    assert_eq!(decode_line("T 2 ab wake 0 1f\r\n"), Ok(event));
    assert_eq!(decode_line("T 2 AB wake 00 1F"), Ok(event));
}

#[test]
fn malformed_lines_are_typed_errors() {
    use DecodeError::*;
    let cases: [(&str, DecodeError); 24] = [
        ("", NotTraceLine),
        ("[boot] hello", NotTraceLine),
        ("t 0 1 switch 2 3", NotTraceLine),
        ("T\t0 1 switch 2 3", NotTraceLine),
        ("T", MissingField(Field::Cpu)),
        ("T 0", MissingField(Field::Tsc)),
        ("T 0 1", MissingField(Field::Kind)),
        ("T 0 1 switch", MissingField(Field::A)),
        ("T 0 1 switch 2", MissingField(Field::B)),
        ("T 0 1 switch 2 3 4", TrailingField),
        ("T 0 1 switch 2 3 ", TrailingField),
        ("T ", InvalidNumber(Field::Cpu)),
        ("T  0 1 switch 2 3", InvalidNumber(Field::Cpu)),
        ("T -1 1 switch 2 3", InvalidNumber(Field::Cpu)),
        ("T +1 1 switch 2 3", InvalidNumber(Field::Cpu)),
        ("T 65536 1 switch 2 3", NumberTooLarge(Field::Cpu)),
        ("T 0 0x1 switch 2 3", InvalidNumber(Field::Tsc)),
        ("T 0 10000000000000000 switch 2 3", NumberTooLarge(Field::Tsc)),
        ("T 0 1 sleep 2 3", UnknownKind),
        ("T 0 1 Switch 2 3", UnknownKind),
        ("T 0 1  2 3", UnknownKind),
        ("T 0 1 switch g 3", InvalidNumber(Field::A)),
        ("T 0 1 switch 2 3\n\n", InvalidNumber(Field::B)),
        ("T 0 1 switch 2 é", InvalidNumber(Field::B)),
    ];
    for (line, expected) in cases {
        assert_eq!(decode_line(line), Err(expected), "{line:?}");
    }
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

fn event() -> impl Strategy<Value = Event> {
    (any::<u64>(), kind(), any::<u16>(), any::<u64>(), any::<u64>())
        .prop_map(|(tsc, kind, cpu, a, b)| Event::new(tsc, kind, cpu, a, b))
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity(event in event()) {
        let mut line = String::new();
        encode_line(&event, &mut line).unwrap();
        prop_assert!(line.len() <= MAX_LINE_LEN);
        prop_assert_eq!(decode_line(&line), Ok(event));
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        let _ = decode_line(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = decode_line(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn a_corrupted_line_is_rejected_or_still_means_one_event(
        event in event(),
        position in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let mut line = String::new();
        encode_line(&event, &mut line).unwrap();
        let mut characters: Vec<char> = line.chars().collect();
        let index = position.index(characters.len());
        characters[index] = replacement;
        let corrupted: String = characters.into_iter().collect();
        if let Ok(decoded) = decode_line(&corrupted) {
            // Whatever it decoded to must survive its own round trip.
            let mut again = String::new();
            encode_line(&decoded, &mut again).unwrap();
            prop_assert_eq!(decode_line(&again), Ok(decoded));
        }
    }

    #[test]
    fn a_ring_holds_the_last_n_pushed(tscs in prop::collection::vec(any::<u64>(), 0..40)) {
        let mut ring = Ring::<7>::new();
        let mut model = VecDeque::new();
        for &tsc in &tscs {
            ring.push(switch(tsc, 0, 0));
            model.push_back(tsc);
            if model.len() > 7 {
                model.pop_front();
            }
            prop_assert_eq!(ring.len(), model.len());
        }
        prop_assert_eq!(tscs_of(&ring), Vec::from(model));
        prop_assert_eq!(ring.dropped(), tscs.len().saturating_sub(7) as u64);
    }
}

fn tscs_of<const N: usize>(ring: &Ring<N>) -> Vec<u64> {
    tscs(ring)
}
