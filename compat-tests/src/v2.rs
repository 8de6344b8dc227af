//! Raw HTTP against the etcd v2 API, with `curl` (as the issue's users do), and the
//! normalising of its answers so that two servers' transcripts compare: every index
//! (`X-Etcd-Index`, `modifiedIndex`, `createdIndex`, an error's `index`, the numbers of a
//! "Compare failed" cause, in-order key names) is written relative to the index the
//! session started at; TTLs and expiration times become placeholders. Nothing else is
//! touched: actions, keys, values, error codes, messages and statuses must match.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use regex::{Captures, Regex};
use serde_json::Value;

/// Longest a single request may take (a wait is given its own bound).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// One HTTP answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }

    /// `node.modifiedIndex` of a JSON answer.
    pub fn modified_index(&self) -> Result<i64> {
        self.json()?["node"]["modifiedIndex"]
            .as_i64()
            .with_context(|| format!("no node.modifiedIndex in {}", self.body))
    }
}

/// Runs `curl` with `args` against `http://endpoint` + `path` (kept as is: no dot
/// segment squashing); `form` fields go in an urlencoded body.
pub async fn request(
    endpoint: &str,
    method: &str,
    path: &str,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Result<Reply> {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-s", "-i", "--path-as-is", "-X", method])
        .arg(format!("http://{endpoint}{path}"))
        .kill_on_drop(true);
    // Long values go through files: the argument list has a size limit.
    let mut files = Vec::new();
    for (name, value) in form {
        if value.len() > 64 * 1024 {
            let file = tempfile::NamedTempFile::new().context("cannot make a temp file")?;
            std::fs::write(file.path(), value)?;
            command
                .arg("--data-urlencode")
                .arg(format!("{name}@{}", file.path().display()));
            files.push(file);
        } else {
            command
                .arg("--data-urlencode")
                .arg(format!("{name}={value}"));
        }
    }
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .with_context(|| format!("{method} {path} did not answer in {timeout:?}"))?
        .context("cannot run curl (scripts/install-deps.sh installs it)")?;
    parse(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("{method} {path}: curl exit {}", output.status))
}

/// A request with the usual bound.
pub async fn call(
    endpoint: &str,
    method: &str,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Reply> {
    request(endpoint, method, path, form, REQUEST_TIMEOUT).await
}

/// Splits `curl -i` output into status, headers and body (skipping `100 Continue`).
fn parse(raw: &str) -> Result<Reply> {
    let mut rest = raw;
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP answer in {raw:?}"))?;
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Ok(Reply {
            status,
            headers,
            body: body.to_string(),
        });
    }
}

/// Rewrites one server's answers relative to the index its session started at.
#[derive(Debug)]
pub struct IndexNormalizer {
    base: i64,
    compare_cause: Regex,
    history_cause: Regex,
    in_order_key: Regex,
    index_field: Regex,
    ttl_field: Regex,
    expiration_field: Regex,
    index_param: Regex,
}

impl IndexNormalizer {
    pub fn new(base: i64) -> Result<Self> {
        Ok(IndexNormalizer {
            base,
            compare_cause: Regex::new(r"\[(\d+) != (\d+)\]")?,
            history_cause: Regex::new(r"cleared \[(\d+)/(\d+)\]")?,
            in_order_key: Regex::new(r"/(\d{20})")?,
            index_field: Regex::new(r#""(modifiedIndex|createdIndex|index)":(\d+)"#)?,
            ttl_field: Regex::new(r#""ttl":-?\d+"#)?,
            expiration_field: Regex::new(r#""expiration":"[^"]*""#)?,
            index_param: Regex::new(r"(prevIndex|waitIndex)=(\d+)")?,
        })
    }

    fn index(&self, value: i64) -> String {
        if value == 0 {
            "0".into()
        } else {
            format!("i{:+}", value - self.base)
        }
    }

    fn text(&self, text: &str) -> String {
        let keys = self.in_order_key.replace_all(text, |c: &Captures| {
            format!("/{}", self.index(c[1].parse().unwrap_or_default()))
        });
        let history = self.history_cause.replace_all(&keys, |c: &Captures| {
            let n = |i: usize| c[i].parse().unwrap_or_default();
            format!("cleared [{}/{}]", self.index(n(1)), self.index(n(2)))
        });
        self.compare_cause
            .replace_all(&history, |c: &Captures| {
                let n = |i: usize| c[i].parse().unwrap_or_default();
                format!("[{} != {}]", self.index(n(1)), self.index(n(2)))
            })
            .into_owned()
    }

    /// A request line with the indexes it names (`prevIndex=`, `waitIndex=`) relative.
    pub fn label(&self, label: &str) -> String {
        self.index_param
            .replace_all(label, |c: &Captures| {
                format!("{}={}", &c[1], self.index(c[2].parse().unwrap_or_default()))
            })
            .into_owned()
    }

    /// A body with its indexes relative, TTLs and times as placeholders; byte for byte
    /// otherwise (field order and spacing included).
    fn body(&self, body: &str) -> String {
        let indexes = self.index_field.replace_all(body, |c: &Captures| {
            format!(
                "\"{}\":\"{}\"",
                &c[1],
                self.index(c[2].parse().unwrap_or_default())
            )
        });
        let ttls = self.ttl_field.replace_all(&indexes, "\"ttl\":\"<ttl>\"");
        let times = self
            .expiration_field
            .replace_all(&ttls, "\"expiration\":\"<time>\"");
        self.text(&times)
    }

    /// One answer as a transcript block: status, the etcd headers (index values
    /// normalised, ids and Raft numbers reduced to their presence) and the body.
    pub fn reply(&self, reply: &Reply) -> String {
        let mut out = format!("{}\n", reply.status);
        for name in ["content-type", "location", "allow"] {
            if let Some(v) = reply.header(name) {
                out.push_str(&format!("{name}: {v}\n"));
            }
        }
        if let Some(v) = reply.header("x-etcd-index") {
            let shown = v.parse().map_or_else(|_| v.to_string(), |i| self.index(i));
            out.push_str(&format!("x-etcd-index: {shown}\n"));
        }
        for name in ["x-etcd-cluster-id", "x-raft-index", "x-raft-term"] {
            if reply.header(name).is_some() {
                out.push_str(&format!("{name}: present\n"));
            }
        }
        out.push_str(&self.body(reply.body.trim_end_matches('\n')));
        out.push('\n');
        out
    }
}

/// The index a fresh server's v2 store is at (`X-Etcd-Index` of a root get).
pub async fn current_index(endpoint: &str) -> Result<i64> {
    let reply = call(endpoint, "GET", "/v2/keys/", &[]).await?;
    match reply.header("x-etcd-index").and_then(|v| v.parse().ok()) {
        Some(index) => Ok(index),
        None => bail!("no X-Etcd-Index in {reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_become_relative_and_the_rest_stays() -> Result<()> {
        let n = IndexNormalizer::new(10)?;
        let reply = Reply {
            status: 412,
            headers: vec![("x-etcd-index".into(), "12".into())],
            body: r#"{"errorCode":101,"message":"Compare failed","cause":"[11 != 12]","index":12}"#
                .into(),
        };
        assert_eq!(
            n.reply(&reply),
            "412\nx-etcd-index: i+2\n{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[i+1 != i+2]\",\"index\":\"i+2\"}\n"
        );
        assert_eq!(n.text("/q/00000000000000000011"), "/q/i+1");
        Ok(())
    }
}
