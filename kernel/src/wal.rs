//! The Raft log's entries on disk: segment files written in place.
//!
//! A segment is a file of [`SEGMENT_BYTES`] filled with zeros and made durable before any
//! entry goes into it, named after the index of its first entry. Entries are written as
//! records over those zeros, so the fsync that makes an append durable carries only the
//! new bytes: the file's size and block map never change (an appended file also needs
//! its inode written at every fsync; measured on this project's machine, 246 µs against
//! 153 µs for an 8 KiB write). A record that does not fit starts the next segment.
//!
//! Record layout (little-endian): payload length `u32`, CRC-32C of index and payload
//! `u32`, index `u64`, then the payload. A length of zero is the end of the written part.
//! This module owns the format (pure encoding and parsing, unit-tested) and the files
//! (spare segments, directory listing, syncs); `log_store.rs` owns what is in the log.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of a segment file, zero-filled before use.
pub(crate) const SEGMENT_BYTES: u64 = 16 << 20;
/// Bytes before a record's payload: length, checksum, index.
pub(crate) const RECORD_HEADER: usize = 16;
const SEGMENT_SUFFIX: &str = ".wal";
const SPARE_NAME: &str = "spare.tmp";
/// Zeros written per call while filling a spare segment.
const FILL_CHUNK: usize = 1 << 20;

/// The Castagnoli polynomial, bit-reflected (CRC-32C shifts right).
const CASTAGNOLI_REFLECTED: u32 = 0x82F6_3B78;

/// CRC-32C (Castagnoli) lookup tables for slicing by 8: `TABLES[0]` is the classic
/// byte-at-a-time table, `TABLES[k][b]` the register after byte `b` and then `k` zero
/// bytes, so eight input bytes take eight independent lookups instead of a chain of
/// eight (the byte-wise loop took 2.4% of the server's CPU under the `bench` Put load).
const CRC32C_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CASTAGNOLI_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[k - 1][byte];
            tables[k][byte] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
};

/// Runs the CRC-32C register `crc` (not yet inverted) over `data`, so that a checksum
/// can cover several slices without copying them together.
fn crc32c_extend(mut crc: u32, data: &[u8]) -> u32 {
    let t = &CRC32C_TABLES;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let low = crc ^ u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        crc = t[7][(low & 0xFF) as usize]
            ^ t[6][((low >> 8) & 0xFF) as usize]
            ^ t[5][((low >> 16) & 0xFF) as usize]
            ^ t[4][(low >> 24) as usize]
            ^ t[3][usize::from(chunk[4])]
            ^ t[2][usize::from(chunk[5])]
            ^ t[1][usize::from(chunk[6])]
            ^ t[0][usize::from(chunk[7])];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// A record's checksum: CRC-32C of its index and payload.
fn record_checksum(index: u64, payload: &[u8]) -> u32 {
    !crc32c_extend(crc32c_extend(!0, &index.to_le_bytes()), payload)
}

/// Appends one record to `buf`. Payloads are postcard-encoded entries, far below 4 GiB
/// (requests are bounded by `limits.max_request_bytes`).
pub(crate) fn encode_record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len > 0)
        .ok_or_else(|| io::Error::other("log entry of an unsupported size"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_checksum(index, payload).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// What lies at a position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A whole record with a valid checksum; the next one starts at `next`.
    Record {
        index: u64,
        payload: &'a [u8],
        next: usize,
    },
    /// Zeros: nothing was written here.
    End,
    /// Anything else: a write cut short by a crash, or damage.
    Invalid,
}

/// Parses the record at `pos` of `bytes`.
pub(crate) fn parse_record(bytes: &[u8], pos: usize) -> Parsed<'_> {
    let Some(header) = bytes.get(pos..pos + RECORD_HEADER) else {
        return if bytes
            .get(pos..)
            .is_some_and(|rest| rest.iter().all(|b| *b == 0))
        {
            Parsed::End
        } else {
            Parsed::Invalid
        };
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let len = word(0) as usize;
    let checksum = word(4);
    let mut index_bytes = [0u8; 8];
    index_bytes.copy_from_slice(&header[8..16]);
    let index = u64::from_le_bytes(index_bytes);
    if len == 0 {
        return if checksum == 0 && index == 0 {
            Parsed::End
        } else {
            Parsed::Invalid
        };
    }
    let start = pos + RECORD_HEADER;
    match bytes.get(start..start + len) {
        Some(payload) if record_checksum(index, payload) == checksum => Parsed::Record {
            index,
            payload,
            next: start + len,
        },
        _ => Parsed::Invalid,
    }
}

/// The path of the segment whose first entry has `first_index`.
pub(crate) fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}{SEGMENT_SUFFIX}"))
}

/// The segments in `dir` as (first index, path), in index order. A spare segment left by
/// an earlier run is removed.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if name == SPARE_NAME {
            std::fs::remove_file(&path)?;
        } else if let Some(first) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|digits| digits.parse::<u64>().ok())
        {
            segments.push((first, path));
        }
    }
    segments.sort_by_key(|(first, _)| *first);
    Ok(segments)
}

/// Opens an existing segment for reading and writing in place.
pub(crate) fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Makes a zero-filled, durable spare segment in `dir` (to be renamed by [`take_spare`]).
pub(crate) fn prepare_spare(dir: &Path) -> io::Result<File> {
    let path = dir.join(SPARE_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let zeros = vec![0u8; FILL_CHUNK];
    let mut written = 0u64;
    while written < SEGMENT_BYTES {
        file.write_all(&zeros)?;
        written += FILL_CHUNK as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Gives the prepared spare its segment name and makes the name durable.
pub(crate) fn take_spare(dir: &Path, first_index: u64) -> io::Result<PathBuf> {
    let path = segment_path(dir, first_index);
    std::fs::rename(dir.join(SPARE_NAME), &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Makes the directory's entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Overwrites `[from, to)` of `file` with zeros (not synced).
pub(crate) fn zero_range(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; FILL_CHUNK];
    let mut at = from;
    while at < to {
        let n = (to - at).min(FILL_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc32c(data: &[u8]) -> u32 {
        !crc32c_extend(!0, data)
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// The bit-at-a-time definition, against which the sliced tables are checked.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ CASTAGNOLI_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn sliced_crc32c_equals_the_bitwise_definition_at_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for len in 0..data.len() {
            let expected = crc32c_bitwise(&data[..len]);
            assert_eq!(crc32c(&data[..len]), expected, "length {len}");
            for split in [0, 1, 3, 8, 13].into_iter().filter(|s| *s <= len) {
                let (head, tail) = data[..len].split_at(split);
                let joined = !crc32c_extend(crc32c_extend(!0, head), tail);
                assert_eq!(joined, expected, "length {len} split at {split}");
            }
        }
    }

    #[test]
    fn records_round_trip_and_end_at_zeros() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 7, b"seven").unwrap();
        encode_record(&mut bytes, 8, b"eight!").unwrap();
        let second = bytes.len() - RECORD_HEADER - 6;
        bytes.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            parse_record(&bytes, 0),
            Parsed::Record {
                index: 7,
                payload: b"seven",
                next: second
            }
        );
        let Parsed::Record {
            index,
            payload,
            next,
        } = parse_record(&bytes, second)
        else {
            panic!("second record unreadable");
        };
        assert_eq!((index, payload), (8, &b"eight!"[..]));
        assert_eq!(parse_record(&bytes, next), Parsed::End);
        // The end of the file, whole or within a header, is the end too.
        assert_eq!(parse_record(&bytes, bytes.len()), Parsed::End);
        assert_eq!(parse_record(&bytes, bytes.len() - 3), Parsed::End);
    }

    #[test]
    fn torn_or_damaged_records_are_invalid() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 3, b"payload").unwrap();
        let whole = bytes.clone();
        // Cut short: the payload's last bytes never reached the disk.
        let mut torn = whole[..whole.len() - 2].to_vec();
        torn.extend_from_slice(&[0, 0]);
        assert_eq!(parse_record(&torn, 0), Parsed::Invalid);
        assert_eq!(parse_record(&whole[..whole.len() - 2], 0), Parsed::Invalid);
        // A flipped bit in the payload, in the index, or a stray byte after the end.
        let mut flipped = whole.clone();
        flipped[RECORD_HEADER + 1] ^= 0x10;
        assert_eq!(parse_record(&flipped, 0), Parsed::Invalid);
        let mut other_index = whole.clone();
        other_index[8] ^= 1;
        assert_eq!(parse_record(&other_index, 0), Parsed::Invalid);
        let mut header_only = vec![0u8; RECORD_HEADER];
        header_only[9] = 1;
        assert_eq!(parse_record(&header_only, 0), Parsed::Invalid);
        assert_eq!(parse_record(&[0, 0, 1], 0), Parsed::Invalid);
    }

    #[test]
    fn empty_payloads_are_refused() {
        assert!(encode_record(&mut Vec::new(), 1, b"").is_err());
    }

    #[test]
    fn segments_are_listed_in_index_order_and_spares_removed() {
        let dir = tempfile::tempdir().unwrap();
        for first in [120u64, 9, 1000] {
            File::create(segment_path(dir.path(), first)).unwrap();
        }
        File::create(dir.path().join(SPARE_NAME)).unwrap();
        File::create(dir.path().join("notes.txt")).unwrap();
        let listed: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(first, _)| first)
            .collect();
        assert_eq!(listed, [9, 120, 1000]);
        assert!(!dir.path().join(SPARE_NAME).exists());
    }

    #[test]
    fn a_spare_is_zero_filled_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let file = prepare_spare(dir.path()).unwrap();
        assert_eq!(file.metadata().unwrap().len(), SEGMENT_BYTES);
        let path = take_spare(dir.path(), 42).unwrap();
        assert_eq!(path, segment_path(dir.path(), 42));
        let mut head = [1u8; 64];
        file.read_exact_at(&mut head, SEGMENT_BYTES - 64).unwrap();
        assert!(head.iter().all(|b| *b == 0));
    }
}
