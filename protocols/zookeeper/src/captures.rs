//! Tests against frozen traffic of real clients (kazoo, zkCli.sh, a raw
//! socket client) talking to a real ZooKeeper 3.8.0, kept as hex fixtures in
//! `tests/captures/` (see `capture.py` there). Every frame is split, decoded
//! and, where this codec produces that record, re-encoded byte for byte.

use std::collections::HashMap;

use crate::codes::{ErrorCode, OpCode, xid};
use crate::frame::{FrameBuffer, FrameSplitter, Split};
use crate::message::{
    MultiResult, Request, Response, decode_connect_request, decode_connect_response, decode_reply,
    decode_request, encode_connect_request, encode_connect_response, encode_reply, encode_request,
};
use crate::records::{ConnectRequest, ConnectResponse, ReplyHeader};

struct Fixture {
    name: String,
    frames: Vec<(String, Vec<u8>)>,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// This crate's directory as `cargo test` gives it to the running test; the compile-time
/// value goes stale when a shared target dir is reused from another checkout path.
fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

fn fixtures() -> Vec<Fixture> {
    let dir = crate_dir().join("tests/captures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("hex") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(
            header.starts_with("# client: ") && header.contains("server: ZooKeeper 3.8.0"),
            "{header}"
        );
        let frames = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (dir, h) = l.split_once(' ').unwrap();
                (dir.to_string(), hex(h.trim()))
            })
            .collect::<Vec<_>>();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(!frames.is_empty(), "{name} has no frames");
        out.push(Fixture { name, frames });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What decoding one fixture found, for the per-file assertions.
#[derive(Default)]
struct Decoded {
    connect_requests: Vec<ConnectRequest>,
    connect_responses: Vec<ConnectResponse>,
    requests: Vec<(i32, Request)>,
    replies: Vec<(ReplyHeader, Response)>,
}

fn body(name: &str, frame: &[u8]) -> Vec<u8> {
    match FrameSplitter::default().split(frame).unwrap() {
        Split::Frame { body, consumed } => {
            assert_eq!(consumed, frame.len(), "{name}: one line is one frame");
            body.to_vec()
        }
        Split::Incomplete { .. } => panic!("{name}: incomplete frame"),
    }
}

fn check_fixture(f: &Fixture) -> (Decoded, usize) {
    // The same bytes arriving one at a time split into the same frames.
    let mut fb = FrameBuffer::default();
    let mut split = Vec::new();
    for (_, frame) in &f.frames {
        for b in frame {
            fb.extend(&[*b]);
            while let Some(body) = fb.next_frame().unwrap() {
                split.push(body);
            }
        }
    }
    assert_eq!(split.len(), f.frames.len(), "{}", f.name);

    let mut d = Decoded::default();
    let mut ops: HashMap<i32, OpCode> = HashMap::new();
    let mut reencoded = 0;
    for (dir, frame) in &f.frames {
        let body = body(&f.name, frame);
        match dir.as_str() {
            "C>" => {
                let req = decode_connect_request(&body).unwrap();
                assert_eq!(&encode_connect_request(&req), frame, "{}", f.name);
                d.connect_requests.push(req);
                reencoded += 1;
            }
            "C<" => {
                let rsp = decode_connect_response(&body).unwrap();
                assert_eq!(&encode_connect_response(&rsp), frame, "{}", f.name);
                // ZooKeeper answers in the form the client used.
                let req = d.connect_requests.last().unwrap();
                assert_eq!(
                    rsp.read_only.is_some(),
                    req.read_only.is_some(),
                    "{}",
                    f.name
                );
                d.connect_responses.push(rsp);
                reencoded += 1;
            }
            ">" => {
                let (h, req) = decode_request(&body).unwrap();
                if let Request::Unknown(n) = req {
                    assert_eq!(n, h.op_type);
                } else {
                    assert_eq!(
                        &encode_request(h.xid, &req),
                        frame,
                        "{}: request xid {}",
                        f.name,
                        h.xid
                    );
                    reencoded += 1;
                }
                if let Ok(op) = h.opcode() {
                    ops.insert(h.xid, op);
                }
                d.requests.push((h.xid, req));
            }
            "<" => {
                let xid = i32::from_be_bytes(body[..4].try_into().unwrap());
                let op = if xid == xid::NOTIFICATION {
                    OpCode::Notification
                } else {
                    *ops.get(&xid).unwrap_or(&OpCode::Error)
                };
                let (h, rsp) = decode_reply(&body, op).unwrap();
                assert_eq!(
                    &encode_reply(&h, &rsp),
                    frame,
                    "{}: reply xid {}",
                    f.name,
                    h.xid
                );
                reencoded += 1;
                d.replies.push((h, rsp));
            }
            other => panic!("{}: unknown direction {other}", f.name),
        }
    }
    (d, reencoded)
}

#[test]
fn every_captured_frame_decodes_and_reencodes() {
    let all = fixtures();
    assert!(
        all.len() >= 60,
        "expected the 60 captured steps, found {}",
        all.len()
    );
    let mut frames = 0;
    let mut reencoded = 0;
    let mut by_client: HashMap<&str, usize> = HashMap::new();
    for f in &all {
        let (_, n) = check_fixture(f);
        frames += f.frames.len();
        reencoded += n;
        *by_client
            .entry(f.name.split('-').next().unwrap_or(""))
            .or_default() += f.frames.len();
    }
    println!(
        "captured frames: {frames} decoded, {reencoded} re-encoded byte for byte; by client: {by_client:?}"
    );
    // Only the unknown-opcode request has no body to reproduce.
    assert_eq!(frames - reencoded, 1);
}

fn fixture(name: &str) -> Decoded {
    let all = fixtures();
    let f = all.iter().find(|f| f.name == name).unwrap();
    check_fixture(f).0
}

#[test]
fn connect_read_only_byte_follows_the_client() {
    for name in ["kazoo-connect", "zkcli-connect"] {
        let d = fixture(name);
        assert_eq!(d.connect_requests[0].read_only, Some(false));
        assert_eq!(d.connect_responses[0].read_only, Some(false));
        assert_eq!(d.connect_responses[0].passwd.len(), 16);
    }
    let d = fixture("raw-connect-no-readonly");
    assert_eq!(d.connect_requests[0].read_only, None);
    assert_eq!(d.connect_responses[0].read_only, None);
    // A reconnect carries the session id, password and last zxid seen.
    let d = fixture("zkcli-setwatches2-reconnect");
    assert_ne!(d.connect_requests[0].session_id, 0);
    assert_eq!(
        d.connect_requests[0].session_id,
        d.connect_responses[0].session_id
    );
    assert!(d.connect_requests[0].last_zxid_seen > 0);
}

#[test]
fn reserved_xids_are_what_real_clients_use() {
    let d = fixture("kazoo-ping");
    assert!(
        d.requests
            .iter()
            .all(|(x, r)| *x == xid::PING && *r == Request::Ping)
    );
    assert!(
        d.replies
            .iter()
            .all(|(h, r)| h.xid == xid::PING && h.err == 0 && *r == Response::Empty)
    );
    for name in ["kazoo-auth", "zkcli-addauth"] {
        let d = fixture(name);
        assert!(
            d.requests
                .iter()
                .any(|(x, r)| *x == xid::AUTH
                    && matches!(r, Request::Auth(a) if a.scheme == "digest"))
        );
        // ZooKeeper answers auth with zxid 0.
        assert!(
            d.replies
                .iter()
                .any(|(h, _)| h.xid == xid::AUTH && h.zxid == 0 && h.err == 0)
        );
    }
    // The Java 3.8 client sends setWatches / setWatches2 with an ordinary xid.
    let d = fixture("zkcli-setwatches-reconnect");
    assert!(
        d.requests
            .iter()
            .any(|(x, r)| *x > 0 && matches!(r, Request::SetWatches(s) if s.relative_zxid > 0))
    );
    let d = fixture("zkcli-setwatches2-reconnect");
    assert!(d.requests.iter().any(|(x, r)| *x > 0
        && matches!(r, Request::SetWatches2(s) if s.data_watches == ["/ttl"]
            && s.persistent_watches == ["/ctr", "/ttl"]
            && s.persistent_recursive_watches.is_empty())));
}

#[test]
fn notifications_carry_xid_and_zxid_minus_one() {
    let d = fixture("kazoo-setdata-notification");
    let (h, r) = &d.replies[0];
    assert_eq!((h.xid, h.zxid, h.err), (-1, -1, 0));
    match r {
        Response::Notification(e) => {
            assert_eq!((e.event_type, e.state, e.path.as_str()), (3, 3, "/cap"))
        }
        other => panic!("{other:?}"),
    }
    let d = fixture("kazoo-getchildren-watch-notification");
    let events: Vec<_> = d
        .replies
        .iter()
        .filter_map(|(_, r)| match r {
            Response::Notification(e) => Some((e.event_type, e.path.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec![(1, "/cap/later".to_string()), (4, "/cap".to_string())]
    );
}

#[test]
fn error_replies_and_failed_multi() {
    for (name, code) in [
        ("kazoo-create-nodeexists", ErrorCode::NodeExists),
        ("kazoo-exists-miss", ErrorCode::NoNode),
        ("kazoo-setdata-badversion", ErrorCode::BadVersion),
        ("kazoo-delete-notempty", ErrorCode::NotEmpty),
        ("raw-checkwatches", ErrorCode::NoWatcher),
    ] {
        let d = fixture(name);
        let (h, r) = &d.replies[0];
        assert_eq!((h.error_code(), r), (Ok(code), &Response::Empty), "{name}");
    }
    // A failed multi: header err 0; ops before the failure report 0, the
    // failing op its code, the ones after RUNTIMEINCONSISTENCY.
    let d = fixture("kazoo-multi-failing");
    let (h, r) = &d.replies[0];
    assert_eq!(h.err, 0);
    assert_eq!(
        r,
        &Response::Multi(vec![
            MultiResult::Error(0),
            MultiResult::Error(-103),
            MultiResult::Error(-2)
        ])
    );
    // Unknown opcode: UNIMPLEMENTED with zxid -1; ZooKeeper then closed the
    // connection (the exists sent after it got no reply).
    let d = fixture("raw-unknown-opcode");
    assert_eq!(d.requests[0].1, Request::Unknown(999));
    assert_eq!(d.replies.len(), 1);
    assert_eq!(
        (d.replies[0].0.err, d.replies[0].0.zxid),
        (ErrorCode::Unimplemented.code(), -1)
    );
}

#[test]
fn whoami_and_multiread() {
    let d = fixture("zkcli-whoami-authed");
    match &d.replies[0].1 {
        Response::WhoAmI(infos) => {
            let pairs: Vec<_> = infos
                .iter()
                .map(|c| (c.auth_scheme.as_str(), c.user.as_str()))
                .collect();
            assert_eq!(pairs, vec![("digest", "user"), ("ip", "127.0.0.1")]);
        }
        other => panic!("{other:?}"),
    }
    let d = fixture("raw-multiread");
    match &d.replies[0].1 {
        Response::Multi(r) => {
            assert!(matches!(r[0], MultiResult::GetData(_)));
            assert!(matches!(r[1], MultiResult::GetChildren(_)));
            assert_eq!(r[2], MultiResult::Error(ErrorCode::NoNode.code()));
        }
        other => panic!("{other:?}"),
    }
}
