//! Small checks shared by the tests that use the `etcd-client` crate.

use std::fmt::Debug;

use anyhow::{Result, anyhow, bail, ensure};
use etcd_client::{Error, KeyValue, ResponseHeader};
use tonic::{Code, Status};

/// The gRPC status a failed call returned; an error if it succeeded or failed otherwise.
pub fn grpc_status<T: Debug>(result: Result<T, Error>) -> Result<Status> {
    match result {
        Ok(response) => bail!("expected a gRPC error, got {response:?}"),
        Err(Error::GRpcStatus(status)) => Ok(status),
        Err(other) => bail!("expected a gRPC status, got {other}"),
    }
}

/// Checks that a call failed with exactly this gRPC code and message.
pub fn expect_status<T: Debug>(result: Result<T, Error>, code: Code, message: &str) -> Result<()> {
    let status = grpc_status(result)?;
    ensure!(
        status.code() == code && status.message() == message,
        "expected {code:?} {message:?}, got {:?} {:?}",
        status.code(),
        status.message()
    );
    Ok(())
}

/// The revision in a response header; an error if the header is missing.
pub fn revision(header: Option<&ResponseHeader>) -> Result<i64> {
    header
        .map(ResponseHeader::revision)
        .ok_or_else(|| anyhow!("the response has no header"))
}

/// The keys, as text.
pub fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// The (key, value) pairs, as text.
pub fn pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect()
}

/// Like `assert_eq!`, but returns an error from the enclosing function instead of
/// panicking, so that a scenario run by [`on_each_backend`](crate::on_each_backend) on one
/// backend does not stop the others.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::ensure_eq!($left, $right, "values differ")
    };
    ($left:expr, $right:expr, $($context:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if !(*left == *right) {
                    return Err($crate::check::__anyhow::anyhow!(
                        "{} at {}:{}: `{}` != `{}`\n  left: {:?}\n right: {:?}",
                        format!($($context)+),
                        file!(),
                        line!(),
                        stringify!($left),
                        stringify!($right),
                        left,
                        right,
                    )
                    .into());
                }
            }
        }
    };
}

#[doc(hidden)]
pub use anyhow as __anyhow;
