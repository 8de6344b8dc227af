//! Normalising etcdctl output so that two servers' transcripts can be compared.
//!
//! Only what legitimately differs between two correct servers is replaced by a
//! placeholder: ports (in endpoints and URLs), cluster and member ids, Raft terms and
//! indexes, version strings, database sizes, and the client library's log timestamps and
//! connection ids. Revisions, keys, values, counts, error messages and gRPC codes are
//! left alone: both servers start empty, so those must match exactly.
//!
//! JSON lines (`-w json` output, the client's log lines) are parsed, normalised field by
//! field and pretty-printed one field per line so that a difference shows as one line.

use anyhow::{Context, Result};
use regex::{Captures, Regex};
use serde_json::Value;

/// JSON fields that carry ids, terms, indexes or sizes, wherever they occur.
const JSON_FIELDS: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    "leader",
    "dbSize",
    "dbSizeInUse",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "ts",
];

/// `-w fields` keys that carry ids, terms, indexes or sizes.
const FIELDS_KEYS: &str =
    "ClusterID|MemberID|RaftTerm|ID|Leader|DBSize|DBSizeInUse|RaftIndex|RaftAppliedIndex";

/// Rewrites etcdctl output for one server into a server-independent form.
#[derive(Debug)]
pub struct Normalizer {
    client_port: u16,
    peer_port: u16,
    loopback_port: Regex,
    client_uuid: Regex,
    endpoint_status: Regex,
    member_line: Regex,
    fields_number: Regex,
    fields_version: Regex,
}

impl Normalizer {
    /// A normaliser for a server whose client and peer ports are these.
    pub fn new(client_port: u16, peer_port: u16) -> Result<Self> {
        let re =
            |pattern: &str| Regex::new(pattern).with_context(|| format!("bad pattern {pattern}"));
        Ok(Normalizer {
            client_port,
            peer_port,
            loopback_port: re(r"127\.0\.0\.1:(\d+)")?,
            client_uuid: re(
                r"client-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            )?,
            // endpoint, id, version, db size, is leader, is learner, raft term, raft
            // index, raft applied index, errors
            endpoint_status: re(
                r"^([^,]+), [0-9a-f]+, [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, (.*)$",
            )?,
            // id, status, name, peer URLs, client URLs, is learner
            member_line: re(r"^[0-9a-f]{1,16}, (started|unstarted), (.*)$")?,
            fields_number: re(&format!(r#"^"({FIELDS_KEYS})" : \d+$"#))?,
            fields_version: re(r#"^"Version" : ".*"$"#)?,
        })
    }

    /// Normalises every line of `text`.
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            out.push_str(&self.line(line));
            out.push('\n');
        }
        out
    }

    fn line(&self, line: &str) -> String {
        let line = self.loopback_port.replace_all(line, |caps: &Captures<'_>| {
            let port = caps[1].parse::<u16>().ok();
            if port == Some(self.client_port) {
                "127.0.0.1:<client-port>".to_string()
            } else if port == Some(self.peer_port) {
                "127.0.0.1:<peer-port>".to_string()
            } else {
                caps[0].to_string()
            }
        });
        let line = self.client_uuid.replace_all(&line, "client-<uuid>");
        if let Some(json) = normalized_json(&line) {
            return json;
        }
        let line = self.endpoint_status.replace(
            &line,
            "$1, <member-id>, <version>, <db-size>, $2, $3, <raft-term>, <raft-index>, <raft-applied-index>, $4",
        );
        let line = self.member_line.replace(&line, "<member-id>, $1, $2");
        let line = self.fields_number.replace(&line, r#""$1" : <normalized>"#);
        self.fields_version
            .replace(&line, r#""Version" : <version>"#)
            .into_owned()
    }
}

/// `line` normalised and pretty-printed, if it is a JSON object or array.
fn normalized_json(line: &str) -> Option<String> {
    if !(line.starts_with('{') || line.starts_with('[')) {
        return None;
    }
    let mut value = serde_json::from_str::<Value>(line).ok()?;
    normalize_json(&mut value);
    serde_json::to_string_pretty(&value).ok()
}

/// Replaces the values of [`JSON_FIELDS`], and string-valued `version` fields (the
/// server's version in `endpoint status`; a key's version is a number), by placeholders.
fn normalize_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                let is_version_string = key == "version" && field.is_string();
                if JSON_FIELDS.contains(&key.as_str()) || is_version_string {
                    *field = Value::String(format!("<{key}>"));
                } else {
                    normalize_json(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalizer() -> Normalizer {
        Normalizer::new(23790, 23800).unwrap()
    }

    #[test]
    fn endpoint_status_keeps_leadership_and_errors() {
        let out = normalizer()
            .apply("127.0.0.1:23790, 2e1259d415f2a040, 3.4.23, 20 kB, true, false, 2, 7, 7, \n");
        assert_eq!(
            out,
            "127.0.0.1:<client-port>, <member-id>, <version>, <db-size>, true, false, <raft-term>, \
             <raft-index>, <raft-applied-index>, \n"
        );
    }

    #[test]
    fn member_list_keeps_name_and_urls_modulo_ports() {
        let out = normalizer().apply("2e1259d415f2a040, started, n1, http://127.0.0.1:23800, http://127.0.0.1:23790, false\n");
        assert_eq!(
            out,
            "<member-id>, started, n1, http://127.0.0.1:<peer-port>, http://127.0.0.1:<client-port>, false\n"
        );
    }

    #[test]
    fn json_keeps_revisions_and_key_versions() {
        let out = normalizer().apply(
            r#"{"header":{"cluster_id":1,"member_id":2,"revision":4,"raft_term":2},"kvs":[{"key":"YQ==","version":2}],"count":1}"#,
        );
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["header"]["revision"], 4);
        assert_eq!(value["header"]["cluster_id"], "<cluster_id>");
        assert_eq!(value["kvs"][0]["version"], 2);
    }

    #[test]
    fn status_json_version_string_is_normalized() {
        let out = normalizer().apply(
            r#"[{"Endpoint":"127.0.0.1:23790","Status":{"version":"3.4.23","dbSize":20480}}]"#,
        );
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value[0]["Endpoint"], "127.0.0.1:<client-port>");
        assert_eq!(value[0]["Status"]["version"], "<version>");
        assert_eq!(value[0]["Status"]["dbSize"], "<dbSize>");
    }

    #[test]
    fn fields_output_keeps_revision() {
        let out = normalizer().apply(
            "\"ClusterID\" : 3249\n\"Revision\" : 11\n\"Version\" : \"3.4.23\"\n\"Version\" : 2\n",
        );
        assert_eq!(
            out,
            "\"ClusterID\" : <normalized>\n\"Revision\" : 11\n\"Version\" : <version>\n\"Version\" : 2\n"
        );
    }

    #[test]
    fn log_line_timestamp_and_uuid_are_normalized() {
        let out = normalizer().apply(
            r#"{"level":"warn","ts":"2026-11-24T05:59:21.967Z","target":"endpoint://client-38dce800-6952-4dec-9c2d-3d4dd67bb3e2/127.0.0.1:23790","error":"rpc error: code = OutOfRange"}"#,
        );
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["ts"], "<ts>");
        assert_eq!(
            value["target"],
            "endpoint://client-<uuid>/127.0.0.1:<client-port>"
        );
        assert_eq!(value["error"], "rpc error: code = OutOfRange");
    }
}
