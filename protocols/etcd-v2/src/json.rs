//! etcd v2's JSON shapes: the node object (`key`, `value` or `dir`, `nodes`,
//! `expiration`, `ttl`, `modifiedIndex`, `createdIndex`, in etcd's field order and with
//! its omissions) and the event (`action`, `node`, `prevNode`). Pure: no I/O.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord_kernel::types::V2Node;
use serde::Serialize;

/// A node as etcd v2 writes it; empty fields are left out as Go's `omitempty` does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeJson>,
    #[serde(rename = "modifiedIndex", skip_serializing_if = "is_zero")]
    pub modified_index: i64,
    #[serde(rename = "createdIndex", skip_serializing_if = "is_zero")]
    pub created_index: i64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// An event: what a write did, or what a get read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventJson {
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeJson>,
    #[serde(rename = "prevNode", skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeJson>,
}

impl EventJson {
    /// The body: the JSON object and a newline, as Go's encoder writes it.
    pub fn body(&self) -> String {
        let mut body = serde_json::to_string(self).unwrap_or_default();
        body.push('\n');
        body
    }
}

/// When a node with a TTL expires: seconds left (rounded up) and the instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub ttl: i64,
    pub expiration: String,
}

impl Expiry {
    /// An expiry `ttl` seconds after `now`.
    pub fn after(now: SystemTime, ttl: i64) -> Self {
        let at = now + Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        Expiry {
            ttl,
            expiration: rfc3339_nanos(at),
        }
    }
}

/// The TTL of each lease a listing shows (by lease id).
pub type Expiries = HashMap<i64, Expiry>;

/// A node's own fields (no children); the root has no key and no indexes.
pub fn node_json(node: &V2Node, expiries: &Expiries) -> NodeJson {
    let key = String::from_utf8_lossy(&node.kv.key).into_owned();
    if key == "/" {
        return NodeJson {
            dir: true,
            ..Default::default()
        };
    }
    let expiry = (node.kv.lease != 0)
        .then(|| expiries.get(&node.kv.lease))
        .flatten();
    NodeJson {
        key: Some(key),
        value: (!node.dir).then(|| String::from_utf8_lossy(&node.kv.value).into_owned()),
        dir: node.dir,
        expiration: expiry.map(|e| e.expiration.clone()),
        ttl: expiry.map_or(0, |e| e.ttl),
        nodes: Vec::new(),
        modified_index: node.kv.mod_revision,
        created_index: node.kv.create_revision,
    }
}

/// The parent path of a key (`/a/b` → `/a`, `/a` → `/`).
fn parent(key: &[u8]) -> &[u8] {
    match key.iter().rposition(|b| *b == b'/') {
        Some(0) | None => b"/",
        Some(cut) => &key[..cut],
    }
}

/// Whether a key is hidden from listings (its name starts with `_`).
fn hidden(key: &[u8]) -> bool {
    key.iter()
        .rposition(|b| *b == b'/')
        .is_some_and(|cut| key.get(cut + 1) == Some(&b'_'))
}

/// A directory with its listing: `descendants` (in key order) are its children, or all
/// its descendants for a recursive listing, which nests them. Hidden keys are left out.
pub fn listing(root: &V2Node, descendants: &[V2Node], expiries: &Expiries) -> NodeJson {
    let mut by_parent: HashMap<&[u8], Vec<&V2Node>> = HashMap::new();
    for node in descendants {
        if !hidden(&node.kv.key) {
            by_parent
                .entry(parent(&node.kv.key))
                .or_default()
                .push(node);
        }
    }
    fn build(
        node: &V2Node,
        by_parent: &HashMap<&[u8], Vec<&V2Node>>,
        expiries: &Expiries,
    ) -> NodeJson {
        let mut json = node_json(node, expiries);
        if let Some(children) = by_parent.get(node.kv.key.as_slice()) {
            json.nodes = children
                .iter()
                .map(|child| build(child, by_parent, expiries))
                .collect();
        }
        json
    }
    build(root, &by_parent, expiries)
}

/// Go's `time.RFC3339Nano` in UTC: trailing zeros of the fraction dropped.
pub fn rfc3339_nanos(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_kernel::types::KeyValue;

    fn node(key: &str, dir: bool, rev: i64) -> V2Node {
        V2Node {
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: if dir { Vec::new() } else { b"v".to_vec() },
                lease: 0,
            },
            dir,
        }
    }

    #[test]
    fn shapes_match_etcd_byte_for_byte() {
        let event = EventJson {
            action: "get",
            node: Some(listing(
                &node("/a", true, 6),
                &[
                    node("/a/b", true, 6),
                    node("/a/b/c", false, 6),
                    node("/a/_h", false, 7),
                ],
                &Expiries::new(),
            )),
            prev_node: None,
        };
        assert_eq!(
            event.body(),
            concat!(
                r#"{"action":"get","node":{"key":"/a","dir":true,"nodes":[{"key":"/a/b","dir":true,"#,
                r#""nodes":[{"key":"/a/b/c","value":"v","modifiedIndex":6,"createdIndex":6}],"#,
                r#""modifiedIndex":6,"createdIndex":6}],"modifiedIndex":6,"createdIndex":6}}"#,
                "\n"
            )
        );
        let root = EventJson {
            action: "get",
            node: Some(listing(&node("/", true, 0), &[], &Expiries::new())),
            prev_node: None,
        };
        assert_eq!(
            root.body(),
            "{\"action\":\"get\",\"node\":{\"dir\":true}}\n"
        );
    }

    #[test]
    fn expiry_fields_sit_between_value_and_indexes() {
        let mut leased = node("/ttl", false, 12);
        leased.kv.lease = 9;
        let at = UNIX_EPOCH + Duration::new(1_795_688_450, 547_681_000);
        let expiries = Expiries::from([(
            9,
            Expiry {
                ttl: 5,
                expiration: rfc3339_nanos(at),
            },
        )]);
        assert_eq!(
            serde_json::to_string(&node_json(&leased, &expiries)).unwrap(),
            r#"{"key":"/ttl","value":"v","expiration":"2026-11-26T10:20:50.547681Z","ttl":5,"modifiedIndex":12,"createdIndex":12}"#
        );
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
