//! The queue that the Lock and Election services share, built only from the kernel's
//! public KV and watch API, with the semantics of etcd's `concurrency` package: a
//! participant writes `prefix/<lease in hex>` attached to its lease, and the queue is
//! ordered by create revision. A participant is first when no key under the prefix has
//! an older create revision; it waits for each older key to be deleted (its holder
//! released it, or the holder's lease ended).

use concord_kernel::types::{
    Compare, CompareResult, CompareTarget, EventKind, KeyValue, PutRequest, RangeRequest,
    RequestOp, ResponseHeader, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest,
    WatchRequest,
};
use concord_kernel::{Kernel, KernelError, WatchEnd};

/// The key prefix of the queue named `name`: `name/`.
pub fn queue_prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// The end of the range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A queue entry: this participant's key and where it stands.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Vec<u8>,
    /// The create revision of the key: the participant's place in the queue.
    pub create_revision: Revision,
    /// The value the key held before this call, if it already existed.
    pub existing: Option<KeyValue>,
}

/// Puts `prefix/<lease hex>` with `value` unless it exists, and returns the entry.
pub async fn join(
    kernel: &Kernel,
    prefix: &[u8],
    lease: i64,
    value: Vec<u8>,
) -> Result<Entry, KernelError> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    let get = RequestOp::Range(RangeRequest {
        key: key.clone(),
        ..Default::default()
    });
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create(0),
            key: key.clone(),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })],
        failure: vec![get],
    };
    let resp = kernel.txn(txn).await?;
    if resp.succeeded {
        return Ok(Entry {
            key,
            create_revision: resp.header.revision,
            existing: None,
        });
    }
    let existing = match resp.responses.into_iter().next() {
        Some(ResponseOp::Range(range)) => range.kvs.into_iter().next(),
        _ => None,
    };
    match existing {
        Some(kv) => Ok(Entry {
            key,
            create_revision: kv.create_revision,
            existing: Some(kv),
        }),
        // Deleted between the compare and the read: the caller may simply retry, as the
        // lease that held it has ended.
        None => Err(KernelError::KeyNotFound),
    }
}

/// The oldest key under `prefix` (by create revision), if any.
pub async fn first(kernel: &Kernel, prefix: &[u8]) -> Result<Option<KeyValue>, KernelError> {
    let resp = kernel
        .range(RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            sort_order: SortOrder::Ascend,
            sort_target: SortTarget::Create,
            limit: 1,
            ..Default::default()
        })
        .await?;
    Ok(resp.kvs.into_iter().next())
}

/// Waits until `entry` is first in the queue under `prefix`; answers the header of the
/// revision at which it is.
pub async fn wait_turn(
    kernel: &Kernel,
    prefix: &[u8],
    entry: &Entry,
) -> Result<ResponseHeader, KernelError> {
    wait_older_deleted(kernel, prefix, entry.create_revision - 1).await?;
    Ok(kernel.header(kernel.revision()?))
}

/// Waits until no key under `prefix` has a create revision up to `max_create_revision`.
pub async fn wait_older_deleted(
    kernel: &Kernel,
    prefix: &[u8],
    max_create_revision: Revision,
) -> Result<(), KernelError> {
    loop {
        let resp = kernel
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Create,
                max_create_revision,
                limit: 1,
                ..Default::default()
            })
            .await?;
        let Some(newest_older) = resp.kvs.into_iter().next() else {
            return Ok(());
        };
        wait_deleted(kernel, &newest_older.key, resp.header.revision + 1).await?;
    }
}

/// Waits for a delete of `key` at or after `from_revision`.
pub async fn wait_deleted(
    kernel: &Kernel,
    key: &[u8],
    from_revision: Revision,
) -> Result<(), KernelError> {
    let mut watcher = kernel.watch(WatchRequest {
        key: key.to_vec(),
        start_revision: from_revision,
        no_put: true,
        ..Default::default()
    })?;
    loop {
        match watcher.next().await {
            Ok(batch) => {
                if batch.events.iter().any(|e| e.kind == EventKind::Delete) {
                    return Ok(());
                }
            }
            // History before the key's delete is gone: it cannot still exist unchanged,
            // so the caller's re-check decides.
            Err(WatchEnd::Compacted { .. }) => return Ok(()),
            Err(WatchEnd::Closed) => return Err(KernelError::Shutdown),
            Err(WatchEnd::Failed(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"lock/"), b"lock0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
