//! The jute records of `zookeeper.jute` that clients and servers exchange:
//! headers, connect handshake, every request and response body, `Stat`,
//! `ACL`/`Id`, `WatcherEvent` and `ClientInfo`. Field order is exactly
//! ZooKeeper's. Each record implements [`Record`] (parse/write); the enums
//! that put records together per opcode live in `message.rs`.

use crate::codes::{ErrorCode, OpCode, UnknownValue};
use crate::error::DecodeError;
use crate::jute::{self, JResult};

/// A value that can be read and written as a jute field.
pub trait Field: Sized {
    /// Reads the field.
    fn parse_field(i: &[u8]) -> JResult<'_, Self>;
    /// Appends the field.
    fn write_field(&self, out: &mut Vec<u8>);
}

/// A named jute record.
pub trait Record: Field {
    /// The record's name in `zookeeper.jute`, used in error messages.
    const NAME: &'static str;

    /// Decodes the record from a body; trailing bytes are ignored, as
    /// ZooKeeper ignores them.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        jute::run(Self::NAME, bytes, Self::parse_field).map(|(_, v)| v)
    }

    /// Encodes the record alone (no frame length).
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_field(&mut out);
        out
    }
}

impl Field for i32 {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        jute::int(i)
    }
    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_int(out, *self);
    }
}

impl Field for i64 {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        jute::long(i)
    }
    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_long(out, *self);
    }
}

impl Field for bool {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        jute::boolean(i)
    }
    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_bool(out, *self);
    }
}

/// `ustring`: a null string reads as empty and empty writes as length 0.
impl Field for String {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        jute::string(i)
    }
    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_string(out, self);
    }
}

/// `buffer`, keeping null (`None`, length -1) apart from empty: ZooKeeper
/// stores and returns a node created with null data as null.
impl Field for Option<Vec<u8>> {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        jute::buffer(i)
    }
    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_buffer(out, self.as_deref());
    }
}

/// `vector<T>`: a null vector reads as empty and empty writes as count 0.
impl<T: Field> Field for Vec<T> {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        jute::list(T::parse_field)(i)
    }
    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_vector(out, Some(self.as_slice()), |o, v| v.write_field(o));
    }
}

/// Declares a plain record: a struct whose fields are read and written in order.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident = $jute:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Field for $name {
            #[allow(unused_variables)]
            fn parse_field(i: &[u8]) -> JResult<'_, Self> {
                $( let (i, $field) = <$ty as Field>::parse_field(i)?; )*
                Ok((i, $name { $($field),* }))
            }

            #[allow(unused_variables)]
            fn write_field(&self, out: &mut Vec<u8>) {
                $( Field::write_field(&self.$field, out); )*
            }
        }

        impl Record for $name {
            const NAME: &'static str = $jute;
        }
    };
}

record! {
    /// An identity: `scheme` (world, auth, digest, ip, ...) and its `id`.
    Id = "Id" { scheme: String, id: String }
}

record! {
    /// One ACL entry: permission bits (see [`crate::codes::perms`]) for an [`Id`].
    Acl = "ACL" { perms: i32, id: Id }
}

record! {
    /// A znode's metadata, in ZooKeeper's field order.
    Stat = "Stat" {
        /// zxid of the create.
        czxid: i64,
        /// zxid of the last data change.
        mzxid: i64,
        /// Create time, ms since the epoch.
        ctime: i64,
        /// Last modification time, ms since the epoch.
        mtime: i64,
        /// Number of data changes.
        version: i32,
        /// Number of child changes.
        cversion: i32,
        /// Number of ACL changes.
        aversion: i32,
        /// Session id of the owner if ephemeral, else 0.
        ephemeral_owner: i64,
        /// Length of the data.
        data_length: i32,
        /// Number of children.
        num_children: i32,
        /// zxid of the last child change.
        pzxid: i64,
    }
}

record! {
    /// An authenticated identity of the session, as whoAmI reports it.
    ClientInfo = "ClientInfo" { auth_scheme: String, user: String }
}

record! {
    /// Precedes every request body except the connect request.
    RequestHeader = "RequestHeader" {
        /// Client-chosen id, echoed in the reply; see [`crate::codes::xid`].
        xid: i32,
        /// The opcode as sent; see [`RequestHeader::opcode`].
        op_type: i32,
    }
}

impl RequestHeader {
    /// The typed opcode, or the unknown number.
    pub fn opcode(&self) -> Result<OpCode, UnknownValue> {
        OpCode::try_from(self.op_type)
    }
}

record! {
    /// Precedes every reply body except the connect response.
    ReplyHeader = "ReplyHeader" {
        /// The request's xid, or a reserved xid (-1 notification, -2 ping, ...).
        xid: i32,
        /// The server's last zxid.
        zxid: i64,
        /// 0 or a KeeperException code; see [`ReplyHeader::error_code`].
        err: i32,
    }
}

impl ReplyHeader {
    /// The typed error code, or the unknown number.
    pub fn error_code(&self) -> Result<ErrorCode, UnknownValue> {
        ErrorCode::try_from(self.err)
    }
}

record! {
    /// Precedes each op (and each result) of a multi; `done` ends the list.
    MultiHeader = "MultiHeader" { op_type: i32, done: bool, err: i32 }
}

record! {
    /// A watch notification, sent with xid -1.
    WatcherEvent = "WatcherEvent" {
        /// See [`crate::codes::EventType`].
        event_type: i32,
        /// See [`crate::codes::KeeperState`].
        state: i32,
        path: String,
    }
}

/// The first frame a client sends (no request header).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    /// Always 0 in practice.
    pub protocol_version: i32,
    /// The last zxid the client saw (the server refuses a client ahead of it).
    pub last_zxid_seen: i64,
    /// Requested session timeout in ms.
    pub time_out: i32,
    /// 0 for a new session, else the session to resume.
    pub session_id: i64,
    /// The session password (16 bytes when resuming); null reads as empty.
    pub passwd: Vec<u8>,
    /// The trailing readOnly byte; `None` when the client omitted it
    /// (pre-3.4 clients), and then the response must omit it too.
    pub read_only: Option<bool>,
}

impl Field for ConnectRequest {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        let (i, protocol_version) = jute::int(i)?;
        let (i, last_zxid_seen) = jute::long(i)?;
        let (i, time_out) = jute::int(i)?;
        let (i, session_id) = jute::long(i)?;
        let (i, passwd) = jute::buffer(i)?;
        let (i, read_only) = read_only_flag(i);
        let passwd = passwd.unwrap_or_default();
        Ok((
            i,
            ConnectRequest {
                protocol_version,
                last_zxid_seen,
                time_out,
                session_id,
                passwd,
                read_only,
            },
        ))
    }

    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_int(out, self.protocol_version);
        jute::put_long(out, self.last_zxid_seen);
        jute::put_int(out, self.time_out);
        jute::put_long(out, self.session_id);
        jute::put_buffer(out, Some(&self.passwd));
        if let Some(ro) = self.read_only {
            jute::put_bool(out, ro);
        }
    }
}

impl Record for ConnectRequest {
    const NAME: &'static str = "ConnectRequest";
}

/// The trailing readOnly byte of the connect handshake, which ZooKeeper reads only if
/// a byte is left (old clients omit it).
fn read_only_flag(i: &[u8]) -> (&[u8], Option<bool>) {
    match jute::boolean(i) {
        Ok((rest, flag)) => (rest, Some(flag)),
        Err(_) => (i, None),
    }
}

/// The server's answer to [`ConnectRequest`] (no reply header).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// 0.
    pub protocol_version: i32,
    /// Negotiated timeout in ms; 0 (with session id 0) means "expired".
    pub time_out: i32,
    /// The session id.
    pub session_id: i64,
    /// The session password (16 bytes).
    pub passwd: Vec<u8>,
    /// Whether this is a read-only server; `None` writes no byte, the form
    /// for clients whose request had no readOnly byte.
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    /// Answers in the form the client used: with the readOnly byte only if
    /// the request carried one.
    pub fn answering(mut self, request: &ConnectRequest, read_only_server: bool) -> Self {
        self.read_only = request.read_only.map(|_| read_only_server);
        self
    }
}

impl Field for ConnectResponse {
    fn parse_field(i: &[u8]) -> JResult<'_, Self> {
        let (i, protocol_version) = jute::int(i)?;
        let (i, time_out) = jute::int(i)?;
        let (i, session_id) = jute::long(i)?;
        let (i, passwd) = jute::buffer(i)?;
        let (i, read_only) = read_only_flag(i);
        let passwd = passwd.unwrap_or_default();
        Ok((
            i,
            ConnectResponse {
                protocol_version,
                time_out,
                session_id,
                passwd,
                read_only,
            },
        ))
    }

    fn write_field(&self, out: &mut Vec<u8>) {
        jute::put_int(out, self.protocol_version);
        jute::put_int(out, self.time_out);
        jute::put_long(out, self.session_id);
        jute::put_buffer(out, Some(&self.passwd));
        if let Some(ro) = self.read_only {
            jute::put_bool(out, ro);
        }
    }
}

impl Record for ConnectResponse {
    const NAME: &'static str = "ConnectResponse";
}

// ---- request bodies ----

record! {
    /// create / create2 / createContainer. `flags` is a [`crate::codes::CreateMode`].
    CreateRequest = "CreateRequest" {
        path: String,
        data: Option<Vec<u8>>,
        acl: Vec<Acl>,
        flags: i32,
    }
}

record! {
    /// createTTL: a create with a TTL in ms.
    CreateTtlRequest = "CreateTTLRequest" {
        path: String,
        data: Option<Vec<u8>>,
        acl: Vec<Acl>,
        flags: i32,
        ttl: i64,
    }
}

record! {
    /// delete; version -1 matches any.
    DeleteRequest = "DeleteRequest" { path: String, version: i32 }
}

record! {
    /// exists, getData, getChildren and getChildren2 (all `path` + `watch`).
    PathWatchRequest = "PathWatchRequest" { path: String, watch: bool }
}

record! {
    /// setData; version -1 matches any.
    SetDataRequest = "SetDataRequest" { path: String, data: Option<Vec<u8>>, version: i32 }
}

record! {
    /// getACL, sync, getAllChildrenNumber and getEphemerals (prefixPath): a path alone.
    PathRequest = "PathRequest" { path: String }
}

record! {
    /// setACL.
    SetAclRequest = "SetACLRequest" { path: String, acl: Vec<Acl>, version: i32 }
}

record! {
    /// check (CheckVersionRequest), alone or inside a multi.
    CheckVersionRequest = "CheckVersionRequest" { path: String, version: i32 }
}

record! {
    /// setWatches: re-arm one-shot watches after a reconnect.
    SetWatches = "SetWatches" {
        relative_zxid: i64,
        data_watches: Vec<String>,
        exist_watches: Vec<String>,
        child_watches: Vec<String>,
    }
}

record! {
    /// setWatches2: setWatches plus persistent and persistent-recursive watches.
    SetWatches2 = "SetWatches2" {
        relative_zxid: i64,
        data_watches: Vec<String>,
        exist_watches: Vec<String>,
        child_watches: Vec<String>,
        persistent_watches: Vec<String>,
        persistent_recursive_watches: Vec<String>,
    }
}

record! {
    /// addWatch; `mode` is a [`crate::codes::AddWatchMode`].
    AddWatchRequest = "AddWatchRequest" { path: String, mode: i32 }
}

record! {
    /// removeWatches / checkWatches; `watcher_type` is a [`crate::codes::WatcherType`].
    WatchesRequest = "RemoveWatchesRequest" { path: String, watcher_type: i32 }
}

record! {
    /// auth (sent with xid -4); `auth_type` is 0.
    AuthPacket = "AuthPacket" { auth_type: i32, scheme: String, auth: Option<Vec<u8>> }
}

// ---- response bodies ----

record! {
    /// Reply to create.
    CreateResponse = "CreateResponse" { path: String }
}

record! {
    /// Reply to create2, createContainer and createTTL.
    Create2Response = "Create2Response" { path: String, stat: Stat }
}

record! {
    /// Reply to exists, setData, setACL and a lone check: a `Stat` alone.
    StatResponse = "StatResponse" { stat: Stat }
}

record! {
    /// Reply to getData.
    GetDataResponse = "GetDataResponse" { data: Option<Vec<u8>>, stat: Stat }
}

record! {
    /// Reply to getACL.
    GetAclResponse = "GetACLResponse" { acl: Vec<Acl>, stat: Stat }
}

record! {
    /// Reply to getChildren.
    GetChildrenResponse = "GetChildrenResponse" { children: Vec<String> }
}

record! {
    /// Reply to getChildren2.
    GetChildren2Response = "GetChildren2Response" { children: Vec<String>, stat: Stat }
}

record! {
    /// Reply to getEphemerals.
    GetEphemeralsResponse = "GetEphemeralsResponse" { ephemerals: Vec<String> }
}

record! {
    /// Reply to whoAmI.
    WhoAmIResponse = "WhoAmIResponse" { client_info: Vec<ClientInfo> }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat() -> Stat {
        Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        }
    }

    #[test]
    fn stat_is_68_bytes_in_jute_order() {
        let b = stat().to_bytes();
        assert_eq!(b.len(), 68);
        assert_eq!(&b[..8], &1i64.to_be_bytes());
        assert_eq!(&b[32..36], &5i32.to_be_bytes());
        assert_eq!(&b[44..52], &8i64.to_be_bytes());
        assert_eq!(&b[60..68], &11i64.to_be_bytes());
        assert_eq!(Stat::decode(&b).unwrap(), stat());
    }

    #[test]
    fn connect_request_with_and_without_read_only() {
        let mut req = ConnectRequest {
            time_out: 30000,
            passwd: vec![0; 16],
            ..Default::default()
        };
        let old = req.to_bytes();
        assert_eq!(old.len(), 44);
        assert_eq!(ConnectRequest::decode(&old).unwrap().read_only, None);
        req.read_only = Some(false);
        let new = req.to_bytes();
        assert_eq!(new.len(), 45);
        assert_eq!(ConnectRequest::decode(&new).unwrap(), req);
    }

    #[test]
    fn connect_response_answers_in_the_clients_form() {
        let base = ConnectResponse {
            time_out: 4000,
            session_id: 9,
            passwd: vec![1; 16],
            ..Default::default()
        };
        let old = ConnectRequest {
            read_only: None,
            ..Default::default()
        };
        let new = ConnectRequest {
            read_only: Some(false),
            ..Default::default()
        };
        assert_eq!(base.clone().answering(&old, false).to_bytes().len(), 36);
        assert_eq!(base.answering(&new, false).to_bytes().len(), 37);
    }

    #[test]
    fn null_and_empty_data_stay_apart() {
        for data in [None, Some(vec![]), Some(b"x".to_vec())] {
            let r = SetDataRequest {
                path: "/a".into(),
                data: data.clone(),
                version: -1,
            };
            assert_eq!(SetDataRequest::decode(&r.to_bytes()).unwrap().data, data);
        }
    }

    #[test]
    fn truncated_record_names_itself() {
        let b = Create2Response {
            path: "/a".into(),
            stat: stat(),
        }
        .to_bytes();
        let e = Create2Response::decode(&b[..b.len() - 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed Create2Response: record ends early"
        );
    }
}
