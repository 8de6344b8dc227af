//! Whole messages: a request frame is a [`RequestHeader`] then the body its
//! opcode names ([`Request`]); a reply frame is a [`ReplyHeader`] then the
//! body of the request it answers ([`Response`]), or a [`WatcherEvent`] when
//! the xid is -1. Also the multi op and result lists (`MultiHeader`-separated,
//! ended by a `done` header). Functions here take and produce frame bodies
//! (no length prefix) for decoding and whole frames for encoding.

use crate::codes::{OpCode, xid};
use crate::error::{DecodeError, JuteFault};
use crate::frame::frame_with;
use crate::jute::{self, JResult, JuteError};
use crate::records::{
    AddWatchRequest, AuthPacket, CheckVersionRequest, ClientInfo, ConnectRequest, ConnectResponse,
    Create2Response, CreateRequest, CreateResponse, CreateTtlRequest, DeleteRequest, Field,
    GetAclResponse, GetChildren2Response, GetChildrenResponse, GetDataResponse,
    GetEphemeralsResponse, MultiHeader, PathRequest, PathWatchRequest, Record, ReplyHeader,
    RequestHeader, SetAclRequest, SetDataRequest, SetWatches, SetWatches2, Stat, StatResponse,
    WatcherEvent, WatchesRequest, WhoAmIResponse,
};

/// One op of a multi or multiRead request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    /// create, create2 or createContainer (`op` says which; the body is the same).
    Create {
        /// One of [`OpCode::Create`], [`OpCode::Create2`], [`OpCode::CreateContainer`].
        op: OpCode,
        /// The create body.
        request: CreateRequest,
    },
    /// createTTL.
    CreateTtl(CreateTtlRequest),
    /// delete.
    Delete(DeleteRequest),
    /// setData.
    SetData(SetDataRequest),
    /// check.
    Check(CheckVersionRequest),
    /// getChildren (multiRead; the watch flag is sent but ignored by ZooKeeper).
    GetChildren(PathWatchRequest),
    /// getData (multiRead).
    GetData(PathWatchRequest),
}

impl MultiOp {
    /// The opcode written in this op's `MultiHeader`.
    pub fn opcode(&self) -> OpCode {
        match self {
            MultiOp::Create { op, .. } => *op,
            MultiOp::CreateTtl(_) => OpCode::CreateTtl,
            MultiOp::Delete(_) => OpCode::Delete,
            MultiOp::SetData(_) => OpCode::SetData,
            MultiOp::Check(_) => OpCode::Check,
            MultiOp::GetChildren(_) => OpCode::GetChildren,
            MultiOp::GetData(_) => OpCode::GetData,
        }
    }

    fn parse(op_type: i32, i: &[u8]) -> JResult<'_, MultiOp> {
        let op = OpCode::try_from(op_type)
            .map_err(|_| nom::Err::Failure(JuteError(JuteFault::BadMultiOp(op_type))))?;
        Ok(match op {
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => {
                let (i, request) = CreateRequest::parse_field(i)?;
                (i, MultiOp::Create { op, request })
            }
            OpCode::CreateTtl => wrap(i, MultiOp::CreateTtl)?,
            OpCode::Delete => wrap(i, MultiOp::Delete)?,
            OpCode::SetData => wrap(i, MultiOp::SetData)?,
            OpCode::Check => wrap(i, MultiOp::Check)?,
            OpCode::GetChildren => wrap(i, MultiOp::GetChildren)?,
            OpCode::GetData => wrap(i, MultiOp::GetData)?,
            _ => return Err(nom::Err::Failure(JuteError(JuteFault::BadMultiOp(op_type)))),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            MultiOp::Create { request, .. } => request.write_field(out),
            MultiOp::CreateTtl(r) => r.write_field(out),
            MultiOp::Delete(r) => r.write_field(out),
            MultiOp::SetData(r) => r.write_field(out),
            MultiOp::Check(r) => r.write_field(out),
            MultiOp::GetChildren(r) | MultiOp::GetData(r) => r.write_field(out),
        }
    }
}

fn wrap<R: Field, T>(i: &[u8], f: impl FnOnce(R) -> T) -> JResult<'_, T> {
    let (i, r) = R::parse_field(i)?;
    Ok((i, f(r)))
}

/// The `MultiHeader` that ends an op or result list.
const DONE: MultiHeader = MultiHeader {
    op_type: -1,
    done: true,
    err: -1,
};

fn parse_multi_ops(mut i: &[u8]) -> JResult<'_, Vec<MultiOp>> {
    let mut ops = Vec::new();
    loop {
        let (rest, h) = MultiHeader::parse_field(i)?;
        if h.done {
            return Ok((rest, ops));
        }
        let (rest, op) = MultiOp::parse(h.op_type, rest)?;
        ops.push(op);
        i = rest;
    }
}

fn write_multi_ops(out: &mut Vec<u8>, ops: &[MultiOp]) {
    for op in ops {
        MultiHeader {
            op_type: op.opcode().code(),
            done: false,
            err: -1,
        }
        .write_field(out);
        op.write(out);
    }
    DONE.write_field(out);
}

/// One result of a multi or multiRead response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// create: the created path.
    Create(CreateResponse),
    /// create2, createTTL, createContainer: path and stat (written as type create2).
    Create2(Create2Response),
    /// delete (no body).
    Delete,
    /// setData: the new stat.
    SetData(StatResponse),
    /// check (no body).
    Check,
    /// getChildren (multiRead).
    GetChildren(GetChildrenResponse),
    /// getData (multiRead).
    GetData(GetDataResponse),
    /// An error result (type -1): the header and body both carry `err`. In a
    /// failed multi, ops before the failing one report 0, the failing op its
    /// code, and later ops RUNTIMEINCONSISTENCY (-2).
    Error(i32),
}

impl MultiResult {
    fn header(&self) -> MultiHeader {
        let (op, err) = match self {
            MultiResult::Create(_) => (OpCode::Create, 0),
            MultiResult::Create2(_) => (OpCode::Create2, 0),
            MultiResult::Delete => (OpCode::Delete, 0),
            MultiResult::SetData(_) => (OpCode::SetData, 0),
            MultiResult::Check => (OpCode::Check, 0),
            MultiResult::GetChildren(_) => (OpCode::GetChildren, 0),
            MultiResult::GetData(_) => (OpCode::GetData, 0),
            MultiResult::Error(e) => (OpCode::Error, *e),
        };
        MultiHeader {
            op_type: op.code(),
            done: false,
            err,
        }
    }

    fn parse(op_type: i32, i: &[u8]) -> JResult<'_, MultiResult> {
        let bad = || nom::Err::Failure(JuteError(JuteFault::BadMultiOp(op_type)));
        Ok(match OpCode::try_from(op_type).map_err(|_| bad())? {
            OpCode::Create => wrap(i, MultiResult::Create)?,
            OpCode::Create2 => wrap(i, MultiResult::Create2)?,
            OpCode::Delete => (i, MultiResult::Delete),
            OpCode::SetData => wrap(i, MultiResult::SetData)?,
            OpCode::Check => (i, MultiResult::Check),
            OpCode::GetChildren => wrap(i, MultiResult::GetChildren)?,
            OpCode::GetData => wrap(i, MultiResult::GetData)?,
            OpCode::Error => {
                let (i, err) = jute::int(i)?;
                (i, MultiResult::Error(err))
            }
            _ => return Err(bad()),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        self.header().write_field(out);
        match self {
            MultiResult::Create(r) => r.write_field(out),
            MultiResult::Create2(r) => r.write_field(out),
            MultiResult::SetData(r) => r.write_field(out),
            MultiResult::GetChildren(r) => r.write_field(out),
            MultiResult::GetData(r) => r.write_field(out),
            MultiResult::Error(e) => jute::put_int(out, *e),
            MultiResult::Delete | MultiResult::Check => {}
        }
    }
}

fn parse_multi_results(mut i: &[u8]) -> JResult<'_, Vec<MultiResult>> {
    let mut results = Vec::new();
    loop {
        let (rest, h) = MultiHeader::parse_field(i)?;
        if h.done {
            return Ok((rest, results));
        }
        let (rest, r) = MultiResult::parse(h.op_type, rest)?;
        results.push(r);
        i = rest;
    }
}

/// A decoded request body, by opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// create (1).
    Create(CreateRequest),
    /// create2 (15): like create, answered with the stat too.
    Create2(CreateRequest),
    /// createContainer (19).
    CreateContainer(CreateRequest),
    /// createTTL (21).
    CreateTtl(CreateTtlRequest),
    /// delete (2).
    Delete(DeleteRequest),
    /// exists (3).
    Exists(PathWatchRequest),
    /// getData (4).
    GetData(PathWatchRequest),
    /// setData (5).
    SetData(SetDataRequest),
    /// getACL (6).
    GetAcl(PathRequest),
    /// setACL (7).
    SetAcl(SetAclRequest),
    /// getChildren (8).
    GetChildren(PathWatchRequest),
    /// getChildren2 (12).
    GetChildren2(PathWatchRequest),
    /// getAllChildrenNumber (104).
    GetAllChildrenNumber(PathRequest),
    /// getEphemerals (103); the path is a prefix.
    GetEphemerals(PathRequest),
    /// sync (9).
    Sync(PathRequest),
    /// check (13) outside a multi.
    Check(CheckVersionRequest),
    /// multi (14).
    Multi(Vec<MultiOp>),
    /// multiRead (22).
    MultiRead(Vec<MultiOp>),
    /// setWatches (101).
    SetWatches(SetWatches),
    /// setWatches2 (105).
    SetWatches2(SetWatches2),
    /// addWatch (106).
    AddWatch(AddWatchRequest),
    /// removeWatches (18).
    RemoveWatches(WatchesRequest),
    /// checkWatches (17).
    CheckWatches(WatchesRequest),
    /// whoAmI (107), no body.
    WhoAmI,
    /// auth (100), sent with xid -4.
    Auth(AuthPacket),
    /// ping (11), sent with xid -2, no body.
    Ping,
    /// closeSession (-11), no body.
    CloseSession,
    /// An opcode this codec has no body for: unknown to ZooKeeper, or one
    /// it knows but Concord does not serve (sasl, reconfig, deleteContainer,
    /// createSession, ...). ZooKeeper 3.8 answers an unknown opcode with
    /// UNIMPLEMENTED (-6) and zxid -1, then closes the connection.
    Unknown(i32),
}

impl Request {
    /// The opcode this request is sent with.
    pub fn op_type(&self) -> i32 {
        let op = match self {
            Request::Create(_) => OpCode::Create,
            Request::Create2(_) => OpCode::Create2,
            Request::CreateContainer(_) => OpCode::CreateContainer,
            Request::CreateTtl(_) => OpCode::CreateTtl,
            Request::Delete(_) => OpCode::Delete,
            Request::Exists(_) => OpCode::Exists,
            Request::GetData(_) => OpCode::GetData,
            Request::SetData(_) => OpCode::SetData,
            Request::GetAcl(_) => OpCode::GetAcl,
            Request::SetAcl(_) => OpCode::SetAcl,
            Request::GetChildren(_) => OpCode::GetChildren,
            Request::GetChildren2(_) => OpCode::GetChildren2,
            Request::GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            Request::GetEphemerals(_) => OpCode::GetEphemerals,
            Request::Sync(_) => OpCode::Sync,
            Request::Check(_) => OpCode::Check,
            Request::Multi(_) => OpCode::Multi,
            Request::MultiRead(_) => OpCode::MultiRead,
            Request::SetWatches(_) => OpCode::SetWatches,
            Request::SetWatches2(_) => OpCode::SetWatches2,
            Request::AddWatch(_) => OpCode::AddWatch,
            Request::RemoveWatches(_) => OpCode::RemoveWatches,
            Request::CheckWatches(_) => OpCode::CheckWatches,
            Request::WhoAmI => OpCode::WhoAmI,
            Request::Auth(_) => OpCode::Auth,
            Request::Ping => OpCode::Ping,
            Request::CloseSession => OpCode::CloseSession,
            Request::Unknown(n) => return *n,
        };
        op.code()
    }

    fn parse(op_type: i32, i: &[u8]) -> JResult<'_, Request> {
        let Ok(op) = OpCode::try_from(op_type) else {
            return Ok((i, Request::Unknown(op_type)));
        };
        Ok(match op {
            OpCode::Create => wrap(i, Request::Create)?,
            OpCode::Create2 => wrap(i, Request::Create2)?,
            OpCode::CreateContainer => wrap(i, Request::CreateContainer)?,
            OpCode::CreateTtl => wrap(i, Request::CreateTtl)?,
            OpCode::Delete => wrap(i, Request::Delete)?,
            OpCode::Exists => wrap(i, Request::Exists)?,
            OpCode::GetData => wrap(i, Request::GetData)?,
            OpCode::SetData => wrap(i, Request::SetData)?,
            OpCode::GetAcl => wrap(i, Request::GetAcl)?,
            OpCode::SetAcl => wrap(i, Request::SetAcl)?,
            OpCode::GetChildren => wrap(i, Request::GetChildren)?,
            OpCode::GetChildren2 => wrap(i, Request::GetChildren2)?,
            OpCode::GetAllChildrenNumber => wrap(i, Request::GetAllChildrenNumber)?,
            OpCode::GetEphemerals => wrap(i, Request::GetEphemerals)?,
            OpCode::Sync => wrap(i, Request::Sync)?,
            OpCode::Check => wrap(i, Request::Check)?,
            OpCode::Multi => {
                let (i, ops) = parse_multi_ops(i)?;
                (i, Request::Multi(ops))
            }
            OpCode::MultiRead => {
                let (i, ops) = parse_multi_ops(i)?;
                (i, Request::MultiRead(ops))
            }
            OpCode::SetWatches => wrap(i, Request::SetWatches)?,
            OpCode::SetWatches2 => wrap(i, Request::SetWatches2)?,
            OpCode::AddWatch => wrap(i, Request::AddWatch)?,
            OpCode::RemoveWatches => wrap(i, Request::RemoveWatches)?,
            OpCode::CheckWatches => wrap(i, Request::CheckWatches)?,
            OpCode::WhoAmI => (i, Request::WhoAmI),
            OpCode::Auth => wrap(i, Request::Auth)?,
            OpCode::Ping => (i, Request::Ping),
            OpCode::CloseSession => (i, Request::CloseSession),
            OpCode::Notification
            | OpCode::Reconfig
            | OpCode::DeleteContainer
            | OpCode::Sasl
            | OpCode::CreateSession
            | OpCode::Error => (i, Request::Unknown(op_type)),
        })
    }

    /// Appends the body (no header).
    pub fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            Request::Create(r) | Request::Create2(r) | Request::CreateContainer(r) => {
                r.write_field(out)
            }
            Request::CreateTtl(r) => r.write_field(out),
            Request::Delete(r) => r.write_field(out),
            Request::Exists(r)
            | Request::GetData(r)
            | Request::GetChildren(r)
            | Request::GetChildren2(r) => r.write_field(out),
            Request::SetData(r) => r.write_field(out),
            Request::GetAcl(r)
            | Request::GetAllChildrenNumber(r)
            | Request::GetEphemerals(r)
            | Request::Sync(r) => r.write_field(out),
            Request::SetAcl(r) => r.write_field(out),
            Request::Check(r) => r.write_field(out),
            Request::Multi(ops) | Request::MultiRead(ops) => write_multi_ops(out, ops),
            Request::SetWatches(r) => r.write_field(out),
            Request::SetWatches2(r) => r.write_field(out),
            Request::AddWatch(r) => r.write_field(out),
            Request::RemoveWatches(r) | Request::CheckWatches(r) => r.write_field(out),
            Request::Auth(r) => r.write_field(out),
            Request::WhoAmI | Request::Ping | Request::CloseSession | Request::Unknown(_) => {}
        }
    }
}

/// Decodes only the request header of a frame body (to answer a body that does not
/// decode with the request's xid).
pub fn decode_header(body: &[u8]) -> Result<RequestHeader, DecodeError> {
    let (_, header) = jute::run(RequestHeader::NAME, body, RequestHeader::parse_field)?;
    Ok(header)
}

/// Decodes a request frame body (after the connect handshake). An opcode
/// without a decoder is `Ok` with [`Request::Unknown`], so the caller still
/// has the xid to answer.
pub fn decode_request(body: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
    let (rest, header) = jute::run(RequestHeader::NAME, body, RequestHeader::parse_field)?;
    let name = OpCode::try_from(header.op_type)
        .map(op_record_name)
        .unwrap_or("request");
    let (_, request) = jute::run(name, rest, |i| Request::parse(header.op_type, i))?;
    Ok((header, request))
}

/// Encodes a whole request frame (length prefix, header, body).
pub fn encode_request(xid: i32, request: &Request) -> Vec<u8> {
    frame_with(|out| {
        RequestHeader {
            xid,
            op_type: request.op_type(),
        }
        .write_field(out);
        request.write_body(out);
    })
}

fn op_record_name(op: OpCode) -> &'static str {
    match op {
        OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => "CreateRequest",
        OpCode::CreateTtl => "CreateTTLRequest",
        OpCode::Delete => "DeleteRequest",
        OpCode::Exists => "ExistsRequest",
        OpCode::GetData => "GetDataRequest",
        OpCode::SetData => "SetDataRequest",
        OpCode::GetAcl => "GetACLRequest",
        OpCode::SetAcl => "SetACLRequest",
        OpCode::GetChildren => "GetChildrenRequest",
        OpCode::GetChildren2 => "GetChildren2Request",
        OpCode::GetAllChildrenNumber => "GetAllChildrenNumberRequest",
        OpCode::GetEphemerals => "GetEphemeralsRequest",
        OpCode::Sync => "SyncRequest",
        OpCode::Check => "CheckVersionRequest",
        OpCode::Multi | OpCode::MultiRead => "MultiOperationRecord",
        OpCode::SetWatches => "SetWatches",
        OpCode::SetWatches2 => "SetWatches2",
        OpCode::AddWatch => "AddWatchRequest",
        OpCode::RemoveWatches => "RemoveWatchesRequest",
        OpCode::CheckWatches => "CheckWatchesRequest",
        OpCode::Auth => "AuthPacket",
        _ => "request",
    }
}

/// A decoded reply body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// No body: delete, setWatches(2), removeWatches, checkWatches, auth,
    /// ping, closeSession, and every reply whose header carries an error.
    Empty,
    /// create.
    Create(CreateResponse),
    /// create2, createContainer, createTTL.
    Create2(Create2Response),
    /// exists, setData, setACL, lone check: a stat.
    Stat(Stat),
    /// getData.
    GetData(GetDataResponse),
    /// getACL.
    GetAcl(GetAclResponse),
    /// getChildren.
    GetChildren(GetChildrenResponse),
    /// getChildren2.
    GetChildren2(GetChildren2Response),
    /// sync: the path synced.
    Sync(PathRequest),
    /// getAllChildrenNumber.
    AllChildrenNumber(i32),
    /// getEphemerals.
    Ephemerals(GetEphemeralsResponse),
    /// multi and multiRead (also when an op failed: the header err is then
    /// still 0 and the failure is in the results).
    Multi(Vec<MultiResult>),
    /// addWatch: ZooKeeper answers with an ErrorResponse body holding 0.
    AddWatch(i32),
    /// whoAmI.
    WhoAmI(Vec<ClientInfo>),
    /// A watch notification (xid -1).
    Notification(WatcherEvent),
}

impl Response {
    /// Appends the body (no header).
    pub fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            Response::Empty => {}
            Response::Create(r) => r.write_field(out),
            Response::Create2(r) => r.write_field(out),
            Response::Stat(s) => s.write_field(out),
            Response::GetData(r) => r.write_field(out),
            Response::GetAcl(r) => r.write_field(out),
            Response::GetChildren(r) => r.write_field(out),
            Response::GetChildren2(r) => r.write_field(out),
            Response::Sync(r) => r.write_field(out),
            Response::AllChildrenNumber(n) | Response::AddWatch(n) => jute::put_int(out, *n),
            Response::Ephemerals(r) => r.write_field(out),
            Response::Multi(results) => {
                for r in results {
                    r.write(out);
                }
                DONE.write_field(out);
            }
            Response::WhoAmI(infos) => WhoAmIResponse {
                client_info: infos.clone(),
            }
            .write_field(out),
            Response::Notification(e) => e.write_field(out),
        }
    }

    fn parse(op: OpCode, i: &[u8]) -> JResult<'_, Response> {
        Ok(match op {
            OpCode::Create => wrap(i, Response::Create)?,
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                wrap(i, Response::Create2)?
            }
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl | OpCode::Check => {
                wrap(i, Response::Stat)?
            }
            OpCode::GetData => wrap(i, Response::GetData)?,
            OpCode::GetAcl => wrap(i, Response::GetAcl)?,
            OpCode::GetChildren => wrap(i, Response::GetChildren)?,
            OpCode::GetChildren2 => wrap(i, Response::GetChildren2)?,
            OpCode::Sync => wrap(i, Response::Sync)?,
            OpCode::GetAllChildrenNumber => wrap(i, Response::AllChildrenNumber)?,
            OpCode::GetEphemerals => wrap(i, Response::Ephemerals)?,
            OpCode::Multi | OpCode::MultiRead => {
                let (i, results) = parse_multi_results(i)?;
                (i, Response::Multi(results))
            }
            OpCode::AddWatch => wrap(i, Response::AddWatch)?,
            OpCode::WhoAmI => {
                let (i, r) = WhoAmIResponse::parse_field(i)?;
                (i, Response::WhoAmI(r.client_info))
            }
            OpCode::Notification => wrap(i, Response::Notification)?,
            _ => (i, Response::Empty),
        })
    }
}

/// Decodes a reply frame body (client side and tests). `op` is the opcode of
/// the request with this xid; xid -1 is always a notification. A reply whose
/// header carries an error and no body is [`Response::Empty`].
pub fn decode_reply(body: &[u8], op: OpCode) -> Result<(ReplyHeader, Response), DecodeError> {
    let (rest, header) = jute::run(ReplyHeader::NAME, body, ReplyHeader::parse_field)?;
    let op = if header.xid == xid::NOTIFICATION {
        OpCode::Notification
    } else {
        op
    };
    if header.err != 0 && rest.is_empty() {
        return Ok((header, Response::Empty));
    }
    let (_, response) = jute::run(op_reply_name(op), rest, |i| Response::parse(op, i))?;
    Ok((header, response))
}

fn op_reply_name(op: OpCode) -> &'static str {
    match op {
        OpCode::Notification => "WatcherEvent",
        OpCode::Multi | OpCode::MultiRead => "MultiResponse",
        _ => "response",
    }
}

/// Encodes a whole reply frame (length prefix, header, body).
pub fn encode_reply(header: &ReplyHeader, response: &Response) -> Vec<u8> {
    frame_with(|out| {
        header.write_field(out);
        response.write_body(out);
    })
}

/// Encodes a notification frame: xid -1, zxid -1, err 0, then the event, as
/// ZooKeeper sends them.
pub fn encode_notification(event: &WatcherEvent) -> Vec<u8> {
    let header = ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid: -1,
        err: 0,
    };
    encode_reply(&header, &Response::Notification(event.clone()))
}

/// Decodes the first frame body of a connection.
pub fn decode_connect_request(body: &[u8]) -> Result<ConnectRequest, DecodeError> {
    ConnectRequest::decode(body)
}

/// Encodes a whole connect-request frame (client side and tests).
pub fn encode_connect_request(request: &ConnectRequest) -> Vec<u8> {
    frame_with(|out| request.write_field(out))
}

/// Decodes a connect-response frame body (client side and tests).
pub fn decode_connect_response(body: &[u8]) -> Result<ConnectResponse, DecodeError> {
    ConnectResponse::decode(body)
}

/// Encodes a whole connect-response frame; the readOnly byte is written only
/// if `response.read_only` is `Some` (see [`ConnectResponse::answering`]).
pub fn encode_connect_response(response: &ConnectResponse) -> Vec<u8> {
    frame_with(|out| response.write_field(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Acl, Id};

    fn body(frame: &[u8]) -> &[u8] {
        &frame[4..]
    }

    fn open_acl() -> Vec<Acl> {
        vec![Acl {
            perms: 31,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    }

    #[test]
    fn every_request_round_trips() {
        let cr = CreateRequest {
            path: "/a".into(),
            data: Some(b"d".to_vec()),
            acl: open_acl(),
            flags: 3,
        };
        let pw = PathWatchRequest {
            path: "/a".into(),
            watch: true,
        };
        let p = PathRequest { path: "/a".into() };
        let wr = WatchesRequest {
            path: "/a".into(),
            watcher_type: 3,
        };
        let ttl = CreateTtlRequest {
            path: "/t".into(),
            data: None,
            acl: open_acl(),
            flags: 5,
            ttl: 1000,
        };
        let requests = vec![
            Request::Create(cr.clone()),
            Request::Create2(cr.clone()),
            Request::CreateContainer(cr.clone()),
            Request::CreateTtl(ttl.clone()),
            Request::Delete(DeleteRequest {
                path: "/a".into(),
                version: -1,
            }),
            Request::Exists(pw.clone()),
            Request::GetData(pw.clone()),
            Request::SetData(SetDataRequest {
                path: "/a".into(),
                data: None,
                version: 2,
            }),
            Request::GetAcl(p.clone()),
            Request::SetAcl(SetAclRequest {
                path: "/a".into(),
                acl: open_acl(),
                version: 0,
            }),
            Request::GetChildren(pw.clone()),
            Request::GetChildren2(pw.clone()),
            Request::GetAllChildrenNumber(p.clone()),
            Request::GetEphemerals(p.clone()),
            Request::Sync(p.clone()),
            Request::Check(CheckVersionRequest {
                path: "/a".into(),
                version: 1,
            }),
            Request::Multi(vec![
                MultiOp::Create {
                    op: OpCode::Create2,
                    request: cr.clone(),
                },
                MultiOp::CreateTtl(ttl),
                MultiOp::Delete(DeleteRequest {
                    path: "/a".into(),
                    version: 0,
                }),
                MultiOp::SetData(SetDataRequest {
                    path: "/a".into(),
                    data: Some(vec![]),
                    version: -1,
                }),
                MultiOp::Check(CheckVersionRequest {
                    path: "/a".into(),
                    version: 1,
                }),
            ]),
            Request::MultiRead(vec![
                MultiOp::GetData(pw.clone()),
                MultiOp::GetChildren(pw.clone()),
            ]),
            Request::SetWatches(SetWatches {
                relative_zxid: 7,
                data_watches: vec!["/a".into()],
                exist_watches: vec![],
                child_watches: vec!["/".into()],
            }),
            Request::SetWatches2(SetWatches2 {
                relative_zxid: 7,
                persistent_watches: vec!["/p".into()],
                ..Default::default()
            }),
            Request::AddWatch(AddWatchRequest {
                path: "/a".into(),
                mode: 1,
            }),
            Request::RemoveWatches(wr.clone()),
            Request::CheckWatches(wr),
            Request::WhoAmI,
            Request::Auth(AuthPacket {
                auth_type: 0,
                scheme: "digest".into(),
                auth: Some(b"u:p".to_vec()),
            }),
            Request::Ping,
            Request::CloseSession,
            Request::Unknown(999),
        ];
        for (n, r) in requests.into_iter().enumerate() {
            let xid = i32::try_from(n).unwrap();
            let frame = encode_request(xid, &r);
            let (h, back) = decode_request(body(&frame)).unwrap();
            assert_eq!((h.xid, h.op_type), (xid, r.op_type()));
            assert_eq!(back, r);
        }
    }

    #[test]
    fn unknown_and_unserved_opcodes_are_not_errors() {
        let frame = frame_with(|o| {
            RequestHeader {
                xid: 5,
                op_type: 999,
            }
            .write_field(o)
        });
        let (h, r) = decode_request(body(&frame)).unwrap();
        assert_eq!((h.xid, r), (5, Request::Unknown(999)));
        let frame = frame_with(|o| {
            RequestHeader {
                xid: 6,
                op_type: OpCode::Sasl.code(),
            }
            .write_field(o)
        });
        assert_eq!(
            decode_request(body(&frame)).unwrap().1,
            Request::Unknown(102)
        );
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        // A truncated header.
        assert!(matches!(
            decode_request(&[0, 0, 0]),
            Err(DecodeError::Malformed {
                record: "RequestHeader",
                fault: JuteFault::Truncated
            })
        ));
        // A create whose path length runs past the frame.
        let frame = frame_with(|o| {
            RequestHeader { xid: 1, op_type: 1 }.write_field(o);
            jute::put_int(o, 100);
        });
        assert_eq!(
            decode_request(body(&frame)).unwrap_err().to_string(),
            "malformed CreateRequest: length 100 runs past the end of the frame"
        );
        // A multi with an op type that cannot appear there.
        let frame = frame_with(|o| {
            RequestHeader {
                xid: 1,
                op_type: 14,
            }
            .write_field(o);
            MultiHeader {
                op_type: OpCode::Sync.code(),
                done: false,
                err: -1,
            }
            .write_field(o);
        });
        assert!(matches!(
            decode_request(body(&frame)),
            Err(DecodeError::Malformed {
                fault: JuteFault::BadMultiOp(9),
                ..
            })
        ));
        // A multi that never says done.
        let frame = frame_with(|o| {
            RequestHeader {
                xid: 1,
                op_type: 14,
            }
            .write_field(o)
        });
        assert!(decode_request(body(&frame)).is_err());
    }

    #[test]
    fn every_response_round_trips() {
        let stat = Stat {
            czxid: 1,
            mzxid: 2,
            pzxid: 3,
            version: 4,
            ..Default::default()
        };
        let cases = vec![
            (
                OpCode::Create,
                Response::Create(CreateResponse { path: "/a".into() }),
            ),
            (
                OpCode::Create2,
                Response::Create2(Create2Response {
                    path: "/a".into(),
                    stat: stat.clone(),
                }),
            ),
            (OpCode::Exists, Response::Stat(stat.clone())),
            (
                OpCode::GetData,
                Response::GetData(GetDataResponse {
                    data: None,
                    stat: stat.clone(),
                }),
            ),
            (
                OpCode::GetAcl,
                Response::GetAcl(GetAclResponse {
                    acl: open_acl(),
                    stat: stat.clone(),
                }),
            ),
            (
                OpCode::GetChildren,
                Response::GetChildren(GetChildrenResponse {
                    children: vec!["x".into()],
                }),
            ),
            (
                OpCode::GetChildren2,
                Response::GetChildren2(GetChildren2Response {
                    children: vec![],
                    stat: stat.clone(),
                }),
            ),
            (
                OpCode::Sync,
                Response::Sync(PathRequest { path: "/a".into() }),
            ),
            (OpCode::GetAllChildrenNumber, Response::AllChildrenNumber(3)),
            (
                OpCode::GetEphemerals,
                Response::Ephemerals(GetEphemeralsResponse {
                    ephemerals: vec!["/e".into()],
                }),
            ),
            (
                OpCode::Multi,
                Response::Multi(vec![
                    MultiResult::Create(CreateResponse { path: "/a".into() }),
                    MultiResult::Create2(Create2Response {
                        path: "/b".into(),
                        stat: stat.clone(),
                    }),
                    MultiResult::Delete,
                    MultiResult::SetData(StatResponse { stat: stat.clone() }),
                    MultiResult::Check,
                    MultiResult::Error(-103),
                ]),
            ),
            (
                OpCode::MultiRead,
                Response::Multi(vec![
                    MultiResult::GetData(GetDataResponse {
                        data: Some(b"x".to_vec()),
                        stat,
                    }),
                    MultiResult::GetChildren(GetChildrenResponse {
                        children: vec!["c".into()],
                    }),
                ]),
            ),
            (OpCode::AddWatch, Response::AddWatch(0)),
            (
                OpCode::WhoAmI,
                Response::WhoAmI(vec![ClientInfo {
                    auth_scheme: "ip".into(),
                    user: "127.0.0.1".into(),
                }]),
            ),
            (OpCode::Delete, Response::Empty),
            (OpCode::Ping, Response::Empty),
        ];
        for (op, r) in cases {
            let h = ReplyHeader {
                xid: 9,
                zxid: 10,
                err: 0,
            };
            let frame = encode_reply(&h, &r);
            assert_eq!(decode_reply(body(&frame), op).unwrap(), (h, r));
        }
    }

    #[test]
    fn error_replies_have_no_body_and_notifications_use_xid_minus_one() {
        let h = ReplyHeader {
            xid: 3,
            zxid: 8,
            err: -101,
        };
        let frame = encode_reply(&h, &Response::Empty);
        assert_eq!(frame.len(), 20);
        assert_eq!(
            decode_reply(body(&frame), OpCode::GetData).unwrap(),
            (h, Response::Empty)
        );

        let ev = WatcherEvent {
            event_type: 3,
            state: 3,
            path: "/a".into(),
        };
        let frame = encode_notification(&ev);
        let (h, r) = decode_reply(body(&frame), OpCode::Ping).unwrap();
        assert_eq!((h.xid, h.zxid, r), (-1, -1, Response::Notification(ev)));
    }
}
