//! Framing: every ZooKeeper message is a 4-byte big-endian length and then
//! that many bytes. [`FrameSplitter`] cuts frames off the front of a read
//! buffer ("need more bytes" for partial input, a [`FrameError`] for a
//! negative or oversized length); [`encode_frame`] prefixes a body.
//! Four-letter words (`ruok`, `srvr`, ...) arrive where the first length
//! would be; [`four_letter_word`] recognises them.

use nom::Needed;
use nom::number::streaming::be_i32;

use crate::error::FrameError;

/// ZooKeeper's default jute.maxbuffer: 0xfffff bytes (1 MiB - 1).
pub const DEFAULT_MAX_FRAME: usize = 0xfffff;

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// What [`FrameSplitter::split`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split<'a> {
    /// Not a whole frame yet: at least `needed` more bytes must be read.
    Incomplete {
        /// How many more bytes are needed, at least.
        needed: usize,
    },
    /// A whole frame.
    Frame {
        /// The frame's body, without the length prefix.
        body: &'a [u8],
        /// Bytes to drop from the front of the buffer (prefix + body).
        consumed: usize,
    },
}

/// Cuts length-prefixed frames, refusing lengths over a maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSplitter {
    max_len: usize,
}

impl Default for FrameSplitter {
    fn default() -> Self {
        FrameSplitter::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameSplitter {
    /// A splitter that refuses bodies longer than `max_len` bytes.
    pub const fn new(max_len: usize) -> Self {
        FrameSplitter { max_len }
    }

    /// The configured maximum body length.
    pub const fn max_len(&self) -> usize {
        self.max_len
    }

    /// Looks at the front of `buf`. The length is checked as soon as its 4
    /// bytes are there, so an oversized frame is refused before its body is
    /// read.
    pub fn split<'a>(&self, buf: &'a [u8]) -> Result<Split<'a>, FrameError> {
        let (rest, len) = match be_i32::<_, nom::error::Error<&[u8]>>(buf) {
            Ok(v) => v,
            Err(nom::Err::Incomplete(Needed::Size(n))) => {
                return Ok(Split::Incomplete { needed: n.get() });
            }
            Err(_) => {
                return Ok(Split::Incomplete {
                    needed: LENGTH_PREFIX - buf.len(),
                });
            }
        };
        let len = usize::try_from(len).map_err(|_| FrameError::NegativeLength(len))?;
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        match rest.get(..len) {
            Some(body) => Ok(Split::Frame {
                body,
                consumed: LENGTH_PREFIX + len,
            }),
            None => Ok(Split::Incomplete {
                needed: len - rest.len(),
            }),
        }
    }
}

/// A growable read buffer that hands out whole frames: feed it bytes as they
/// arrive (one at a time if need be) and take frames while there are any.
#[derive(Debug, Clone, Default)]
pub struct FrameBuffer {
    splitter: FrameSplitter,
    buf: Vec<u8>,
}

impl FrameBuffer {
    /// An empty buffer using `splitter`'s limit.
    pub fn new(splitter: FrameSplitter) -> Self {
        FrameBuffer {
            splitter,
            buf: Vec::new(),
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The next whole frame body, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        match self.splitter.split(&self.buf)? {
            Split::Incomplete { .. } => Ok(None),
            Split::Frame { body, consumed } => {
                let body = body.to_vec();
                self.buf.drain(..consumed);
                Ok(Some(body))
            }
        }
    }
}

/// Prefixes `body` with its length. Bodies are never near 2 GiB (the frame
/// limit is far lower); a longer one would get a clamped length.
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LENGTH_PREFIX + body.len());
    out.extend_from_slice(&i32::try_from(body.len()).unwrap_or(i32::MAX).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Writes a length placeholder, lets `write` append the body, then fills the
/// length in: one allocation per outgoing frame.
pub fn frame_with(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![0; LENGTH_PREFIX];
    write(&mut out);
    let len = i32::try_from(out.len() - LENGTH_PREFIX).unwrap_or(i32::MAX);
    out[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    out
}

/// The four-letter words ZooKeeper 3.8 answers on the client port.
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "hash", "isro", "mntr", "ruok", "srst",
    "srvr", "stat", "stmk", "wchc", "wchp", "wchs",
];

/// If the first four bytes a connection sent are a known four-letter word,
/// returns it. Only meaningful before the connect request.
pub fn four_letter_word(first: &[u8]) -> Option<&'static str> {
    let word = first.get(..LENGTH_PREFIX)?;
    FOUR_LETTER_WORDS
        .iter()
        .copied()
        .find(|w| w.as_bytes() == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_input_asks_for_more() {
        let s = FrameSplitter::default();
        assert_eq!(s.split(&[]).unwrap(), Split::Incomplete { needed: 4 });
        assert_eq!(s.split(&[0, 0]).unwrap(), Split::Incomplete { needed: 2 });
        assert_eq!(
            s.split(&[0, 0, 0, 3, 1]).unwrap(),
            Split::Incomplete { needed: 2 }
        );
        assert_eq!(
            s.split(&[0, 0, 0, 2, 1, 2, 9]).unwrap(),
            Split::Frame {
                body: &[1, 2],
                consumed: 6
            }
        );
        assert_eq!(
            s.split(&[0, 0, 0, 0]).unwrap(),
            Split::Frame {
                body: &[],
                consumed: 4
            }
        );
    }

    #[test]
    fn bad_lengths_are_refused_before_the_body() {
        let s = FrameSplitter::default();
        assert_eq!(
            s.split(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::NegativeLength(-1))
        );
        assert_eq!(
            s.split(&[0, 0x10, 0, 0]),
            Err(FrameError::TooLarge {
                len: 0x10_0000,
                max: DEFAULT_MAX_FRAME
            })
        );
        // Exactly jute.maxbuffer is allowed.
        assert_eq!(
            s.split(&[0, 0x0f, 0xff, 0xff]).unwrap(),
            Split::Incomplete { needed: 0xfffff }
        );
        assert_eq!(
            FrameSplitter::new(2).split(&[0, 0, 0, 3]),
            Err(FrameError::TooLarge { len: 3, max: 2 })
        );
    }

    #[test]
    fn byte_at_a_time() {
        let mut wire = encode_frame(b"hello");
        wire.extend(frame_with(|o| o.extend_from_slice(b"xy")));
        let mut fb = FrameBuffer::default();
        let mut frames = Vec::new();
        for b in wire {
            fb.extend(&[b]);
            while let Some(f) = fb.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames, vec![b"hello".to_vec(), b"xy".to_vec()]);
        assert!(fb.buffered().is_empty());
    }

    #[test]
    fn four_letter_words() {
        assert_eq!(four_letter_word(b"ruok"), Some("ruok"));
        assert_eq!(four_letter_word(b"srvr\n"), Some("srvr"));
        assert_eq!(four_letter_word(&[0, 0, 0, 45]), None);
        assert_eq!(four_letter_word(b"ru"), None);
    }
}
