//! Request validation done once, before anything is proposed: the checks etcd makes in
//! its gRPC layer (empty keys, contradictory flags, txn size, duplicate keys).

use crate::error::{KernelError, KernelResult};
use crate::types::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use std::collections::HashSet;

pub fn range(req: &RangeRequest) -> KernelResult<()> {
    non_empty_key(&req.key)
}

pub fn put(req: &PutRequest) -> KernelResult<()> {
    non_empty_key(&req.key)?;
    if req.ignore_value && !req.value.is_empty() {
        return Err(KernelError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(KernelError::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(req: &DeleteRangeRequest) -> KernelResult<()> {
    non_empty_key(&req.key)
}

/// Size limits, per-op checks (recursively), then the duplicate-key rule for each branch.
pub fn txn(req: &TxnRequest, max_txn_ops: usize) -> KernelResult<()> {
    txn_shape(req, max_txn_ops)?;
    WriteSet::of_ops(&req.success)?;
    WriteSet::of_ops(&req.failure)?;
    Ok(())
}

fn txn_shape(req: &TxnRequest, max_txn_ops: usize) -> KernelResult<()> {
    if req.compare.len() > max_txn_ops
        || req.success.len() > max_txn_ops
        || req.failure.len() > max_txn_ops
    {
        return Err(KernelError::TooManyOps);
    }
    for compare in &req.compare {
        non_empty_key(&compare.key)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => range(r)?,
            RequestOp::Put(p) => put(p)?,
            RequestOp::DeleteRange(d) => delete_range(d)?,
            RequestOp::Txn(t) => txn_shape(t, max_txn_ops)?,
        }
    }
    Ok(())
}

fn non_empty_key(key: &[u8]) -> KernelResult<()> {
    if key.is_empty() {
        Err(KernelError::EmptyKey)
    } else {
        Ok(())
    }
}

/// A half-open key interval; an empty `end` is a single key, `[0]` means "to the end".
#[derive(Debug, Clone)]
struct Interval {
    start: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            return self.start == key;
        }
        key >= self.start.as_slice() && (self.end == [0] || key < self.end.as_slice())
    }
}

/// The keys put and the ranges deleted by one list of ops (and the txns nested in it).
/// Two writes of one key in the same list are a duplicate, except that the then- and
/// else-branches of one nested txn exclude each other; two deletes may overlap.
#[derive(Debug, Default)]
struct WriteSet {
    puts: HashSet<Vec<u8>>,
    deletes: Vec<Interval>,
}

impl WriteSet {
    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|d| d.contains(key))
    }

    fn add_put(&mut self, key: &[u8]) -> KernelResult<()> {
        if self.puts.contains(key) || self.deleted(key) {
            return Err(KernelError::DuplicateKey);
        }
        self.puts.insert(key.to_vec());
        Ok(())
    }

    fn of_ops(ops: &[RequestOp]) -> KernelResult<WriteSet> {
        let mut set = WriteSet::default();
        for op in ops {
            if let RequestOp::DeleteRange(d) = op {
                set.deletes.push(Interval {
                    start: d.key.clone(),
                    end: d.range_end.clone(),
                });
            }
        }
        let mut nested_deletes = Vec::new();
        for op in ops {
            let RequestOp::Txn(t) = op else { continue };
            let then_set = WriteSet::of_ops(&t.success)?;
            let else_set = WriteSet::of_ops(&t.failure)?;
            for key in &then_set.puts {
                set.add_put(key)?;
            }
            for key in &else_set.puts {
                if set.puts.contains(key) && then_set.puts.contains(key) && !set.deleted(key) {
                    continue;
                }
                set.add_put(key)?;
            }
            nested_deletes.extend(then_set.deletes);
            nested_deletes.extend(else_set.deletes);
        }
        set.deletes.extend(nested_deletes);
        for op in ops {
            if let RequestOp::Put(p) = op {
                set.add_put(&p.key)?;
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            ..Default::default()
        })
    }

    fn del_op(key: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            prev_kv: false,
        })
    }

    fn txn_of(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_rules_follow_etcd() {
        let dup = Err(KernelError::DuplicateKey);
        assert_eq!(
            txn(&txn_of(vec![put_op("a"), put_op("a")], vec![]), 128),
            dup
        );
        assert_eq!(
            txn(&txn_of(vec![put_op("b"), del_op("a", "c")], vec![]), 128),
            dup
        );
        assert_eq!(
            txn(&txn_of(vec![del_op("a", ""), del_op("a", "")], vec![]), 128),
            Ok(())
        );
        assert_eq!(
            txn(&txn_of(vec![put_op("a")], vec![put_op("a")]), 128),
            Ok(())
        );
        let nested = RequestOp::Txn(txn_of(vec![put_op("x")], vec![put_op("x")]));
        assert_eq!(txn(&txn_of(vec![nested.clone()], vec![]), 128), Ok(()));
        assert_eq!(txn(&txn_of(vec![nested, put_op("x")], vec![]), 128), dup);
        let nested_del = RequestOp::Txn(txn_of(vec![del_op("a", "\0")], vec![]));
        assert_eq!(
            txn(&txn_of(vec![nested_del, put_op("zz")], vec![]), 128),
            dup
        );
    }

    #[test]
    fn limits_and_empty_keys() {
        let many: Vec<RequestOp> = (0..129).map(|i| put_op(&format!("k{i}"))).collect();
        assert_eq!(
            txn(&txn_of(many, vec![]), 128),
            Err(KernelError::TooManyOps)
        );
        assert_eq!(
            txn(&txn_of(vec![put_op("")], vec![]), 128),
            Err(KernelError::EmptyKey)
        );
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(put(&p), Err(KernelError::ValueProvided));
    }
}
