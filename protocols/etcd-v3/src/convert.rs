//! Conversions between the etcd protobuf messages and the kernel's types (also used by
//! the plugin host, whose kernel calls are these same messages).

use concord_kernel::types as k;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

pub fn header(h: k::ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

pub fn key_value(kv: k::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_request(r: pb::RangeRequest) -> k::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    k::RangeRequest {
        sort_order: match SortOrder::try_from(r.sort_order) {
            Ok(SortOrder::Ascend) => k::SortOrder::Ascend,
            Ok(SortOrder::Descend) => k::SortOrder::Descend,
            _ => k::SortOrder::None,
        },
        sort_target: match SortTarget::try_from(r.sort_target) {
            Ok(SortTarget::Version) => k::SortTarget::Version,
            Ok(SortTarget::Create) => k::SortTarget::Create,
            Ok(SortTarget::Mod) => k::SortTarget::Mod,
            Ok(SortTarget::Value) => k::SortTarget::Value,
            _ => k::SortTarget::Key,
        },
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn range_response(r: k::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(r.header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_request(r: pb::PutRequest) -> k::PutRequest {
    k::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_response(r: k::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: header(r.header),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> k::DeleteRangeRequest {
    k::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

pub fn delete_response(r: k::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(r.header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

fn compare(c: pb::Compare) -> k::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Greater) => k::CompareResult::Greater,
        Ok(CompareResult::Less) => k::CompareResult::Less,
        Ok(CompareResult::NotEqual) => k::CompareResult::NotEqual,
        _ => k::CompareResult::Equal,
    };
    // The declared target decides which field is compared; a missing operand is zero.
    let operand = c.target_union;
    let int = |want: fn(&TargetUnion) -> Option<i64>| operand.as_ref().and_then(want).unwrap_or(0);
    let target = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Create) => k::CompareTarget::Create(int(|t| match t {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => k::CompareTarget::Mod(int(|t| match t {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Value) => k::CompareTarget::Value(match &operand {
            Some(TargetUnion::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
        Ok(CompareTarget::Lease) => k::CompareTarget::Lease(int(|t| match t {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        _ => k::CompareTarget::Version(int(|t| match t {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
    };
    k::Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    }
}

fn request_op(op: pb::RequestOp) -> Option<k::RequestOp> {
    use pb::request_op::Request;
    Some(match op.request? {
        Request::RequestRange(r) => k::RequestOp::Range(range_request(r)),
        Request::RequestPut(p) => k::RequestOp::Put(put_request(p)),
        Request::RequestDeleteRange(d) => k::RequestOp::DeleteRange(delete_request(d)),
        Request::RequestTxn(t) => k::RequestOp::Txn(txn_request(t)),
    })
}

/// Ops with no request set are skipped, as etcd skips them.
pub fn txn_request(t: pb::TxnRequest) -> k::TxnRequest {
    k::TxnRequest {
        compare: t.compare.into_iter().map(compare).collect(),
        success: t.success.into_iter().filter_map(request_op).collect(),
        failure: t.failure.into_iter().filter_map(request_op).collect(),
    }
}

fn response_op(op: k::ResponseOp) -> pb::ResponseOp {
    use pb::response_op::Response;
    pb::ResponseOp {
        response: Some(match op {
            k::ResponseOp::Range(r) => Response::ResponseRange(range_response(r)),
            k::ResponseOp::Put(p) => Response::ResponsePut(put_response(p)),
            k::ResponseOp::DeleteRange(d) => Response::ResponseDeleteRange(delete_response(d)),
            k::ResponseOp::Txn(t) => Response::ResponseTxn(txn_response(t)),
        }),
    }
}

pub fn txn_response(t: k::TxnResponse) -> pb::TxnResponse {
    pb::TxnResponse {
        header: header(t.header),
        succeeded: t.succeeded,
        responses: t.responses.into_iter().map(response_op).collect(),
    }
}

pub fn member(m: k::Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

pub fn event(e: k::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            k::EventKind::Put => mvccpb::event::EventType::Put,
            k::EventKind::Delete => mvccpb::event::EventType::Delete,
        } as i32,
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// A watch's range, start and filters (ids, progress and fragmenting are the stream's).
pub fn watch_request(create: pb::WatchCreateRequest) -> k::WatchRequest {
    use pb::watch_create_request::FilterType;
    let has = |wanted: FilterType| create.filters.contains(&(wanted as i32));
    k::WatchRequest {
        no_put: has(FilterType::Noput),
        no_delete: has(FilterType::Nodelete),
        key: create.key,
        range_end: create.range_end,
        start_revision: create.start_revision,
        prev_kv: create.prev_kv,
    }
}
