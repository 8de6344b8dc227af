//! etcd v2's error body (`{errorCode, message, cause, index}`), its codes and the HTTP
//! status each is sent with, and the one mapping from kernel errors to it.

use concord_kernel::{KernelError, types::TreeError};
use http::StatusCode;
use serde::Serialize;

/// The v2 error codes Concord sends (etcd's `v2error` numbering).
pub mod code {
    pub const KEY_NOT_FOUND: u16 = 100;
    pub const COMPARE_FAILED: u16 = 101;
    pub const NOT_FILE: u16 = 102;
    pub const NOT_DIR: u16 = 104;
    pub const NODE_EXISTS: u16 = 105;
    pub const ROOT_READ_ONLY: u16 = 107;
    pub const DIR_NOT_EMPTY: u16 = 108;
    pub const PREV_VALUE_REQUIRED: u16 = 201;
    pub const TTL_NAN: u16 = 202;
    pub const INDEX_NAN: u16 = 203;
    pub const INVALID_FIELD: u16 = 209;
    pub const INVALID_FORM: u16 = 210;
    pub const REFRESH_VALUE: u16 = 211;
    pub const REFRESH_TTL_REQUIRED: u16 = 212;
    pub const RAFT_INTERNAL: u16 = 300;
    pub const LEADER_ELECT: u16 = 301;
    pub const EVENT_INDEX_CLEARED: u16 = 401;
}

/// An error as etcd v2 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct V2Error {
    #[serde(rename = "errorCode")]
    pub code: u16,
    pub message: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cause: String,
    pub index: i64,
}

impl V2Error {
    pub fn new(code: u16, cause: impl Into<String>, index: i64) -> Self {
        V2Error {
            code,
            message: message(code),
            cause: cause.into(),
            index,
        }
    }

    /// A malformed request: etcd reports these at index 0.
    pub fn request(code: u16, cause: impl Into<String>) -> Self {
        Self::new(code, cause, 0)
    }

    /// The status etcd sends this error with.
    pub fn status(&self) -> StatusCode {
        match self.code {
            code::KEY_NOT_FOUND => StatusCode::NOT_FOUND,
            code::NOT_FILE | code::DIR_NOT_EMPTY => StatusCode::FORBIDDEN,
            code::COMPARE_FAILED | code::NODE_EXISTS => StatusCode::PRECONDITION_FAILED,
            code::RAFT_INTERNAL | code::LEADER_ELECT => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The body: the JSON object and a newline, as Go's encoder writes it.
    pub fn body(&self) -> String {
        let mut body = serde_json::to_string(self).unwrap_or_default();
        body.push('\n');
        body
    }
}

fn message(code: u16) -> &'static str {
    match code {
        code::KEY_NOT_FOUND => "Key not found",
        code::COMPARE_FAILED => "Compare failed",
        code::NOT_FILE => "Not a file",
        code::NOT_DIR => "Not a directory",
        code::NODE_EXISTS => "Key already exists",
        code::ROOT_READ_ONLY => "Root is read only",
        code::DIR_NOT_EMPTY => "Directory not empty",
        code::PREV_VALUE_REQUIRED => "PrevValue is Required in POST form",
        code::TTL_NAN => "The given TTL in POST form is not a number",
        code::INDEX_NAN => "The given index in POST form is not a number",
        code::INVALID_FIELD => "Invalid field",
        code::INVALID_FORM => "Invalid POST form",
        code::REFRESH_VALUE => "Value provided on refresh",
        code::REFRESH_TTL_REQUIRED => "A TTL must be provided on refresh",
        code::LEADER_ELECT => "During Leader Election",
        code::EVENT_INDEX_CLEARED => "The event in requested index is outdated and cleared",
        _ => "Raft Internal Error",
    }
}

/// A kernel error at the v2 edge: no leader is etcd's "During Leader Election", anything
/// else its internal error with the kernel's words as the cause.
pub fn from_kernel(error: &KernelError, index: i64) -> V2Error {
    if error.is_retryable() {
        V2Error::new(code::LEADER_ELECT, error.to_string(), index)
    } else {
        V2Error::new(code::RAFT_INTERNAL, error.to_string(), index)
    }
}

/// The code of a failed v2 tree operation (the cause is added by the caller, which
/// knows the path and the values compared).
pub fn tree_code(error: TreeError) -> u16 {
    match error {
        TreeError::NoNode => code::KEY_NOT_FOUND,
        TreeError::NodeExists => code::NODE_EXISTS,
        TreeError::NotEmpty => code::DIR_NOT_EMPTY,
        TreeError::NotFile => code::NOT_FILE,
        TreeError::NotDir => code::NOT_DIR,
        TreeError::CompareFailed => code::COMPARE_FAILED,
        TreeError::RootReadOnly => code::ROOT_READ_ONLY,
        TreeError::BadVersion
        | TreeError::NoChildrenForEphemerals
        | TreeError::BadArguments
        | TreeError::SessionExpired => code::RAFT_INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_statuses_are_etcds() {
        let e = V2Error::new(code::NOT_FILE, "/a/b", 6);
        assert_eq!(
            e.body(),
            "{\"errorCode\":102,\"message\":\"Not a file\",\"cause\":\"/a/b\",\"index\":6}\n"
        );
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let no_cause = V2Error::new(code::KEY_NOT_FOUND, "", 3);
        assert_eq!(
            no_cause.body(),
            "{\"errorCode\":100,\"message\":\"Key not found\",\"index\":3}\n"
        );
        for (c, status) in [
            (code::KEY_NOT_FOUND, 404),
            (code::COMPARE_FAILED, 412),
            (code::NOT_FILE, 403),
            (code::NOT_DIR, 400),
            (code::NODE_EXISTS, 412),
            (code::ROOT_READ_ONLY, 400),
            (code::DIR_NOT_EMPTY, 403),
            (code::TTL_NAN, 400),
            (code::RAFT_INTERNAL, 500),
            (code::EVENT_INDEX_CLEARED, 400),
        ] {
            assert_eq!(V2Error::new(c, "", 0).status().as_u16(), status, "{c}");
        }
    }
}
