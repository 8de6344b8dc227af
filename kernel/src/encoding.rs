//! Byte layouts of everything the state machine stores in RocksDB. Pure functions.
//!
//! * `kv_latest`: raw key → [`StoredKv`] (the current version of each live key).
//! * `kv_keyrev`: escaped key ‖ revision (BE) → tag ‖ [`StoredKv`]: every version of every
//!   key, put or delete, until compaction. Escaping keeps "a" before "a\0" before "ab".
//! * `kv_hist`: revision (BE) ‖ sub-revision (BE) → raw key: the order of changes, for
//!   compaction and watch catch-up.

use crate::types::{KeyValue, Revision};

/// Escape byte inside an encoded key, and the two bytes that may follow it.
const ESC: u8 = 0x00;
const ESC_LITERAL_ZERO: u8 = 0xFF;
const ESC_END: u8 = 0x01;

/// Order-preserving, self-delimiting encoding of an arbitrary byte key.
pub fn escape_key(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == ESC {
            out.push(ESC_LITERAL_ZERO);
        }
    }
    out.push(ESC);
    out.push(ESC_END);
}

/// Inverse of [`escape_key`]: the key and the bytes after it, or `None` if malformed.
pub fn unescape_key(buf: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(buf.len());
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        if b == ESC {
            match *buf.get(i + 1)? {
                ESC_LITERAL_ZERO => key.push(ESC),
                ESC_END => return Some((key, &buf[i + 2..])),
                _ => return None,
            }
            i += 2;
        } else {
            key.push(b);
            i += 1;
        }
    }
    None
}

pub fn keyrev_key(key: &[u8], revision: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    escape_key(key, &mut out);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

/// Splits a `kv_keyrev` key into (key, revision).
pub fn split_keyrev_key(buf: &[u8]) -> Option<(Vec<u8>, Revision)> {
    let (key, rest) = unescape_key(buf)?;
    let rev: [u8; 8] = rest.try_into().ok()?;
    Some((key, Revision::from_be_bytes(rev)))
}

pub fn hist_key(revision: Revision, sub: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&revision.to_be_bytes());
    out[8..].copy_from_slice(&sub.to_be_bytes());
    out
}

pub fn split_hist_key(buf: &[u8]) -> Option<(Revision, u32)> {
    let rev: [u8; 8] = buf.get(..8)?.try_into().ok()?;
    let sub: [u8; 4] = buf.get(8..12)?.try_into().ok()?;
    Some((Revision::from_be_bytes(rev), u32::from_be_bytes(sub)))
}

/// A key's metadata and value as stored (the key itself is the RocksDB key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredKv {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
}

const STORED_KV_HEADER: usize = 32;

impl StoredKv {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_KV_HEADER + self.value.len());
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.mod_revision.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(&self.value);
    }

    pub fn decode(buf: &[u8]) -> Option<StoredKv> {
        let field = |i: usize| -> Option<i64> {
            Some(i64::from_be_bytes(
                buf.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(StoredKv {
            create_revision: field(0)?,
            mod_revision: field(1)?,
            version: field(2)?,
            lease: field(3)?,
            value: buf.get(STORED_KV_HEADER..)?.to_vec(),
        })
    }

    pub fn into_key_value(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value,
            lease: self.lease,
        }
    }
}

/// One entry of a key's history: what happened to it at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEntry {
    Put(StoredKv),
    /// A delete at this revision (the revision is the `kv_keyrev` key's suffix).
    Delete,
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

impl HistoryEntry {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            HistoryEntry::Put(kv) => {
                let mut out = Vec::with_capacity(1 + STORED_KV_HEADER + kv.value.len());
                out.push(TAG_PUT);
                kv.encode_into(&mut out);
                out
            }
            HistoryEntry::Delete => vec![TAG_DELETE],
        }
    }

    pub fn decode(buf: &[u8]) -> Option<HistoryEntry> {
        match buf.split_first()? {
            (&TAG_PUT, rest) => StoredKv::decode(rest).map(HistoryEntry::Put),
            (&TAG_DELETE, _) => Some(HistoryEntry::Delete),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_sort_like_raw_keys() {
        let mut keys: Vec<&[u8]> = vec![b"ab", b"a\0", b"a", b"", b"\0", b"a\0\0", b"b", b"a\xff"];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(|k| keyrev_key(k, 7)).collect();
        keys.sort();
        encoded.sort();
        let decoded: Vec<Vec<u8>> = encoded
            .iter()
            .map(|e| split_keyrev_key(e).map(|(k, _)| k).unwrap_or_default())
            .collect();
        assert_eq!(decoded, keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
    }

    #[test]
    fn keyrev_round_trip_orders_revisions_within_a_key() {
        let a = keyrev_key(b"k\0x", 2);
        let b = keyrev_key(b"k\0x", 10);
        assert!(a < b);
        assert_eq!(split_keyrev_key(&b), Some((b"k\0x".to_vec(), 10)));
        assert_eq!(split_keyrev_key(b"k\0\x05"), None);
    }

    #[test]
    fn records_round_trip() {
        let kv = StoredKv {
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease: 77,
            value: b"hello".to_vec(),
        };
        assert_eq!(StoredKv::decode(&kv.encode()), Some(kv.clone()));
        let put = HistoryEntry::Put(kv);
        assert_eq!(HistoryEntry::decode(&put.encode()), Some(put));
        assert_eq!(
            HistoryEntry::decode(&HistoryEntry::Delete.encode()),
            Some(HistoryEntry::Delete)
        );
        assert_eq!(HistoryEntry::decode(&[9]), None);
        assert_eq!(split_hist_key(&hist_key(5, 2)), Some((5, 2)));
    }
}
