//! Consul KV semantics over the etcd v3 kernel API: the config, a validated [`Op`] from
//! an HTTP request (all validation happens in [`parse_request`]), the kernel request
//! each op makes, and the Consul answer built from the kernel's reply.
//!
//! Mapping: Consul key `k` is kernel key `key_prefix + k`; `CreateIndex`/`ModifyIndex`
//! are the kernel's create/mod revisions; `X-Consul-Index` is the reply header's
//! revision. Non-zero flags live in a sidecar key [`FLAGS_PREFIX`]` + kernel key`,
//! written or deleted in the same Txn as the value and read in the same read-only Txn;
//! they count only while the sidecar's mod revision is the value's (a write by another
//! dialect, which knows no flags, leaves the key with flags 0).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use concord_plugin_abi::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse, WatchCreateRequest, compare, request_op, response_op,
};
use concord_plugin_abi::pb::{kernel_call, kernel_reply};
use serde::Serialize;

use crate::error::KvError;
use crate::http::Request;
use crate::query::{parse_duration, parse_target, parse_uint};

/// The sidecar prefix of flags keys: the flags of kernel key `K` are at this + `K`.
pub const FLAGS_PREFIX: &[u8] = b"\0consul-flags";

/// The KV API's path prefix.
const KV_PATH: &[u8] = b"/v1/kv/";

/// Consul's default and maximum blocking wait.
pub const DEFAULT_WAIT_MS: u64 = 5 * 60 * 1000;
pub const MAX_WAIT_MS: u64 = 10 * 60 * 1000;

/// The plugin's validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Prepended to every Consul key to make the kernel key.
    pub key_prefix: Vec<u8>,
    /// The largest value a PUT may store.
    pub max_value_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            key_prefix: b"/".to_vec(),
            max_value_bytes: 524_288,
        }
    }
}

/// Keys of the adapter section that belong to the host, not to this plugin.
const HOST_KEYS: &[&str] = &["listen", "tls", "enabled", "name"];

impl Config {
    /// Reads the adapter's config section (a JSON object; empty text is `{}`).
    pub fn from_json(text: &str) -> Result<Config, String> {
        let mut config = Config::default();
        if text.trim().is_empty() {
            return Ok(config);
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("consul: config is not JSON: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err("consul: config must be a JSON object".into());
        };
        for (key, value) in &map {
            match key.as_str() {
                "key_prefix" => {
                    let prefix = value
                        .as_str()
                        .ok_or("consul: key_prefix must be a string")?;
                    if prefix.as_bytes().starts_with(b"\0") {
                        return Err("consul: key_prefix must not start with a NUL byte".into());
                    }
                    config.key_prefix = prefix.as_bytes().to_vec();
                }
                "max_value_bytes" => {
                    config.max_value_bytes = value
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| *n > 0)
                        .ok_or("consul: max_value_bytes must be a positive integer")?;
                }
                key if HOST_KEYS.contains(&key) => {}
                key => {
                    return Err(format!(
                        "consul: unknown config key `{key}` (known: key_prefix, max_value_bytes)"
                    ));
                }
            }
        }
        Ok(config)
    }

    fn kernel_key(&self, consul_key: &[u8]) -> Vec<u8> {
        [&self.key_prefix[..], consul_key].concat()
    }

    /// The Consul key of a kernel key in the prefix (lossy for non-UTF-8 keys other
    /// dialects may have written).
    fn consul_key(&self, kernel_key: &[u8]) -> String {
        let key = kernel_key
            .strip_prefix(&self.key_prefix[..])
            .unwrap_or(kernel_key);
        String::from_utf8_lossy(key).into_owned()
    }

    /// Whether a kernel key from a range is a Consul key (not a flags sidecar).
    fn is_visible(&self, kernel_key: &[u8]) -> bool {
        kernel_key.starts_with(&self.key_prefix) && !kernel_key.starts_with(FLAGS_PREFIX)
    }
}

/// The flags sidecar key of a kernel key.
pub fn flags_key(kernel_key: &[u8]) -> Vec<u8> {
    [FLAGS_PREFIX, kernel_key].concat()
}

/// The etcd range `[key, range_end)` of every key starting with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.to_vec(), end);
        }
    }
    (prefix.to_vec(), vec![0])
}

/// What a GET returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetMode {
    /// The one key (`raw`: its value as the body).
    Entry { raw: bool },
    /// Every key with the prefix.
    Recurse { raw: bool },
    /// The key names with the prefix, rolled up at `separator` if not empty.
    Keys { separator: String },
}

/// A blocking query: answer once the range changed after `index`, or after `wait_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub index: u64,
    pub wait_ms: u64,
}

/// A validated KV request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Get {
        /// The kernel key, or the kernel prefix for recurse and keys.
        key: Vec<u8>,
        mode: GetMode,
        /// `?stale`: a serializable read.
        stale: bool,
        block: Option<Block>,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    },
    Delete {
        key: Vec<u8>,
        recurse: bool,
        cas: Option<u64>,
    },
}

/// An answer ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// The kernel revision the answer reflects (`X-Consul-Index`), if it came from one.
    pub revision: Option<i64>,
}

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";

impl Reply {
    fn json(status: u16, body: Vec<u8>, revision: i64) -> Reply {
        Reply {
            status,
            content_type: JSON,
            body,
            headers: Vec::new(),
            revision: Some(revision),
        }
    }

    /// The answer to an error.
    pub fn error(error: &KvError) -> Reply {
        let (status, body) = error.status_and_body();
        Reply {
            status,
            content_type: TEXT,
            body: body.into_bytes(),
            headers: error.headers(),
            revision: None,
        }
    }
}

fn parse_cas(query: &crate::query::Query) -> Result<Option<u64>, KvError> {
    query
        .get("cas")
        .map(|v| parse_uint(v).map_err(KvError::InvalidCas))
        .transpose()
}

/// A validated request: the op and how to render its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub op: Op,
    /// `?pretty`: indented JSON with a final newline, as Go's `json.MarshalIndent`.
    pub pretty: bool,
}

/// Validates a request. Path errors come first, then the method, then the
/// parameters, as Consul checks them.
pub fn parse_request(config: &Config, request: &Request) -> Result<Parsed, KvError> {
    let target = parse_target(&request.target)
        .map_err(|why| KvError::Http(crate::http::HttpError::Malformed(why)))?;
    let pretty = target.query.has("pretty");
    let op = parse_op(config, request, &target)?;
    Ok(Parsed { op, pretty })
}

fn parse_op(
    config: &Config,
    request: &Request,
    target: &crate::query::Target,
) -> Result<Op, KvError> {
    let consul_key = if target.path == KV_PATH[..KV_PATH.len() - 1] {
        &[][..]
    } else {
        target
            .path
            .strip_prefix(KV_PATH)
            .ok_or(KvError::PathNotFound)?
    };
    let key = config.kernel_key(consul_key);
    if key.first() == Some(&0) {
        // Only with an empty key_prefix: NUL-led kernel keys hold flags sidecars.
        return Err(KvError::ReservedKey);
    }
    let query = &target.query;
    match request.method.as_str() {
        "GET" => {
            let stale = query.has("stale");
            if stale && query.has("consistent") {
                return Err(KvError::ConflictingConsistency);
            }
            let wait_ms = match query.get("wait").filter(|w| !w.is_empty()) {
                None => DEFAULT_WAIT_MS,
                Some(wait) => {
                    let nanos = parse_duration(wait).ok_or(KvError::InvalidWait)?;
                    if nanos <= 0 {
                        DEFAULT_WAIT_MS
                    } else {
                        // Round up so a sub-millisecond wait still waits.
                        let ms = u64::try_from((nanos + 999_999) / 1_000_000).unwrap_or(u64::MAX);
                        ms.min(MAX_WAIT_MS)
                    }
                }
            };
            let index = match query.get("index").filter(|i| !i.is_empty()) {
                None => 0,
                Some(index) => parse_uint(index).map_err(|_| KvError::InvalidIndex)?,
            };
            let block = (index > 0).then_some(Block { index, wait_ms });
            let mode = if query.has("keys") {
                GetMode::Keys {
                    separator: query.get("separator").unwrap_or("").to_string(),
                }
            } else if query.has("recurse") {
                GetMode::Recurse {
                    raw: query.has("raw"),
                }
            } else {
                if key.is_empty() {
                    // Only with an empty key_prefix: the kernel has no empty key.
                    return Err(KvError::MissingKey);
                }
                GetMode::Entry {
                    raw: query.has("raw"),
                }
            };
            Ok(Op::Get {
                key,
                mode,
                stale,
                block,
            })
        }
        "PUT" => {
            if consul_key.is_empty() {
                return Err(KvError::MissingKey);
            }
            if query.has("acquire") || query.has("release") {
                return Err(KvError::SessionsUnsupported);
            }
            let flags = query
                .get("flags")
                .map(|v| parse_uint(v).map_err(KvError::InvalidFlags))
                .transpose()?
                .unwrap_or(0);
            let cas = parse_cas(query)?;
            if request.body_too_large || request.body.len() > config.max_value_bytes {
                return Err(KvError::ValueTooLarge(config.max_value_bytes));
            }
            Ok(Op::Put {
                key,
                value: request.body.clone(),
                flags,
                cas,
            })
        }
        "DELETE" => {
            let recurse = query.has("recurse");
            if !recurse && consul_key.is_empty() {
                return Err(KvError::MissingKey);
            }
            let cas = parse_cas(query)?;
            // As in Consul, `?cas` turns a recursive delete into a check-and-set
            // delete of the one key.
            if cas.is_some() && consul_key.is_empty() {
                return Err(KvError::MissingKey);
            }
            Ok(Op::Delete {
                key,
                recurse: recurse && cas.is_none(),
                cas,
            })
        }
        other => Err(KvError::MethodNotAllowed(other.to_string())),
    }
}

fn range(key: Vec<u8>, range_end: Vec<u8>, serializable: bool) -> RangeRequest {
    RangeRequest {
        key,
        range_end,
        serializable,
        ..RangeRequest::default()
    }
}

fn op_range(request: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(request)),
    }
}

fn op_put(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..PutRequest::default()
        })),
    }
}

fn op_delete(key: Vec<u8>, range_end: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key,
                range_end,
                prev_kv: false,
            },
        )),
    }
}

fn compare_mod(key: Vec<u8>, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
    }
}

fn compare_absent(key: Vec<u8>) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
    }
}

/// A Consul index as a kernel revision (an index past `i64::MAX` matches no key).
fn revision_of(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

impl Op {
    /// The blocking part of a GET, if any.
    pub fn block(&self) -> Option<Block> {
        match self {
            Op::Get { block, .. } => *block,
            _ => None,
        }
    }

    /// The watch a blocking GET waits on: its key (or prefix) from `index + 1`. From the
    /// past it replays at once; from the future it waits for the next change.
    pub fn watch_request(&self, index: u64) -> kernel_call::Request {
        let (key, range_end) = match self {
            Op::Get {
                key,
                mode: GetMode::Entry { .. },
                ..
            } => (key.clone(), Vec::new()),
            Op::Get { key, .. } | Op::Put { key, .. } | Op::Delete { key, .. } => prefix_range(key),
        };
        kernel_call::Request::Watch(WatchCreateRequest {
            key,
            range_end,
            start_revision: revision_of(index.saturating_add(1)),
            ..WatchCreateRequest::default()
        })
    }

    /// The kernel call that carries the op out.
    pub fn request(&self) -> kernel_call::Request {
        match self {
            Op::Get {
                key, mode, stale, ..
            } => match mode {
                GetMode::Entry { .. } => kernel_call::Request::Txn(TxnRequest {
                    compare: Vec::new(),
                    success: vec![
                        op_range(range(key.clone(), Vec::new(), *stale)),
                        op_range(range(flags_key(key), Vec::new(), *stale)),
                    ],
                    failure: Vec::new(),
                }),
                GetMode::Recurse { .. } => {
                    let (start, end) = prefix_range(key);
                    let (flags_start, flags_end) = prefix_range(&flags_key(key));
                    kernel_call::Request::Txn(TxnRequest {
                        compare: Vec::new(),
                        success: vec![
                            op_range(range(start, end, *stale)),
                            op_range(range(flags_start, flags_end, *stale)),
                        ],
                        failure: Vec::new(),
                    })
                }
                GetMode::Keys { .. } => {
                    let (start, end) = prefix_range(key);
                    kernel_call::Request::Range(RangeRequest {
                        keys_only: true,
                        ..range(start, end, *stale)
                    })
                }
            },
            Op::Put {
                key,
                value,
                flags,
                cas,
            } => {
                let compare = match cas {
                    None => Vec::new(),
                    Some(0) => vec![compare_absent(key.clone())],
                    Some(index) => vec![compare_mod(key.clone(), revision_of(*index))],
                };
                let flags_op = if *flags == 0 {
                    op_delete(flags_key(key), Vec::new())
                } else {
                    op_put(flags_key(key), flags.to_string().into_bytes())
                };
                kernel_call::Request::Txn(TxnRequest {
                    compare,
                    success: vec![op_put(key.clone(), value.clone()), flags_op],
                    failure: Vec::new(),
                })
            }
            Op::Delete {
                key, recurse: true, ..
            } => {
                let (start, end) = prefix_range(key);
                let (flags_start, flags_end) = prefix_range(&flags_key(key));
                kernel_call::Request::Txn(TxnRequest {
                    compare: Vec::new(),
                    success: vec![op_delete(start, end), op_delete(flags_start, flags_end)],
                    failure: Vec::new(),
                })
            }
            Op::Delete {
                key,
                recurse: false,
                cas,
            } => kernel_call::Request::Txn(TxnRequest {
                compare: cas
                    .map(|index| compare_mod(key.clone(), revision_of(index)))
                    .into_iter()
                    .collect(),
                success: vec![
                    op_delete(key.clone(), Vec::new()),
                    op_delete(flags_key(key), Vec::new()),
                ],
                // A failed check tells "absent" (Consul answers true) from "changed".
                failure: vec![op_range(RangeRequest {
                    count_only: true,
                    ..range(key.clone(), Vec::new(), false)
                })],
            }),
        }
    }

    /// The Consul answer to the kernel's reply to [`Op::request`].
    pub fn answer(
        &self,
        config: &Config,
        reply: kernel_reply::Reply,
        pretty: bool,
    ) -> Result<Reply, KvError> {
        if let kernel_reply::Reply::Error(e) = reply {
            return Err(KvError::Kernel {
                code: e.code,
                message: e.message,
            });
        }
        match self {
            Op::Get {
                mode: GetMode::Keys { separator },
                key,
                ..
            } => {
                let kernel_reply::Reply::Range(range) = reply else {
                    return Err(KvError::UnexpectedReply("not a range"));
                };
                let revision = header_revision(range.header.as_ref());
                let prefix = config.consul_key(key);
                let mut keys: Vec<String> = Vec::new();
                for kv in &range.kvs {
                    if !config.is_visible(&kv.key) {
                        continue;
                    }
                    let name = config.consul_key(&kv.key);
                    let rolled = match name.get(prefix.len()..) {
                        Some(after) if !separator.is_empty() => after
                            .find(separator.as_str())
                            .map(|i| name[..prefix.len() + i + separator.len()].to_string()),
                        _ => None,
                    };
                    match rolled {
                        Some(rolled) if keys.last() == Some(&rolled) => {}
                        Some(rolled) => keys.push(rolled),
                        None => keys.push(name),
                    }
                }
                // As Consul: the root lists as `[]`, any other empty prefix is a 404.
                if keys.is_empty() && !prefix.is_empty() {
                    return Ok(Reply::json(404, Vec::new(), revision));
                }
                Ok(Reply::json(200, to_json(&keys, pretty), revision))
            }
            Op::Get { mode, .. } => {
                let kernel_reply::Reply::Txn(txn) = reply else {
                    return Err(KvError::UnexpectedReply("not a txn"));
                };
                let revision = header_revision(txn.header.as_ref());
                let (values, flags) = two_ranges(txn)?;
                let entries = entries(config, &values, &flags);
                let Some(first) = entries.first() else {
                    return Ok(Reply::json(404, Vec::new(), revision));
                };
                match mode {
                    GetMode::Entry { raw: true } | GetMode::Recurse { raw: true } => Ok(Reply {
                        content_type: TEXT,
                        body: first.1.clone(),
                        ..Reply::json(200, Vec::new(), revision)
                    }),
                    _ => {
                        let json: Vec<&Entry> = entries.iter().map(|(e, _)| e).collect();
                        Ok(Reply::json(200, to_json(&json, pretty), revision))
                    }
                }
            }
            Op::Put { .. } | Op::Delete { .. } => {
                let kernel_reply::Reply::Txn(txn) = reply else {
                    return Err(KvError::UnexpectedReply("not a txn"));
                };
                let revision = header_revision(txn.header.as_ref());
                let done = txn.succeeded || failed_on_absent_key(&txn);
                Ok(Reply::json(200, to_json(&done, pretty), revision))
            }
        }
    }
}

/// A DELETE ?cas on a key that is not there succeeds, as in Consul.
fn failed_on_absent_key(txn: &TxnResponse) -> bool {
    matches!(
        txn.responses.first().and_then(|r| r.response.as_ref()),
        Some(response_op::Response::ResponseRange(r)) if r.count == 0 && r.kvs.is_empty()
    )
}

fn header_revision(header: Option<&concord_plugin_abi::pb::etcdserverpb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

fn two_ranges(txn: TxnResponse) -> Result<(RangeResponse, RangeResponse), KvError> {
    let mut ranges = txn.responses.into_iter().map(|r| match r.response {
        Some(response_op::Response::ResponseRange(range)) => Ok(range),
        _ => Err(KvError::UnexpectedReply("txn response is not a range")),
    });
    match (ranges.next(), ranges.next()) {
        (Some(values), Some(flags)) => Ok((values?, flags?)),
        _ => Err(KvError::UnexpectedReply("txn lacks its two ranges")),
    }
}

/// Consul's `DirEntry`, in Consul's field order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    lock_index: u64,
    key: String,
    flags: u64,
    /// Base64; `null` for an empty value (the kernel does not tell nil from empty).
    value: Option<String>,
    create_index: i64,
    modify_index: i64,
}

/// The visible entries of a value range with their flags, and each raw value.
fn entries(
    config: &Config,
    values: &RangeResponse,
    flags: &RangeResponse,
) -> Vec<(Entry, Vec<u8>)> {
    values
        .kvs
        .iter()
        .filter(|kv| config.is_visible(&kv.key))
        .map(|kv| {
            let flags_key = flags_key(&kv.key);
            // Value and sidecar are written in one Txn, at one revision: a sidecar
            // older than the value is left from before another dialect rewrote the
            // key (without flags, so 0).
            let flags = flags
                .kvs
                .iter()
                .find(|f| f.key == flags_key && f.mod_revision == kv.mod_revision)
                .and_then(|f| std::str::from_utf8(&f.value).ok()?.parse().ok())
                .unwrap_or(0);
            let entry = Entry {
                lock_index: 0,
                key: config.consul_key(&kv.key),
                flags,
                value: (!kv.value.is_empty()).then(|| STANDARD.encode(&kv.value)),
                create_index: kv.create_revision,
                modify_index: kv.mod_revision,
            };
            (entry, kv.value.clone())
        })
        .collect()
}

/// JSON as Consul's Go encoder writes it: compact, or (`pretty`) indented by four
/// spaces with a final newline; `<`, `>`, `&`, U+2028 and U+2029 escaped as `\uXXXX`.
fn to_json<T: Serialize>(value: &T, pretty: bool) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing plain structs of strings and integers into a Vec can not fail.
    let _ = if pretty {
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, formatter,
        ))
    } else {
        value.serialize(&mut serde_json::Serializer::new(&mut out))
    };
    if pretty {
        out.push(b'\n');
    }
    go_escape(out)
}

/// Go's HTML-safe escapes. Those bytes only occur inside JSON strings here, never in
/// the structure, so a byte-level pass is exact.
fn go_escape(json: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut i = 0;
    while i < json.len() {
        match (json[i], json.get(i + 1), json.get(i + 2)) {
            (b'<', ..) => out.extend_from_slice(b"\\u003c"),
            (b'>', ..) => out.extend_from_slice(b"\\u003e"),
            (b'&', ..) => out.extend_from_slice(b"\\u0026"),
            (0xe2, Some(0x80), Some(0xa8)) => {
                out.extend_from_slice(b"\\u2028");
                i += 2;
            }
            (0xe2, Some(0x80), Some(0xa9)) => {
                out.extend_from_slice(b"\\u2029");
                i += 2;
            }
            (b, ..) => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            minor_version: 1,
            headers: Vec::new(),
            body: body.to_vec(),
            body_too_large: false,
        }
    }

    fn parse(method: &str, target: &str) -> Result<Op, KvError> {
        parse_request(&Config::default(), &request(method, target, b"")).map(|p| p.op)
    }

    #[test]
    fn config_defaults_and_refusals() {
        assert_eq!(Config::from_json("").unwrap(), Config::default());
        assert_eq!(Config::from_json("{}").unwrap(), Config::default());
        let c = Config::from_json(
            r#"{"listen":"0.0.0.0:8500","tls":null,"enabled":true,"name":"consul","key_prefix":"/consul/","max_value_bytes":10}"#,
        )
        .unwrap();
        assert_eq!(c.key_prefix, b"/consul/");
        assert_eq!(c.max_value_bytes, 10);
        let e = Config::from_json(r#"{"key_prefx":"/"}"#).unwrap_err();
        assert!(e.contains("unknown config key `key_prefx`"), "{e}");
        assert!(Config::from_json(r#"{"key_prefix":1}"#).is_err());
        assert!(Config::from_json(r#"{"max_value_bytes":0}"#).is_err());
        assert!(Config::from_json(r#"{"max_value_bytes":-1}"#).is_err());
        assert!(Config::from_json("[]").is_err());
        assert!(Config::from_json("{").is_err());
    }

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range(b"/a"), (b"/a".to_vec(), b"/b".to_vec()));
        assert_eq!(prefix_range(b"a\xff"), (b"a\xff".to_vec(), b"b".to_vec()));
        assert_eq!(prefix_range(b"\xff"), (b"\xff".to_vec(), vec![0]));
        assert_eq!(prefix_range(b""), (vec![0], vec![0]));
    }

    #[test]
    fn parses_gets() {
        assert_eq!(
            parse("GET", "/v1/kv/app/db?stale").unwrap(),
            Op::Get {
                key: b"/app/db".to_vec(),
                mode: GetMode::Entry { raw: false },
                stale: true,
                block: None
            }
        );
        assert_eq!(
            parse("GET", "/v1/kv/?recurse&index=7&wait=10s").unwrap(),
            Op::Get {
                key: b"/".to_vec(),
                mode: GetMode::Recurse { raw: false },
                stale: false,
                block: Some(Block {
                    index: 7,
                    wait_ms: 10_000
                })
            }
        );
        let Op::Get { block, mode, .. } =
            parse("GET", "/v1/kv/a?keys&separator=/&index=1&wait=1h").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            block,
            Some(Block {
                index: 1,
                wait_ms: MAX_WAIT_MS
            })
        );
        assert_eq!(
            mode,
            GetMode::Keys {
                separator: "/".into()
            }
        );
        let Op::Get { block, .. } = parse("GET", "/v1/kv/a?index=1").unwrap() else {
            panic!()
        };
        assert_eq!(
            block,
            Some(Block {
                index: 1,
                wait_ms: DEFAULT_WAIT_MS
            })
        );
        let Op::Get { block, .. } = parse("GET", "/v1/kv/a?index=0&wait=1s").unwrap() else {
            panic!()
        };
        assert_eq!(block, None);
    }

    #[test]
    fn refuses_bad_requests() {
        assert_eq!(parse("GET", "/v1/kv/a?index=x"), Err(KvError::InvalidIndex));
        assert_eq!(
            parse("GET", "/v1/kv/a?index=-1"),
            Err(KvError::InvalidIndex)
        );
        assert_eq!(
            parse("GET", "/v1/kv/a?index=1&wait=10"),
            Err(KvError::InvalidWait)
        );
        assert_eq!(
            parse("GET", "/v1/kv/a?stale&consistent"),
            Err(KvError::ConflictingConsistency)
        );
        assert_eq!(
            parse("GET", "/v1/status/leader"),
            Err(KvError::PathNotFound)
        );
        assert_eq!(
            parse("POST", "/v1/kv/a"),
            Err(KvError::MethodNotAllowed("POST".into()))
        );
        assert_eq!(parse("PUT", "/v1/kv/"), Err(KvError::MissingKey));
        assert_eq!(parse("DELETE", "/v1/kv/"), Err(KvError::MissingKey));
        assert_eq!(
            parse("PUT", "/v1/kv/a?acquire=s"),
            Err(KvError::SessionsUnsupported)
        );
        assert_eq!(
            parse("PUT", "/v1/kv/a?release=s"),
            Err(KvError::SessionsUnsupported)
        );
        assert!(matches!(
            parse("PUT", "/v1/kv/a?flags=x"),
            Err(KvError::InvalidFlags(_))
        ));
        assert!(matches!(
            parse("PUT", "/v1/kv/a?cas=-1"),
            Err(KvError::InvalidCas(_))
        ));
        assert!(matches!(
            parse("DELETE", "/v1/kv/a?cas=z"),
            Err(KvError::InvalidCas(_))
        ));
        let config = Config {
            max_value_bytes: 3,
            ..Config::default()
        };
        assert_eq!(
            parse_request(&config, &request("PUT", "/v1/kv/a", b"four")),
            Err(KvError::ValueTooLarge(3))
        );
        let config = Config {
            key_prefix: Vec::new(),
            ..Config::default()
        };
        assert_eq!(
            parse_request(&config, &request("GET", "/v1/kv/%00consul-flags/a", b"")),
            Err(KvError::ReservedKey)
        );
    }

    #[test]
    fn delete_recurse_with_cas_is_a_cas_delete() {
        assert_eq!(
            parse("DELETE", "/v1/kv/a?recurse&cas=3").unwrap(),
            Op::Delete {
                key: b"/a".to_vec(),
                recurse: false,
                cas: Some(3)
            }
        );
        assert_eq!(
            parse("DELETE", "/v1/kv/?recurse").unwrap(),
            Op::Delete {
                key: b"/".to_vec(),
                recurse: true,
                cas: None
            }
        );
    }

    #[test]
    fn json_like_go() {
        assert_eq!(to_json(&true, false), b"true");
        assert_eq!(to_json(&true, true), b"true\n");
        assert_eq!(to_json(&Vec::<String>::new(), true), b"[]\n");
        assert_eq!(
            to_json(&vec!["a", "b"], true),
            b"[\n    \"a\",\n    \"b\"\n]\n"
        );
        assert_eq!(
            to_json(&vec!["<a&b>\u{2028}\u{2029}é"], false),
            "[\"\\u003ca\\u0026b\\u003e\\u2028\\u2029é\"]".as_bytes()
        );
        assert_eq!(parse("GET", "/v1/kv/a?pretty").map(|_| ()), Ok(()));
        assert!(
            parse_request(&Config::default(), &request("GET", "/v1/kv/a?pretty", b""))
                .unwrap()
                .pretty
        );
    }

    #[test]
    fn empty_prefix_hides_flag_sidecars() {
        let config = Config {
            key_prefix: Vec::new(),
            ..Config::default()
        };
        assert!(config.is_visible(b"a"));
        assert!(!config.is_visible(&flags_key(b"a")));
    }
}
