//! The state machine driven through [`SansIoPlugin::handle`]: HTTP bytes in, the kernel
//! calls it makes, made-up kernel replies, and the exact HTTP bytes it writes.

use concord_plugin_abi::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse, WatchCreateRequest, WatchResponse,
    compare, request_op, response_op,
};
use concord_plugin_abi::pb::{self, mvccpb};

use super::*;

const C: u64 = 7;

fn plugin() -> ConsulKv {
    let mut p = ConsulKv::create(r#"{"listen":"127.0.0.1:8500"}"#).unwrap();
    let out = p.handle(host_event::Event::Opened(pb::Opened {
        connection: C,
        peer: "127.0.0.1:5000".into(),
        tls: false,
        local: "127.0.0.1:8500".into(),
    }));
    assert!(out.is_empty());
    p
}

fn recv(p: &mut ConsulKv, bytes: &[u8]) -> Vec<Action> {
    p.handle(host_event::Event::Received(pb::Received {
        connection: C,
        data: bytes.to_vec(),
    }))
}

fn reply(p: &mut ConsulKv, call: u64, reply: kernel_reply::Reply) -> Vec<Action> {
    p.handle(host_event::Event::KernelReply(pb::KernelReply {
        connection: C,
        call,
        reply: Some(reply),
    }))
}

fn fire(p: &mut ConsulKv, timer: u64) -> Vec<Action> {
    p.handle(host_event::Event::TimerFired(pb::TimerFired {
        connection: C,
        timer,
    }))
}

/// The only action, a kernel call: its id and request.
fn only_call(actions: &[Action]) -> (u64, kernel_call::Request) {
    match actions {
        [Action::KernelCall(call)] => {
            assert_eq!(call.connection, C);
            (call.call, call.request.clone().unwrap())
        }
        other => panic!("expected one kernel call, got {other:?}"),
    }
}

/// The only action, a write: its text.
fn only_write(actions: &[Action]) -> String {
    match actions {
        [Action::Write(w)] => {
            assert_eq!(w.connection, C);
            String::from_utf8(w.data.clone()).unwrap()
        }
        other => panic!("expected one write, got {other:?}"),
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

fn kv(key: &[u8], value: &[u8], create: i64, modify: i64) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: key.to_vec(),
        create_revision: create,
        mod_revision: modify,
        version: 1,
        value: value.to_vec(),
        lease: 0,
    }
}

fn range_response(kvs: Vec<mvccpb::KeyValue>) -> RangeResponse {
    RangeResponse {
        header: None,
        count: kvs.len() as i64,
        kvs,
        more: false,
    }
}

fn txn_reply(revision: i64, succeeded: bool, ranges: Vec<RangeResponse>) -> kernel_reply::Reply {
    kernel_reply::Reply::Txn(TxnResponse {
        header: header(revision),
        succeeded,
        responses: ranges
            .into_iter()
            .map(|r| ResponseOp {
                response: Some(response_op::Response::ResponseRange(r)),
            })
            .collect(),
    })
}

fn read_reply(
    revision: i64,
    values: Vec<mvccpb::KeyValue>,
    flags: Vec<mvccpb::KeyValue>,
) -> kernel_reply::Reply {
    txn_reply(
        revision,
        true,
        vec![range_response(values), range_response(flags)],
    )
}

fn range(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..RangeRequest::default()
        })),
    }
}

fn put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        })),
    }
}

fn delete(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                prev_kv: false,
            },
        )),
    }
}

fn compare_to(target: compare::CompareTarget, union: compare::TargetUnion) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: b"/app/db".to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

/// The response this plugin writes for `status` with Consul's headers.
fn response(status: &str, content_type: &str, index: i64, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nX-Consul-Index: {index}\r\n\
         X-Consul-Knownleader: true\r\nX-Consul-Lastcontact: 0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn json(index: i64, body: &str) -> String {
    response("200 OK", "application/json", index, body)
}

fn text(status: &str, index: i64, body: &str) -> String {
    response(status, "text/plain; charset=utf-8", index, body)
}

#[test]
fn get_one_key_with_flags() {
    let mut p = plugin();
    let (call, request) = only_call(&recv(
        &mut p,
        b"GET /v1/kv/app/db HTTP/1.1\r\nHost: localhost:8500\r\n\r\n",
    ));
    assert_eq!(
        request,
        kernel_call::Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![range(b"/app/db", b""), range(b"\0consul-flags/app/db", b"")],
            failure: vec![],
        })
    );
    let out = reply(
        &mut p,
        call,
        read_reply(
            9,
            vec![kv(b"/app/db", b"hello", 5, 7)],
            vec![kv(b"\0consul-flags/app/db", b"42", 5, 7)],
        ),
    );
    assert_eq!(
        only_write(&out),
        "HTTP/1.1 200 OK\r\n\
         Content-Type: application/json\r\n\
         X-Consul-Index: 9\r\n\
         X-Consul-Knownleader: true\r\n\
         X-Consul-Lastcontact: 0\r\n\
         Content-Length: 94\r\n\
         \r\n\
         [{\"LockIndex\":0,\"Key\":\"app/db\",\"Flags\":42,\"Value\":\"aGVsbG8=\",\"CreateIndex\":5,\"ModifyIndex\":7}]"
    );
}

#[test]
fn a_sidecar_older_than_the_value_is_flags_0() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/app/db HTTP/1.1\r\n\r\n"));
    // Written with flags at 7, then rewritten at 8 by another dialect.
    let out = reply(
        &mut p,
        call,
        read_reply(
            9,
            vec![kv(b"/app/db", b"x", 5, 8)],
            vec![kv(b"\0consul-flags/app/db", b"42", 5, 7)],
        ),
    );
    assert_eq!(
        only_write(&out),
        json(
            9,
            r#"[{"LockIndex":0,"Key":"app/db","Flags":0,"Value":"eA==","CreateIndex":5,"ModifyIndex":8}]"#
        )
    );
}

#[test]
fn get_missing_key_is_404_with_index() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/nope HTTP/1.1\r\n\r\n"));
    let out = reply(&mut p, call, read_reply(4, vec![], vec![]));
    assert_eq!(
        only_write(&out),
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-Consul-Index: 4\r\n\
         X-Consul-Knownleader: true\r\nX-Consul-Lastcontact: 0\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn get_stale_is_serializable() {
    let mut p = plugin();
    let (_, request) = only_call(&recv(&mut p, b"GET /v1/kv/a?stale&dc=dc1 HTTP/1.1\r\n\r\n"));
    let kernel_call::Request::Txn(txn) = request else {
        panic!("{request:?}")
    };
    for op in txn.success {
        let Some(request_op::Request::RequestRange(r)) = op.request else {
            panic!()
        };
        assert!(r.serializable);
    }
}

#[test]
fn get_recurse_lists_the_prefix() {
    let mut p = plugin();
    let (call, request) = only_call(&recv(&mut p, b"GET /v1/kv/?recurse HTTP/1.1\r\n\r\n"));
    assert_eq!(
        request,
        kernel_call::Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                range(b"/", b"0"),
                range(b"\0consul-flags/", b"\0consul-flags0")
            ],
            failure: vec![],
        })
    );
    let out = reply(
        &mut p,
        call,
        read_reply(
            12,
            vec![kv(b"/a", b"1", 2, 2), kv(b"/b/c", b"", 3, 11)],
            vec![kv(b"\0consul-flags/b/c", b"3", 3, 11)],
        ),
    );
    assert_eq!(
        only_write(&out),
        json(
            12,
            "[{\"LockIndex\":0,\"Key\":\"a\",\"Flags\":0,\"Value\":\"MQ==\",\"CreateIndex\":2,\"ModifyIndex\":2},\
             {\"LockIndex\":0,\"Key\":\"b/c\",\"Flags\":3,\"Value\":null,\"CreateIndex\":3,\"ModifyIndex\":11}]"
        )
    );
}

#[test]
fn get_keys_with_separator_rolls_up() {
    let mut p = plugin();
    let (call, request) = only_call(&recv(
        &mut p,
        b"GET /v1/kv/app/?keys&separator=/ HTTP/1.1\r\n\r\n",
    ));
    assert_eq!(
        request,
        kernel_call::Request::Range(RangeRequest {
            key: b"/app/".to_vec(),
            range_end: b"/app0".to_vec(),
            keys_only: true,
            ..RangeRequest::default()
        })
    );
    let keys = [&b"/app/a"[..], b"/app/b/c", b"/app/b/d", b"/app/e"];
    let out = reply(
        &mut p,
        call,
        kernel_reply::Reply::Range(RangeResponse {
            header: header(20),
            ..range_response(keys.iter().map(|k| kv(k, b"", 1, 1)).collect())
        }),
    );
    assert_eq!(only_write(&out), json(20, r#"["app/a","app/b/","app/e"]"#));

    // Without a separator every key; an empty non-root prefix is a 404, the root `[]`.
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/app/?keys HTTP/1.1\r\n\r\n"));
    let out = reply(
        &mut p,
        call,
        kernel_reply::Reply::Range(RangeResponse {
            header: header(20),
            ..range_response(keys.iter().map(|k| kv(k, b"", 1, 1)).collect())
        }),
    );
    assert_eq!(
        only_write(&out),
        json(20, r#"["app/a","app/b/c","app/b/d","app/e"]"#)
    );
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/zzz?keys HTTP/1.1\r\n\r\n"));
    let out = reply(
        &mut p,
        call,
        kernel_reply::Reply::Range(RangeResponse {
            header: header(20),
            ..range_response(vec![])
        }),
    );
    assert_eq!(
        only_write(&out),
        response("404 Not Found", "application/json", 20, "")
    );
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/?keys HTTP/1.1\r\n\r\n"));
    let out = reply(
        &mut p,
        call,
        kernel_reply::Reply::Range(RangeResponse {
            header: header(20),
            ..range_response(vec![])
        }),
    );
    assert_eq!(only_write(&out), json(20, "[]"));
}

#[test]
fn get_raw_is_the_value() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/app/db?raw HTTP/1.1\r\n\r\n"));
    let out = reply(
        &mut p,
        call,
        read_reply(3, vec![kv(b"/app/db", b"plain value", 2, 3)], vec![]),
    );
    assert_eq!(only_write(&out), text("200 OK", 3, "plain value"));
}

#[test]
fn put_with_flags_writes_value_and_sidecar_in_one_txn() {
    let mut p = plugin();
    let (call, request) = only_call(&recv(
        &mut p,
        b"PUT /v1/kv/app/db?flags=42 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    ));
    assert_eq!(
        request,
        kernel_call::Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                put(b"/app/db", b"hello"),
                put(b"\0consul-flags/app/db", b"42")
            ],
            failure: vec![],
        })
    );
    let out = reply(&mut p, call, txn_reply(8, true, vec![]));
    assert_eq!(only_write(&out), json(8, "true"));

    // Flags 0 (the default) deletes the sidecar.
    let (_, request) = only_call(&recv(
        &mut p,
        b"PUT /v1/kv/app/db HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ));
    assert_eq!(
        request,
        kernel_call::Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![put(b"/app/db", b""), delete(b"\0consul-flags/app/db", b"")],
            failure: vec![],
        })
    );
}

#[test]
fn put_cas() {
    let mut p = plugin();
    let (call, request) = only_call(&recv(
        &mut p,
        b"PUT /v1/kv/app/db?cas=0 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
    ));
    let kernel_call::Request::Txn(txn) = request else {
        panic!()
    };
    assert_eq!(
        txn.compare,
        vec![compare_to(
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(0)
        )]
    );
    assert_eq!(
        only_write(&reply(&mut p, call, txn_reply(8, false, vec![]))),
        json(8, "false")
    );

    let (call, request) = only_call(&recv(
        &mut p,
        b"PUT /v1/kv/app/db?cas=8&flags=1 HTTP/1.1\r\nContent-Length: 1\r\n\r\ny",
    ));
    let kernel_call::Request::Txn(txn) = request else {
        panic!()
    };
    assert_eq!(
        txn.compare,
        vec![compare_to(
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(8)
        )]
    );
    assert_eq!(
        txn.success,
        vec![put(b"/app/db", b"y"), put(b"\0consul-flags/app/db", b"1")]
    );
    assert_eq!(
        only_write(&reply(&mut p, call, txn_reply(9, true, vec![]))),
        json(9, "true")
    );
}

#[test]
fn delete_recurse_and_cas() {
    let mut p = plugin();
    let (call, request) = only_call(&recv(
        &mut p,
        b"DELETE /v1/kv/app/?recurse HTTP/1.1\r\n\r\n",
    ));
    assert_eq!(
        request,
        kernel_call::Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                delete(b"/app/", b"/app0"),
                delete(b"\0consul-flags/app/", b"\0consul-flags/app0")
            ],
            failure: vec![],
        })
    );
    assert_eq!(
        only_write(&reply(&mut p, call, txn_reply(30, true, vec![]))),
        json(30, "true")
    );

    let (call, request) = only_call(&recv(
        &mut p,
        b"DELETE /v1/kv/app/db?cas=5 HTTP/1.1\r\n\r\n",
    ));
    assert_eq!(
        request,
        kernel_call::Request::Txn(TxnRequest {
            compare: vec![compare_to(
                compare::CompareTarget::Mod,
                compare::TargetUnion::ModRevision(5)
            )],
            success: vec![
                delete(b"/app/db", b""),
                delete(b"\0consul-flags/app/db", b"")
            ],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: b"/app/db".to_vec(),
                    count_only: true,
                    ..RangeRequest::default()
                }))
            }],
        })
    );
    // The key changed since: false.
    let changed = RangeResponse {
        count: 1,
        ..range_response(vec![])
    };
    assert_eq!(
        only_write(&reply(&mut p, call, txn_reply(31, false, vec![changed]))),
        json(31, "false")
    );
    // The key is gone: true, as Consul answers.
    let (call, _) = only_call(&recv(
        &mut p,
        b"DELETE /v1/kv/app/db?cas=5 HTTP/1.1\r\n\r\n",
    ));
    assert_eq!(
        only_write(&reply(
            &mut p,
            call,
            txn_reply(31, false, vec![range_response(vec![])])
        )),
        json(31, "true")
    );
}

fn watch_event(revision: i64, key: &[u8]) -> kernel_reply::Reply {
    kernel_reply::Reply::Watch(WatchResponse {
        header: header(revision),
        events: vec![mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(kv(key, b"new", 2, revision)),
            prev_kv: None,
        }],
        ..WatchResponse::default()
    })
}

fn watch_created() -> kernel_reply::Reply {
    kernel_reply::Reply::Watch(WatchResponse {
        header: header(5),
        created: true,
        ..WatchResponse::default()
    })
}

/// Starts a blocking GET on `app/db` from index 5: the watch and the timer ids.
fn start_blocking(p: &mut ConsulKv) -> (u64, u64) {
    let out = recv(p, b"GET /v1/kv/app/db?index=5&wait=10s HTTP/1.1\r\n\r\n");
    let [Action::KernelCall(watch), Action::SetTimer(timer)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        watch.request,
        Some(kernel_call::Request::Watch(WatchCreateRequest {
            key: b"/app/db".to_vec(),
            start_revision: 6,
            ..WatchCreateRequest::default()
        }))
    );
    assert_eq!((timer.connection, timer.after_ms), (C, 10_000));
    assert!(reply(p, watch.call, watch_created()).is_empty());
    (watch.call, timer.timer)
}

fn cancel(call: u64) -> Action {
    actions::kernel(C, call, kernel_call::Request::WatchCancel(WatchCancel {}))
}

#[test]
fn blocking_query_answered_by_a_watch_event() {
    let mut p = plugin();
    let (watch, timer) = start_blocking(&mut p);
    let out = reply(&mut p, watch, watch_event(6, b"/app/db"));
    let [cancel_timer, cancel_watch, Action::KernelCall(read)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*cancel_timer, actions::cancel_timer(C, timer));
    assert_eq!(*cancel_watch, cancel(watch));
    assert!(matches!(read.request, Some(kernel_call::Request::Txn(_))));
    // Late replies of the watch (more events, its `canceled`) and the timer are ignored.
    assert!(reply(&mut p, watch, watch_event(7, b"/app/db")).is_empty());
    assert!(fire(&mut p, timer).is_empty());
    let out = reply(
        &mut p,
        read.call,
        read_reply(7, vec![kv(b"/app/db", b"new", 2, 7)], vec![]),
    );
    assert_eq!(
        only_write(&out),
        json(
            7,
            r#"[{"LockIndex":0,"Key":"app/db","Flags":0,"Value":"bmV3","CreateIndex":2,"ModifyIndex":7}]"#
        )
    );
    let canceled = kernel_reply::Reply::Watch(WatchResponse {
        canceled: true,
        ..WatchResponse::default()
    });
    assert!(reply(&mut p, watch, canceled).is_empty());
}

#[test]
fn blocking_query_answered_by_the_timer() {
    let mut p = plugin();
    let (watch, timer) = start_blocking(&mut p);
    let out = fire(&mut p, timer);
    let [cancel_watch, Action::KernelCall(read)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*cancel_watch, cancel(watch));
    let out = reply(
        &mut p,
        read.call,
        read_reply(5, vec![kv(b"/app/db", b"old", 2, 5)], vec![]),
    );
    assert!(
        only_write(&out).starts_with(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 5\r\n"
        )
    );
}

#[test]
fn blocking_query_on_compacted_history_answers_at_once() {
    let mut p = plugin();
    let (watch, timer) = start_blocking(&mut p);
    let compacted = kernel_reply::Reply::Watch(WatchResponse {
        canceled: true,
        compact_revision: 50,
        ..WatchResponse::default()
    });
    let out = reply(&mut p, watch, compacted);
    let [cancel_timer, Action::KernelCall(read)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*cancel_timer, actions::cancel_timer(C, timer));
    assert!(matches!(read.request, Some(kernel_call::Request::Txn(_))));
}

#[test]
fn blocking_recurse_watches_the_prefix() {
    let mut p = plugin();
    let out = recv(&mut p, b"GET /v1/kv/app/?recurse&index=3 HTTP/1.1\r\n\r\n");
    let [Action::KernelCall(watch), Action::SetTimer(timer)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        watch.request,
        Some(kernel_call::Request::Watch(WatchCreateRequest {
            key: b"/app/".to_vec(),
            range_end: b"/app0".to_vec(),
            start_revision: 4,
            ..WatchCreateRequest::default()
        }))
    );
    assert_eq!(timer.after_ms, kv::DEFAULT_WAIT_MS);
}

#[test]
fn watch_error_answers_500() {
    let mut p = plugin();
    let (watch, timer) = start_blocking(&mut p);
    let error = kernel_reply::Reply::Error(pb::KernelError {
        code: 11,
        message: "etcdserver: mvcc: required revision is a future revision".into(),
    });
    let out = reply(&mut p, watch, error);
    assert_eq!(out[0], actions::cancel_timer(C, timer));
    assert_eq!(out[1], cancel(watch));
    assert_eq!(
        only_write(&out[2..]),
        text(
            "500 Internal Server Error",
            1,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut p = plugin();
    let out = recv(
        &mut p,
        b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 1\r\n\r\n1GET /v1/kv/a?raw HTTP/1.1\r\n\r\n",
    );
    // Only the first is served; the second waits.
    let (first, request) = only_call(&out);
    assert!(matches!(request, kernel_call::Request::Txn(t) if t.success[0] == put(b"/a", b"1")));
    let out = reply(&mut p, first, txn_reply(2, true, vec![]));
    let [Action::Write(w), Action::KernelCall(second)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(String::from_utf8_lossy(&w.data), json(2, "true"));
    let out = reply(
        &mut p,
        second.call,
        read_reply(2, vec![kv(b"/a", b"1", 2, 2)], vec![]),
    );
    assert_eq!(only_write(&out), text("200 OK", 2, "1"));
}

#[test]
fn split_request_waits_for_all_its_bytes() {
    let mut p = plugin();
    let raw = b"PUT /v1/kv/a?flags=2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    for b in &raw[..raw.len() - 1] {
        assert!(recv(&mut p, std::slice::from_ref(b)).is_empty());
    }
    let (_, request) = only_call(&recv(&mut p, &raw[raw.len() - 1..]));
    assert!(matches!(request, kernel_call::Request::Txn(t) if t.success[0] == put(b"/a", b"abc")));
}

#[test]
fn malformed_http_is_400_and_close() {
    let mut p = plugin();
    let out = recv(&mut p, b"BROKEN\r\n\r\nGET /v1/kv/a HTTP/1.1\r\n\r\n");
    let [Action::Write(w), Action::Close(close)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(close.connection, C);
    let text = String::from_utf8_lossy(&w.data);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(recv(&mut p, b"GET /v1/kv/a HTTP/1.1\r\n\r\n").is_empty());
}

#[test]
fn local_errors_keep_the_connection() {
    let mut p = plugin();
    let out = recv(
        &mut p,
        b"POST /v1/kv/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        only_write(&out),
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
         X-Consul-Index: 1\r\nX-Consul-Knownleader: true\r\nX-Consul-Lastcontact: 0\r\n\
         Allow: GET,PUT,DELETE\r\nContent-Length: 23\r\n\r\nmethod POST not allowed"
    );
    let out = recv(&mut p, b"GET /v1/agent/self HTTP/1.1\r\n\r\n");
    assert_eq!(
        only_write(&out),
        text("404 Not Found", 1, "404 page not found\n")
    );
    let out = recv(&mut p, b"PUT /v1/kv/ HTTP/1.1\r\n\r\n");
    assert_eq!(
        only_write(&out),
        text("400 Bad Request", 1, "Missing key name")
    );
    let out = recv(&mut p, b"PUT /v1/kv/a?acquire=abc HTTP/1.1\r\n\r\n");
    assert!(only_write(&out).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    let out = recv(&mut p, b"GET /v1/kv/a?index=x HTTP/1.1\r\n\r\n");
    assert_eq!(
        only_write(&out),
        text("400 Bad Request", 1, "Invalid index")
    );
    let out = recv(&mut p, b"PUT /v1/kv/a?cas=x HTTP/1.1\r\n\r\n");
    assert_eq!(
        only_write(&out),
        text(
            "400 Bad Request",
            1,
            "strconv.ParseUint: parsing \"x\": invalid syntax"
        )
    );
    // Still served, and the index of a local error is the newest one seen.
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/a HTTP/1.1\r\n\r\n"));
    reply(&mut p, call, read_reply(44, vec![], vec![]));
    let out = recv(&mut p, b"GET /v1/kv/a?wait=x HTTP/1.1\r\n\r\n");
    assert_eq!(
        only_write(&out),
        text("400 Bad Request", 44, "Invalid wait time")
    );
}

#[test]
fn oversize_value_is_413_and_the_connection_survives() {
    let mut p = ConsulKv::create(r#"{"max_value_bytes":4}"#).unwrap();
    let out = recv(
        &mut p,
        b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
    );
    assert_eq!(
        only_write(&out),
        text(
            "413 Request Entity Too Large",
            1,
            "Value exceeds 4 byte limit"
        )
    );
    only_call(&recv(&mut p, b"GET /v1/kv/a HTTP/1.1\r\n\r\n"));
}

#[test]
fn connection_close_closes_after_the_answer() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(
        &mut p,
        b"GET /v1/kv/a HTTP/1.1\r\nConnection: close\r\n\r\n",
    ));
    let out = reply(&mut p, call, read_reply(3, vec![], vec![]));
    let [Action::Write(w), Action::Close(_)] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(String::from_utf8_lossy(&w.data).contains("Connection: close\r\n"));
}

#[test]
fn http_1_0_keep_alive_is_acknowledged() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(
        &mut p,
        b"GET /v1/kv/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ));
    let text = only_write(&reply(&mut p, call, read_reply(3, vec![], vec![])));
    assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/a HTTP/1.0\r\n\r\n"));
    let out = reply(&mut p, call, read_reply(3, vec![], vec![]));
    assert!(
        matches!(&out[..], [Action::Write(_), Action::Close(_)]),
        "{out:?}"
    );
}

#[test]
fn expect_continue() {
    let mut p = plugin();
    let out = recv(
        &mut p,
        b"PUT /v1/kv/a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(only_write(&out), "HTTP/1.1 100 Continue\r\n\r\n");
    only_call(&recv(&mut p, b"ok"));
}

#[test]
fn closed_drops_the_connection() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/a HTTP/1.1\r\n\r\n"));
    assert!(
        p.handle(host_event::Event::Closed(pb::Closed { connection: C }))
            .is_empty()
    );
    assert!(p.connections.is_empty());
    assert!(reply(&mut p, call, read_reply(3, vec![], vec![])).is_empty());
    assert!(fire(&mut p, 1).is_empty());
}

#[test]
fn unknown_call_ids_are_ignored() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(&mut p, b"GET /v1/kv/a HTTP/1.1\r\n\r\n"));
    assert!(reply(&mut p, call + 100, read_reply(3, vec![], vec![])).is_empty());
    assert_eq!(
        only_write(&reply(&mut p, call, read_reply(3, vec![], vec![]))),
        response("404 Not Found", "application/json", 3, "")
    );
}

#[test]
fn key_prefix_maps_keys_both_ways() {
    let mut p = ConsulKv::create(r#"{"key_prefix":"/consul/"}"#).unwrap();
    let (call, request) = only_call(&recv(&mut p, b"GET /v1/kv/a/?recurse HTTP/1.1\r\n\r\n"));
    let kernel_call::Request::Txn(txn) = request else {
        panic!()
    };
    assert_eq!(txn.success[0], range(b"/consul/a/", b"/consul/a0"));
    let out = reply(
        &mut p,
        call,
        read_reply(3, vec![kv(b"/consul/a/b", b"", 3, 3)], vec![]),
    );
    assert!(only_write(&out).ends_with(
        r#"[{"LockIndex":0,"Key":"a/b","Flags":0,"Value":null,"CreateIndex":3,"ModifyIndex":3}]"#
    ));
}

#[test]
fn kernel_errors_are_500() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(
        &mut p,
        b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ));
    let error = kernel_reply::Reply::Error(pb::KernelError {
        code: 3,
        message: "etcdserver: request is too large".into(),
    });
    assert_eq!(
        only_write(&reply(&mut p, call, error)),
        text(
            "500 Internal Server Error",
            1,
            "etcdserver: request is too large"
        )
    );
}

#[test]
fn pretty_json() {
    let mut p = plugin();
    let (call, _) = only_call(&recv(&mut p, b"PUT /v1/kv/a?pretty HTTP/1.1\r\n\r\n"));
    assert_eq!(
        only_write(&reply(&mut p, call, txn_reply(2, true, vec![]))),
        json(2, "true\n")
    );
}

#[test]
fn a_flood_of_pipelined_requests_pauses_reading_then_is_cut_off() {
    let mut p = plugin();
    let flood = b"GET /v1/kv/a HTTP/1.1\r\n\r\n".repeat(MAX_PIPELINED + 10);
    let out = recv(&mut p, &flood);
    let [Action::KernelCall(first), Action::PauseReading(_)] = &out[..] else {
        panic!("{out:?}")
    };
    let mut call = first.call;
    // Bytes the host read before pausing still arrive; past MAX_PIPELINED the stream breaks.
    assert!(recv(&mut p, &flood).is_empty());
    assert_eq!(p.connections[&C].queue.len(), MAX_PIPELINED);
    // MAX_PIPELINED are answered (reading resumes once, as the queue runs low), then 400
    // and close.
    let mut resumed = 0;
    for _ in 1..MAX_PIPELINED {
        let out = reply(&mut p, call, read_reply(3, vec![], vec![]));
        let [Action::Write(_), Action::KernelCall(next), rest @ ..] = &out[..] else {
            panic!("{out:?}")
        };
        resumed += rest
            .iter()
            .filter(|a| matches!(a, Action::ResumeReading(_)))
            .count();
        call = next.call;
    }
    assert_eq!(resumed, 1);
    let out = reply(&mut p, call, read_reply(3, vec![], vec![]));
    let [Action::Write(_), Action::Write(w), Action::Close(_)] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(String::from_utf8_lossy(&w.data).starts_with("HTTP/1.1 400 Bad Request\r\n"));
}

#[test]
fn create_refuses_unknown_keys() {
    let e = ConsulKv::create(r#"{"prefix":"/"}"#).unwrap_err();
    assert!(e.contains("unknown config key `prefix`"), "{e}");
}

/// The exported C entry point and table, as the host drives them: encoded events in,
/// encoded actions out, config errors as messages.
mod through_the_abi {
    use concord_plugin_abi::{HostTable, PluginBuffer, status};
    use prost::Message;

    use super::*;

    extern "C" fn log(_level: u32, _message: *const u8, _len: usize) {}

    static HOST: HostTable = HostTable {
        abi_major: concord_plugin_abi::ABI_MAJOR,
        abi_minor: concord_plugin_abi::ABI_MINOR,
        size: std::mem::size_of::<HostTable>() as u32,
        log,
    };

    fn table() -> &'static concord_plugin_abi::PluginTable {
        // SAFETY: HOST is a valid, static host table.
        let table = unsafe { crate::concord_plugin_entry(&HOST) };
        // SAFETY: the entry point returns its static table (or null, checked).
        unsafe { table.as_ref() }.unwrap()
    }

    fn take(table: &concord_plugin_abi::PluginTable, buffer: PluginBuffer) -> Vec<u8> {
        // SAFETY: the plugin filled `buffer`; it is read, then handed back once.
        let bytes = unsafe { buffer.as_slice() }.to_vec();
        (table.free_buffer)(buffer);
        bytes
    }

    #[test]
    fn create_handle_destroy() {
        let table = table();
        // SAFETY: name/name_len describe the plugin's static name.
        let name = unsafe { std::slice::from_raw_parts(table.name, table.name_len) };
        assert_eq!(name, b"consul");

        let bad = br#"{"nope":1}"#;
        let mut out = PluginBuffer::EMPTY;
        let instance = (table.create)(bad.as_ptr(), bad.len(), &mut out);
        assert!(instance.is_null());
        let message = String::from_utf8(take(table, out)).unwrap();
        assert!(message.contains("unknown config key `nope`"), "{message}");

        let config = br#"{"key_prefix":"/c/"}"#;
        let mut out = PluginBuffer::EMPTY;
        let instance = (table.create)(config.as_ptr(), config.len(), &mut out);
        assert!(!instance.is_null());

        let event = pb::HostEvent {
            event: Some(host_event::Event::Received(pb::Received {
                connection: 3,
                data: b"GET /v1/kv/x?keys HTTP/1.1\r\n\r\n".to_vec(),
            })),
        }
        .encode_to_vec();
        let mut out = PluginBuffer::EMPTY;
        let code = (table.handle)(instance, event.as_ptr(), event.len(), &mut out);
        assert_eq!(code, status::OK);
        let actions = pb::Actions::decode(&take(table, out)[..]).unwrap();
        let [
            pb::Action {
                action: Some(Action::KernelCall(call)),
            },
        ] = &actions.actions[..]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(call.connection, 3);
        let Some(kernel_call::Request::Range(range)) = &call.request else {
            panic!("{call:?}")
        };
        assert_eq!(range.key, b"/c/x");
        (table.destroy)(instance);
    }
}
