//! Every error this dialect can answer, mapped to Consul's status codes and plain-text
//! bodies in this one place (Consul's own literal strings where Consul has one).

use crate::http::HttpError;

/// An error answered to the client instead of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// A path outside the KV API.
    PathNotFound,
    /// A method the KV API does not serve.
    MethodNotAllowed(String),
    /// PUT, or DELETE without `?recurse`, on the empty key.
    MissingKey,
    /// A key whose kernel key would start with NUL (where flags sidecars live).
    ReservedKey,
    /// `?index=` is not an unsigned integer.
    InvalidIndex,
    /// `?wait=` is not a Go duration.
    InvalidWait,
    /// `?stale` and `?consistent` together.
    ConflictingConsistency,
    /// `?flags=` is not an unsigned integer (Go's `strconv` error text).
    InvalidFlags(String),
    /// `?cas=` is not an unsigned integer (Go's `strconv` error text).
    InvalidCas(String),
    /// `?acquire=` / `?release=`: Consul sessions are not implemented.
    SessionsUnsupported,
    /// The value is over `max_value_bytes` (the limit).
    ValueTooLarge(usize),
    /// The kernel refused the call (gRPC code and message).
    Kernel { code: u32, message: String },
    /// The kernel answered something this plugin did not ask for.
    UnexpectedReply(&'static str),
    /// The byte stream is not HTTP we can frame; the connection is closed after this.
    Http(HttpError),
}

/// gRPC `Unavailable`.
const UNAVAILABLE: u32 = 14;

impl KvError {
    /// The status code and body.
    pub fn status_and_body(&self) -> (u16, String) {
        match self {
            KvError::PathNotFound => (404, "404 page not found\n".into()),
            KvError::MethodNotAllowed(method) => (405, format!("method {method} not allowed")),
            KvError::MissingKey => (400, "Missing key name".into()),
            KvError::ReservedKey => (
                400,
                "Invalid key name: keys starting with a NUL byte are reserved".into(),
            ),
            KvError::InvalidIndex => (400, "Invalid index".into()),
            KvError::InvalidWait => (400, "Invalid wait time".into()),
            KvError::ConflictingConsistency => (
                400,
                "Cannot specify ?stale with ?consistent, conflicting semantics.".into(),
            ),
            KvError::InvalidFlags(why) | KvError::InvalidCas(why) => (400, why.clone()),
            KvError::SessionsUnsupported => (
                400,
                "Sessions are not supported by this server: ?acquire and ?release are unavailable"
                    .into(),
            ),
            KvError::ValueTooLarge(limit) => (413, format!("Value exceeds {limit} byte limit")),
            KvError::Kernel { code, message } if *code == UNAVAILABLE => {
                (503, format!("No cluster leader: {message}"))
            }
            KvError::Kernel { message, .. } => (500, message.clone()),
            KvError::UnexpectedReply(what) => (500, format!("unexpected kernel reply: {what}")),
            KvError::Http(HttpError::Malformed(why)) => (400, format!("400 Bad Request: {why}")),
            KvError::Http(HttpError::HeadTooLarge) => {
                (431, "431 Request Header Fields Too Large".into())
            }
            KvError::Http(HttpError::BodyTooLarge(limit)) => {
                (413, format!("Value exceeds {limit} byte limit"))
            }
        }
    }

    /// Extra headers the error carries (`Allow` for 405).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            KvError::MethodNotAllowed(_) => vec![("Allow", "GET,PUT,DELETE".into())],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_strings() {
        let cases: Vec<(KvError, u16, &str)> = vec![
            (KvError::PathNotFound, 404, "404 page not found\n"),
            (
                KvError::MethodNotAllowed("POST".into()),
                405,
                "method POST not allowed",
            ),
            (KvError::MissingKey, 400, "Missing key name"),
            (KvError::InvalidIndex, 400, "Invalid index"),
            (KvError::InvalidWait, 400, "Invalid wait time"),
            (
                KvError::ConflictingConsistency,
                400,
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ),
            (
                KvError::InvalidFlags("strconv.ParseUint: parsing \"x\": invalid syntax".into()),
                400,
                "strconv.ParseUint: parsing \"x\": invalid syntax",
            ),
            (
                KvError::ValueTooLarge(524288),
                413,
                "Value exceeds 524288 byte limit",
            ),
            (
                KvError::Http(HttpError::BodyTooLarge(10)),
                413,
                "Value exceeds 10 byte limit",
            ),
            (
                KvError::Kernel {
                    code: 3,
                    message: "etcdserver: bad".into(),
                },
                500,
                "etcdserver: bad",
            ),
            (
                KvError::Kernel {
                    code: 14,
                    message: "no leader".into(),
                },
                503,
                "No cluster leader: no leader",
            ),
        ];
        for (error, status, body) in cases {
            assert_eq!(
                error.status_and_body(),
                (status, body.to_string()),
                "{error:?}"
            );
        }
        assert_eq!(
            KvError::MethodNotAllowed("POST".into()).headers(),
            vec![("Allow", "GET,PUT,DELETE".to_string())]
        );
        assert!(KvError::MissingKey.headers().is_empty());
        assert_eq!(KvError::SessionsUnsupported.status_and_body().0, 400);
        assert_eq!(
            KvError::Http(HttpError::Malformed("x".into()))
                .status_and_body()
                .0,
            400
        );
        assert_eq!(
            KvError::Http(HttpError::HeadTooLarge).status_and_body().0,
            431
        );
    }
}
