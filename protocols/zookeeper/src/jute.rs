//! Jute binary primitives as ZooKeeper's `BinaryInputArchive` and
//! `BinaryOutputArchive` encode them: big-endian `int` (i32) and `long` (i64),
//! `boolean` as one byte, `buffer` and `ustring` as an i32 length then bytes,
//! `vector` as an i32 count then elements; length -1 means null. Parsers are
//! nom parsers over a complete frame body (running out of bytes is a
//! malformed record, never "incomplete"); writers append to a `Vec<u8>`.

use nom::IResult;
use nom::error::{ErrorKind, ParseError};

use crate::error::{DecodeError, JuteFault};

/// The nom error type of the jute parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JuteError(pub JuteFault);

impl<I> ParseError<I> for JuteError {
    fn from_error_kind(_input: I, kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Eof => JuteError(JuteFault::Truncated),
            other => JuteError(JuteFault::Other(other)),
        }
    }

    fn append(_input: I, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

/// Result of a jute parser.
pub type JResult<'a, T> = IResult<&'a [u8], T, JuteError>;

fn fail<T>(fault: JuteFault) -> JResult<'static, T> {
    Err(nom::Err::Failure(JuteError(fault)))
}

/// Runs a record parser over a frame body; trailing bytes are ignored, as
/// ZooKeeper's deserializers ignore them.
pub fn run<'a, T>(
    record: &'static str,
    input: &'a [u8],
    parser: impl FnOnce(&'a [u8]) -> JResult<'a, T>,
) -> Result<(&'a [u8], T), DecodeError> {
    parser(input).map_err(|e| {
        let fault = match e {
            nom::Err::Error(JuteError(f)) | nom::Err::Failure(JuteError(f)) => f,
            nom::Err::Incomplete(_) => JuteFault::Truncated,
        };
        DecodeError::Malformed { record, fault }
    })
}

/// Jute `int`.
pub fn int(i: &[u8]) -> JResult<'_, i32> {
    match i.split_first_chunk::<4>() {
        Some((b, rest)) => Ok((rest, i32::from_be_bytes(*b))),
        None => Err(nom::Err::Error(JuteError(JuteFault::Truncated))),
    }
}

/// Jute `long`.
pub fn long(i: &[u8]) -> JResult<'_, i64> {
    match i.split_first_chunk::<8>() {
        Some((b, rest)) => Ok((rest, i64::from_be_bytes(*b))),
        None => Err(nom::Err::Error(JuteError(JuteFault::Truncated))),
    }
}

/// Jute `boolean`: one byte, any non-zero value is true (Java's `readBoolean`).
pub fn boolean(i: &[u8]) -> JResult<'_, bool> {
    match i.split_first() {
        Some((b, rest)) => Ok((rest, *b != 0)),
        None => Err(nom::Err::Error(JuteError(JuteFault::Truncated))),
    }
}

/// A length field: `None` for -1 (null), an error for other negatives or a
/// length longer than what is left of the frame.
fn length(i: &[u8]) -> JResult<'_, Option<usize>> {
    let (rest, n) = int(i)?;
    if n == -1 {
        return Ok((rest, None));
    }
    match usize::try_from(n) {
        Ok(len) if len <= rest.len() => Ok((rest, Some(len))),
        Ok(_) => fail(JuteFault::LengthPastEnd(n)),
        Err(_) => fail(JuteFault::BadLength(n)),
    }
}

/// Jute `buffer`; `None` is the null buffer (length -1).
pub fn buffer(i: &[u8]) -> JResult<'_, Option<Vec<u8>>> {
    let (rest, len) = length(i)?;
    match len {
        None => Ok((rest, None)),
        Some(len) => {
            let (bytes, rest) = rest.split_at(len);
            Ok((rest, Some(bytes.to_vec())))
        }
    }
}

/// Jute `ustring`; `None` is the null string (length -1). Invalid UTF-8 is
/// replaced with U+FFFD, as Java's `new String(bytes, UTF_8)` does (path
/// validation then refuses it, as ZooKeeper does).
pub fn ustring(i: &[u8]) -> JResult<'_, Option<String>> {
    let (rest, len) = length(i)?;
    match len {
        None => Ok((rest, None)),
        Some(len) => {
            let (bytes, rest) = rest.split_at(len);
            Ok((rest, Some(String::from_utf8_lossy(bytes).into_owned())))
        }
    }
}

/// A `ustring` where null reads as the empty string (paths, schemes, ids).
pub fn string(i: &[u8]) -> JResult<'_, String> {
    let (rest, s) = ustring(i)?;
    Ok((rest, s.unwrap_or_default()))
}

/// Jute `vector<T>`; `None` is the null vector (count -1). The count is checked
/// against the bytes left (every element takes at least one byte) before
/// anything is allocated.
pub fn vector<'a, T>(
    mut element: impl FnMut(&'a [u8]) -> JResult<'a, T>,
) -> impl FnMut(&'a [u8]) -> JResult<'a, Option<Vec<T>>> {
    move |i: &'a [u8]| {
        let (mut rest, len) = length(i)?;
        let Some(len) = len else {
            return Ok((rest, None));
        };
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            let (r, item) = element(rest)?;
            rest = r;
            out.push(item);
        }
        Ok((rest, Some(out)))
    }
}

/// A vector where null reads as empty.
pub fn list<'a, T>(
    element: impl FnMut(&'a [u8]) -> JResult<'a, T>,
) -> impl FnMut(&'a [u8]) -> JResult<'a, Vec<T>> {
    let mut v = vector(element);
    move |i: &'a [u8]| {
        let (rest, items) = v(i)?;
        Ok((rest, items.unwrap_or_default()))
    }
}

/// Writes a jute `int`.
pub fn put_int(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes a jute `long`.
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes a jute `boolean` (1 or 0).
pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// Writes a length; lengths past `i32::MAX` cannot be framed anyway and are
/// clamped (the frame limit refuses them long before).
fn put_len(out: &mut Vec<u8>, len: usize) {
    put_int(out, i32::try_from(len).unwrap_or(i32::MAX));
}

/// Writes a jute `buffer`; `None` writes the null buffer.
pub fn put_buffer(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_int(out, -1),
        Some(b) => {
            put_len(out, b.len());
            out.extend_from_slice(b);
        }
    }
}

/// Writes a jute `ustring`; `None` writes the null string.
pub fn put_ustring(out: &mut Vec<u8>, v: Option<&str>) {
    put_buffer(out, v.map(str::as_bytes));
}

/// Writes a non-null `ustring`.
pub fn put_string(out: &mut Vec<u8>, v: &str) {
    put_ustring(out, Some(v));
}

/// Writes a jute `vector`; `None` writes the null vector.
pub fn put_vector<T>(
    out: &mut Vec<u8>,
    v: Option<&[T]>,
    mut element: impl FnMut(&mut Vec<u8>, &T),
) {
    match v {
        None => put_int(out, -1),
        Some(items) => {
            put_len(out, items.len());
            for item in items {
                element(out, item);
            }
        }
    }
}

/// Writes a non-null vector of strings.
pub fn put_strings(out: &mut Vec<u8>, v: &[String]) {
    put_vector(out, Some(v), |o, s| put_string(o, s));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut out = Vec::new();
        put_int(&mut out, -2);
        put_long(&mut out, 0x0102_0304_0506_0708);
        put_bool(&mut out, true);
        put_buffer(&mut out, None);
        put_buffer(&mut out, Some(b"ab"));
        put_ustring(&mut out, Some("/a"));
        put_ustring(&mut out, None);
        put_vector(&mut out, Some(&["x".to_string()][..]), |o, s| {
            put_string(o, s)
        });
        put_vector::<String>(&mut out, None, |o, s| put_string(o, s));
        assert_eq!(&out[..4], &[0xff, 0xff, 0xff, 0xfe]);

        let i = &out[..];
        let (i, a) = int(i).unwrap();
        let (i, b) = long(i).unwrap();
        let (i, c) = boolean(i).unwrap();
        let (i, d) = buffer(i).unwrap();
        let (i, e) = buffer(i).unwrap();
        let (i, f) = ustring(i).unwrap();
        let (i, g) = ustring(i).unwrap();
        let (i, h) = vector(string)(i).unwrap();
        let (i, k) = vector(string)(i).unwrap();
        assert!(i.is_empty());
        assert_eq!((a, b, c), (-2, 0x0102_0304_0506_0708, true));
        assert_eq!((d, e), (None, Some(b"ab".to_vec())));
        assert_eq!((f, g), (Some("/a".to_string()), None));
        assert_eq!((h, k), (Some(vec!["x".to_string()]), None));
    }

    #[test]
    fn boolean_is_any_non_zero_byte() {
        assert!(boolean(&[7]).unwrap().1);
        assert!(!boolean(&[0]).unwrap().1);
    }

    #[test]
    fn bad_lengths_are_malformed() {
        let past_end = [0, 0, 0, 5, b'a'];
        assert_eq!(
            run("T", &past_end, buffer).unwrap_err(),
            DecodeError::Malformed {
                record: "T",
                fault: JuteFault::LengthPastEnd(5)
            }
        );
        let negative = (-2i32).to_be_bytes();
        assert_eq!(
            run("T", &negative, ustring).unwrap_err(),
            DecodeError::Malformed {
                record: "T",
                fault: JuteFault::BadLength(-2)
            }
        );
        // A huge vector count is refused before allocating.
        let huge = i32::MAX.to_be_bytes();
        assert!(run("T", &huge, vector(int)).is_err());
        assert_eq!(
            run("T", &[0, 0], int).unwrap_err(),
            DecodeError::Malformed {
                record: "T",
                fault: JuteFault::Truncated
            }
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_like_java() {
        let bytes = [0, 0, 0, 2, 0xff, b'a'];
        assert_eq!(string(&bytes).unwrap().1, "\u{fffd}a");
    }
}
