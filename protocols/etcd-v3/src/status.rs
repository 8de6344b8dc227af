//! The one place kernel errors become etcd's gRPC errors: code and literal message as
//! etcd 3.4/3.5 send them (clients match on the text).

use concord_kernel::KernelError;
use tonic::{Code, Status};

/// etcd's gRPC status for a kernel error.
pub fn to_status(error: &KernelError) -> Status {
    let (code, message) = match error {
        KernelError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        KernelError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        KernelError::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        KernelError::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        KernelError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
        KernelError::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
        KernelError::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
        KernelError::TooManyOps => (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        KernelError::DuplicateKey => (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        KernelError::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
        KernelError::Compacted { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        KernelError::FutureRevision => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        KernelError::NoSpace => (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        ),
        KernelError::NotLeader { .. } => (Code::FailedPrecondition, "etcdserver: not leader"),
        KernelError::NoLeader => (Code::Unavailable, "etcdserver: no leader"),
        KernelError::Timeout => (Code::Unavailable, "etcdserver: request timed out"),
        KernelError::LeaderChanged => (Code::Unavailable, "etcdserver: leader changed"),
        KernelError::MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
        KernelError::PeerUrlExists => (
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        ),
        KernelError::BadPeerUrl(url) => {
            return Status::new(
                Code::InvalidArgument,
                format!("etcdserver: invalid peer URL {url:?} (want http://IP:PORT)"),
            );
        }
        KernelError::NotLearner => (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        ),
        KernelError::LearnerNotReady => (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        KernelError::Reconfiguration(detail) => {
            return Status::new(
                Code::FailedPrecondition,
                format!("etcdserver: re-configuration failed: {detail}"),
            );
        }
        KernelError::Shutdown => (Code::Unavailable, "etcdserver: server stopped"),
        KernelError::Storage(detail) => {
            tracing::error!(%detail, "storage failure");
            return Status::new(Code::Internal, format!("etcdserver: {detail}"));
        }
    };
    Status::new(code, message)
}

/// The status etcd's Lock and Election servers send for a kernel error: they pass the
/// error of their internal client through as a plain error, so the code is `Unknown`
/// while the message is etcd's usual one.
pub fn to_unknown_status(error: &KernelError) -> Status {
    Status::new(Code::Unknown, to_status(error).message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_match_etcd() {
        let cases = [
            (
                KernelError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                KernelError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                KernelError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                KernelError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                KernelError::Compacted {
                    compact_revision: 3,
                },
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                KernelError::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                KernelError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                KernelError::KeyNotFound,
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                KernelError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
        ];
        for (error, code, message) in cases {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message, "{error:?}");
        }
    }
}
