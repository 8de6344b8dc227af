//! The codec's error types: [`FrameError`] for the length-prefixed framing
//! (which closes the connection) and [`DecodeError`] for a complete frame whose
//! body is not a valid jute record.

use thiserror::Error;

/// A frame header the server must refuse; ZooKeeper closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The 4-byte length prefix is negative.
    #[error("frame length {0} is negative")]
    NegativeLength(i32),
    /// The length prefix exceeds the configured maximum (jute.maxbuffer).
    #[error("frame length {len} exceeds the maximum of {max} bytes (jute.maxbuffer)")]
    TooLarge {
        /// Advertised body length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
}

/// Why a jute field could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum JuteFault {
    /// The frame ended in the middle of a field.
    #[error("record ends early")]
    Truncated,
    /// A buffer, string or vector length is negative (other than -1 = null).
    #[error("invalid length {0}")]
    BadLength(i32),
    /// A length runs past the end of the frame.
    #[error("length {0} runs past the end of the frame")]
    LengthPastEnd(i32),
    /// A multi header names an op type that cannot appear there.
    #[error("op type {0} cannot appear in a multi")]
    BadMultiOp(i32),
    /// Anything else nom reported.
    #[error("malformed ({0:?})")]
    Other(nom::error::ErrorKind),
}

/// A complete frame whose contents are not the record they should be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A field of the named record could not be read.
    #[error("malformed {record}: {fault}")]
    Malformed {
        /// The jute record being read (e.g. "CreateRequest").
        record: &'static str,
        /// What was wrong.
        fault: JuteFault,
    },
}
