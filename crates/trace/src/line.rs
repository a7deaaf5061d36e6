//! The line encoding of an [`Event`], for carrying rings over a serial port.
//!
//! One event per line, six fields separated by single spaces:
//!
//! ```text
//! T <cpu> <tsc> <kind> <a> <b>
//! T 1 3b9aca00 switch 4 7
//! ```
//!
//! `T` marks a trace line among the kernel's other serial output; `cpu` is
//! decimal; `tsc`, `a` and `b` are hexadecimal without prefix or leading zeros
//! (the encoder writes lowercase, the decoder also takes uppercase); `kind` is
//! [`EventKind::name`]. The encoder writes no line terminator: the serial
//! writer adds its own. The decoder accepts a line with or without a trailing
//! `\n` or `\r\n` and is otherwise strict, since a lenient reader would turn
//! serial noise into plausible events.

use core::fmt::{self, Write};

use crate::{Event, EventKind};

/// The longest line [`encode_line`] writes, in bytes: `T`, a 5-digit CPU, a
/// 16-digit time stamp, a 7-letter kind and two 16-digit operands, with the
/// five spaces between them. A kernel can format into a buffer this big.
pub const MAX_LINE_LEN: usize = 1 + 1 + 5 + 1 + 16 + 1 + 7 + 1 + 16 + 1 + 16;

/// Writes `event` as one line, without a terminator.
///
/// # Errors
/// Whatever `out` returns; `encode_line` itself cannot fail.
pub fn encode_line(event: &Event, out: &mut impl Write) -> fmt::Result {
    write!(out, "T {} {:x} {} {:x} {:x}", event.cpu, event.tsc, event.kind.name(), event.a, event.b)
}

/// A field of a trace line, named in a [`DecodeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The recording CPU (decimal).
    Cpu,
    /// The time stamp (hexadecimal).
    Tsc,
    /// The event kind (a word).
    Kind,
    /// The first operand (hexadecimal).
    A,
    /// The second operand (hexadecimal).
    B,
}

/// Why a line is not a trace event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The line does not start with `T `: probably other serial output.
    NotTraceLine,
    /// The line ends before this field.
    MissingField(Field),
    /// There is more after the last field.
    TrailingField,
    /// This field is empty or holds a character that is not a digit of its
    /// base (signs and `0x` prefixes included).
    InvalidNumber(Field),
    /// This field's number does not fit its type (`u16` for the CPU, `u64`
    /// otherwise).
    NumberTooLarge(Field),
    /// The kind is not one of [`EventKind::name`]'s words.
    UnknownKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTraceLine => formatter.write_str("not a trace line (no leading \"T \")"),
            Self::MissingField(field) => write!(formatter, "trace line ends before its {field:?} field"),
            Self::TrailingField => formatter.write_str("trace line has more than six fields"),
            Self::InvalidNumber(field) => write!(formatter, "trace line's {field:?} field is not a number"),
            Self::NumberTooLarge(field) => write!(formatter, "trace line's {field:?} field is too large"),
            Self::UnknownKind => formatter.write_str("trace line has an unknown event kind"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Reads one line written by [`encode_line`].
///
/// # Errors
/// A [`DecodeError`] naming the first thing wrong. Any input, including
/// arbitrary bytes from a noisy serial line, gives an error or an event; none
/// panics.
pub fn decode_line(line: &str) -> Result<Event, DecodeError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line.split(' ');
    if fields.next() != Some("T") {
        return Err(DecodeError::NotTraceLine);
    }
    let mut next = |field| fields.next().ok_or(DecodeError::MissingField(field));
    let cpu = parse_decimal_u16(next(Field::Cpu)?, Field::Cpu)?;
    let tsc = parse_hex_u64(next(Field::Tsc)?, Field::Tsc)?;
    let kind = EventKind::from_name(next(Field::Kind)?).ok_or(DecodeError::UnknownKind)?;
    let a = parse_hex_u64(next(Field::A)?, Field::A)?;
    let b = parse_hex_u64(next(Field::B)?, Field::B)?;
    if fields.next().is_some() {
        return Err(DecodeError::TrailingField);
    }
    Ok(Event::new(tsc, kind, cpu, a, b))
}

/// Digits only (`u16::from_str` would also take a leading `+`).
fn parse_decimal_u16(text: &str, field: Field) -> Result<u16, DecodeError> {
    if text.is_empty() {
        return Err(DecodeError::InvalidNumber(field));
    }
    text.bytes().try_fold(0_u16, |value, byte| {
        let digit = match byte {
            b'0'..=b'9' => u16::from(byte - b'0'),
            _ => return Err(DecodeError::InvalidNumber(field)),
        };
        value.checked_mul(10).and_then(|value| value.checked_add(digit)).ok_or(DecodeError::NumberTooLarge(field))
    })
}

/// Hexadecimal digits only, either case, no prefix or sign.
fn parse_hex_u64(text: &str, field: Field) -> Result<u64, DecodeError> {
    if text.is_empty() {
        return Err(DecodeError::InvalidNumber(field));
    }
    text.bytes().try_fold(0_u64, |value, byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return Err(DecodeError::InvalidNumber(field)),
        };
        value
            .checked_mul(16)
            .and_then(|value| value.checked_add(u64::from(digit)))
            .ok_or(DecodeError::NumberTooLarge(field))
    })
}
