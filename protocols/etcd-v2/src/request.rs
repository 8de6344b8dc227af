//! Parsing of a `/v2/keys` request into a [`KeyRequest`], with etcd's checks and error
//! codes: form values from the body (urlencoded) before those of the query string, the
//! first value of a field winning, Go's boolean and unsigned spellings. Pure: no I/O.

use std::collections::HashMap;

use percent_encoding::percent_decode;

use crate::error::{V2Error, code};

/// The URL prefix of the keys API.
pub const KEYS_PREFIX: &str = "/v2/keys";

/// A parsed keys request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRequest {
    /// The key, cleaned (`/` for the root).
    pub key: String,
    pub value: Option<String>,
    pub dir: bool,
    pub prev_value: Option<String>,
    pub prev_index: u64,
    pub prev_exist: Option<bool>,
    pub wait: bool,
    pub wait_index: u64,
    pub recursive: bool,
    pub sorted: bool,
    pub quorum: bool,
    pub stream: bool,
    pub ttl: Option<u64>,
    pub refresh: bool,
    pub no_value_on_success: bool,
}

/// Form fields in order of arrival (body first), values per name in order.
#[derive(Debug, Default)]
struct Form {
    values: HashMap<String, Vec<String>>,
}

impl Form {
    fn parse_into(&mut self, raw: &str) -> Result<(), String> {
        for pair in raw.split('&') {
            if pair.is_empty() {
                continue;
            }
            if pair.contains(';') {
                return Err("invalid semicolon separator in query".into());
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = unescape(name)?;
            let value = unescape(value)?;
            self.values.entry(name).or_default().push(value);
        }
        Ok(())
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn boolean(&self, name: &str) -> Result<bool, V2Error> {
        match self.first(name) {
            None => Ok(false),
            Some(raw) => parse_bool(raw).ok_or_else(|| {
                V2Error::request(code::INVALID_FIELD, format!("invalid value for \"{name}\""))
            }),
        }
    }

    fn unsigned(&self, name: &str, error_code: u16) -> Result<u64, V2Error> {
        match self.first(name) {
            None => Ok(0),
            Some(raw) => parse_unsigned(raw).ok_or_else(|| {
                V2Error::request(error_code, format!("invalid value for \"{name}\""))
            }),
        }
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a bad escape is an error.
fn unescape(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                let shown: String = raw[i..].chars().take(3).collect();
                return Err(format!("invalid URL escape \"{shown}\""));
            }
        }
    }
    let spaced = raw.replace('+', " ");
    Ok(percent_decode(spaced.as_bytes())
        .decode_utf8_lossy()
        .into_owned())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(_, 10, 64)`: digits only.
fn parse_unsigned(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Go's `path.Clean`: no empty, `.` or `..` segments; `/` for nothing left.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Where Go's `ServeMux` would redirect an unclean URL path (empty, `.` or `..`
/// segments), keeping a trailing slash; `None` if the path is clean.
pub fn redirect_target(path: &str) -> Option<String> {
    let mut cleaned = clean_path(path);
    if path.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    (cleaned != path).then_some(cleaned)
}

/// Parses a keys request: `url_path` starts with [`KEYS_PREFIX`]; `body` is read as a
/// form only when `form_body` (an urlencoded PUT, POST or PATCH).
pub fn parse(
    method: &str,
    url_path: &str,
    query: &str,
    body: Option<&[u8]>,
) -> Result<KeyRequest, V2Error> {
    let mut form = Form::default();
    let invalid_form = |cause: String| V2Error::request(code::INVALID_FORM, cause);
    if let Some(body) = body {
        form.parse_into(&String::from_utf8_lossy(body))
            .map_err(invalid_form)?;
    }
    form.parse_into(query).map_err(invalid_form)?;
    let rest = url_path.strip_prefix(KEYS_PREFIX).unwrap_or(url_path);
    let mut request = KeyRequest {
        key: clean_path(rest),
        prev_index: form.unsigned("prevIndex", code::INDEX_NAN)?,
        wait_index: form.unsigned("waitIndex", code::INDEX_NAN)?,
        recursive: form.boolean("recursive")?,
        sorted: form.boolean("sorted")?,
        wait: form.boolean("wait")?,
        dir: form.boolean("dir")?,
        quorum: form.boolean("quorum")?,
        stream: form.boolean("stream")?,
        ..Default::default()
    };
    if request.wait && method != "GET" {
        return Err(V2Error::request(
            code::INVALID_FIELD,
            "\"wait\" can only be used with GET requests",
        ));
    }
    if form.has("prevValue") {
        match form.first("prevValue") {
            Some("") | None => {
                return Err(V2Error::request(
                    code::PREV_VALUE_REQUIRED,
                    "\"prevValue\" cannot be empty",
                ));
            }
            Some(v) => request.prev_value = Some(v.to_string()),
        }
    }
    request.no_value_on_success = form.boolean("noValueOnSuccess")?;
    if form.first("ttl").is_some_and(|t| !t.is_empty()) {
        request.ttl = Some(form.unsigned("ttl", code::TTL_NAN)?);
    }
    if form.has("prevExist") {
        request.prev_exist =
            Some(form.boolean("prevExist").map_err(|_| {
                V2Error::request(code::INVALID_FIELD, "invalid value for prevExist")
            })?);
    }
    if form.has("refresh") {
        request.refresh = form
            .boolean("refresh")
            .map_err(|_| V2Error::request(code::INVALID_FIELD, "invalid value for refresh"))?;
        if request.refresh {
            if form.first("value").is_some_and(|v| !v.is_empty()) {
                return Err(V2Error::request(
                    code::REFRESH_VALUE,
                    "A value was provided on a refresh",
                ));
            }
            if request.ttl.is_none() {
                return Err(V2Error::request(
                    code::REFRESH_TTL_REQUIRED,
                    "No TTL value set",
                ));
            }
        }
    }
    request.value = form.first("value").map(str::to_string);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(query: &str, body: &str) -> Result<KeyRequest, V2Error> {
        parse("PUT", "/v2/keys/a/b", query, Some(body.as_bytes()))
    }

    #[test]
    fn body_fields_come_before_query_fields() {
        let r = put("value=query&ttl=5", "value=body+x%21").unwrap();
        assert_eq!(r.key, "/a/b");
        assert_eq!(r.value.as_deref(), Some("body x!"));
        assert_eq!(r.ttl, Some(5));
    }

    #[test]
    fn etcds_field_errors() {
        let cases = [
            ("ttl=abc", code::TTL_NAN, "invalid value for \"ttl\""),
            (
                "prevIndex=x",
                code::INDEX_NAN,
                "invalid value for \"prevIndex\"",
            ),
            (
                "recursive=maybe",
                code::INVALID_FIELD,
                "invalid value for \"recursive\"",
            ),
            (
                "prevValue=",
                code::PREV_VALUE_REQUIRED,
                "\"prevValue\" cannot be empty",
            ),
            (
                "prevExist=yes",
                code::INVALID_FIELD,
                "invalid value for prevExist",
            ),
            (
                "refresh=true&value=1",
                code::REFRESH_VALUE,
                "A value was provided on a refresh",
            ),
            (
                "refresh=true",
                code::REFRESH_TTL_REQUIRED,
                "No TTL value set",
            ),
            (
                "wait=true",
                code::INVALID_FIELD,
                "\"wait\" can only be used with GET requests",
            ),
            (
                "value=%zz",
                code::INVALID_FORM,
                "invalid URL escape \"%zz\"",
            ),
        ];
        for (query, error_code, cause) in cases {
            let e = put(query, "").unwrap_err();
            assert_eq!(
                (e.code, e.cause.as_str(), e.index),
                (error_code, cause, 0),
                "{query}"
            );
        }
    }

    #[test]
    fn go_spellings_of_booleans_and_numbers() {
        let r = parse(
            "GET",
            "/v2/keys/",
            "recursive=T&sorted=1&quorum=False&waitIndex=7",
            None,
        )
        .unwrap();
        assert_eq!(r.key, "/");
        assert!(r.recursive && r.sorted && !r.quorum);
        assert_eq!(r.wait_index, 7);
        assert!(parse("GET", "/v2/keys/a", "waitIndex=-1", None).is_err());
        assert!(parse("GET", "/v2/keys/a", "waitIndex=+1", None).is_err());
    }

    #[test]
    fn paths_are_cleaned_as_go_does() {
        assert_eq!(clean_path(""), "/");
        assert_eq!(clean_path("/a/./b/../c/"), "/a/c");
        assert_eq!(redirect_target("/v2/keys//a"), Some("/v2/keys/a".into()));
        assert_eq!(
            redirect_target("/v2/keys/a/../b"),
            Some("/v2/keys/b".into())
        );
        assert_eq!(redirect_target("/v2/keys/a/"), None);
        assert_eq!(redirect_target("/v2/keys/a"), None);
    }
}
