//! What each ZooKeeper request does against the kernel, and the reply it gets: writes
//! become kernel tree operations (checked for ACLs and arguments first, then queued in
//! the session's order), reads are answered from this member's state and may set
//! watches. Kernel and tree errors are mapped to ZooKeeper error codes here, once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use concord_kernel::types::{
    Acl as StoredAcl, RangeRequest, Revision, TreeError, TreeNode, TreeOp, TreeOpResult, TreeRead,
    TreeTxnResponse, ZnodeKind, ZnodeStat,
};
use concord_kernel::{Kernel, KernelError, valid_path};

use crate::acl::{self, Identity};
use crate::codes::{CreateMode, ErrorCode, OpCode, WatcherType, perms};
use crate::message::{MultiOp, MultiResult, Request, Response};
use crate::records::{
    Acl, ClientInfo, Create2Response, CreateRequest, CreateResponse, GetAclResponse,
    GetChildren2Response, GetChildrenResponse, GetDataResponse, GetEphemeralsResponse, Id,
    PathRequest, Stat, StatResponse,
};
use crate::watches::{ConnectionWatches, WatchKind, parent};

/// Largest TTL ZooKeeper accepts for a TTL node (`EphemeralType.TTL` max, ms).
const MAX_TTL_MS: i64 = 0xff_ffff_ffff;

/// A reply about to be sent: header fields and body.
#[derive(Debug)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Response,
}

impl Reply {
    pub fn ok(xid: i32, zxid: i64, body: Response) -> Self {
        Reply {
            xid,
            zxid,
            err: 0,
            body,
        }
    }

    pub fn error(xid: i32, zxid: i64, err: ErrorCode) -> Self {
        Reply {
            xid,
            zxid,
            err: err.code(),
            body: Response::Empty,
        }
    }
}

/// What a session is while its requests run.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: i64,
    pub identities: Arc<Vec<Identity>>,
    pub extended_types: bool,
}

/// A write already queued in the kernel; resolves to its outcome.
pub type PendingWrite = Pin<Box<dyn Future<Output = Result<TreeTxnResponse, KernelError>> + Send>>;

/// How a queued write's outcome becomes a reply: one op answered in the form of the
/// request's opcode (create and create2 differ), or a multi's result list.
#[derive(Debug, Clone, Copy)]
pub enum WriteShape {
    Single(OpCode),
    Multi,
}

/// The kernel's errors as ZooKeeper codes.
pub fn kernel_error_code(error: &KernelError) -> ErrorCode {
    match error {
        KernelError::RequestTooLarge => ErrorCode::MarshallingError,
        KernelError::NotLeader { .. }
        | KernelError::NoLeader
        | KernelError::Timeout
        | KernelError::LeaderChanged => ErrorCode::OperationTimeout,
        KernelError::NoSpace => ErrorCode::QuotaExceeded,
        _ => ErrorCode::SystemError,
    }
}

pub fn tree_error_code(error: TreeError) -> ErrorCode {
    match error {
        TreeError::NoNode => ErrorCode::NoNode,
        TreeError::NodeExists => ErrorCode::NodeExists,
        TreeError::BadVersion => ErrorCode::BadVersion,
        TreeError::NotEmpty => ErrorCode::NotEmpty,
        TreeError::NoChildrenForEphemerals => ErrorCode::NoChildrenForEphemerals,
        TreeError::BadArguments => ErrorCode::BadArguments,
        TreeError::SessionExpired => ErrorCode::SessionExpired,
        // The v2 dialect's own checks; a ZooKeeper request never makes them.
        TreeError::NotFile
        | TreeError::NotDir
        | TreeError::CompareFailed
        | TreeError::RootReadOnly => ErrorCode::BadArguments,
    }
}

pub fn wire_stat(stat: &ZnodeStat) -> Stat {
    Stat {
        czxid: stat.czxid,
        mzxid: stat.mzxid,
        ctime: stat.ctime,
        mtime: stat.mtime,
        version: stat.version,
        cversion: stat.cversion,
        aversion: stat.aversion,
        ephemeral_owner: stat.ephemeral_owner,
        data_length: stat.data_length,
        num_children: stat.num_children,
        pzxid: stat.pzxid,
    }
}

/// The ACL reported for a node: a node with none (written through etcd) is open.
fn reported_acl(acl: &[StoredAcl]) -> Vec<Acl> {
    if acl.is_empty() {
        vec![Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    } else {
        acl::to_wire(acl)
    }
}

/// Checks `perm` on `path`'s ACL; a missing node passes (the operation itself then
/// reports NONODE).
fn check_acl(
    kernel: &Kernel,
    session: &SessionView,
    path: &str,
    perm: i32,
) -> Result<(), ErrorCode> {
    match kernel.tree_acl(path) {
        Ok(Some(acl)) if !acl::allows(&acl, perm, &session.identities) => Err(ErrorCode::NoAuth),
        Ok(_) => Ok(()),
        Err(e) => Err(kernel_error_code(&e)),
    }
}

fn parent_acl_check(
    kernel: &Kernel,
    session: &SessionView,
    path: &str,
    perm: i32,
) -> Result<(), ErrorCode> {
    match parent(path) {
        Some(parent) if valid_path(path) => check_acl(kernel, session, parent, perm),
        _ => Ok(()),
    }
}

/// Turns a create request into a tree op, as ZooKeeper's PrepRequestProcessor checks it.
fn create_op(
    kernel: &Kernel,
    session: &SessionView,
    op: OpCode,
    request: &CreateRequest,
    ttl: Option<i64>,
) -> Result<TreeOp, ErrorCode> {
    // createContainer makes a container whatever the flags say (as ZooKeeper 3.8 does).
    let mode = if op == OpCode::CreateContainer {
        CreateMode::Container
    } else {
        CreateMode::try_from(request.flags).map_err(|_| ErrorCode::BadArguments)?
    };
    match (op, mode) {
        (OpCode::CreateTtl, _) if !session.extended_types => {
            return Err(ErrorCode::Unimplemented);
        }
        (OpCode::CreateTtl, m) if !m.is_ttl() => return Err(ErrorCode::BadArguments),
        (OpCode::CreateTtl, _) => {}
        (_, m) if m.is_ttl() => return Err(ErrorCode::BadArguments),
        (OpCode::CreateContainer, CreateMode::Container) => {}
        (OpCode::CreateContainer, _) | (_, CreateMode::Container) => {
            return Err(ErrorCode::BadArguments);
        }
        _ => {}
    }
    let checked_path = if mode.is_sequential() {
        format!("{}0", request.path)
    } else {
        request.path.clone()
    };
    if !valid_path(&checked_path) || request.path == "/" {
        return Err(ErrorCode::BadArguments);
    }
    let kind = match (mode, ttl) {
        (CreateMode::Container, _) => ZnodeKind::Container,
        (_, Some(ttl)) if ttl <= 0 || ttl > MAX_TTL_MS => return Err(ErrorCode::BadArguments),
        (_, Some(ttl)) => ZnodeKind::Ttl(ttl),
        _ => ZnodeKind::Persistent,
    };
    parent_acl_check(kernel, session, &request.path, perms::CREATE)?;
    let acl = acl::fix_up(&request.acl, &session.identities).ok_or(ErrorCode::InvalidAcl)?;
    Ok(TreeOp::Create {
        path: request.path.clone(),
        data: request.data.clone(),
        acl,
        ephemeral_owner: if mode.is_ephemeral() { session.id } else { 0 },
        sequential: mode.is_sequential(),
        kind,
    })
}

/// One write op of a request or a multi, checked and translated.
fn write_op(kernel: &Kernel, session: &SessionView, op: &MultiOp) -> Result<TreeOp, ErrorCode> {
    match op {
        MultiOp::Create { op, request } => create_op(kernel, session, *op, request, None),
        MultiOp::CreateTtl(r) => {
            let request = CreateRequest {
                path: r.path.clone(),
                data: r.data.clone(),
                acl: r.acl.clone(),
                flags: r.flags,
            };
            create_op(kernel, session, OpCode::CreateTtl, &request, Some(r.ttl))
        }
        MultiOp::Delete(r) => {
            if r.path == "/" || !valid_path(&r.path) {
                return Err(ErrorCode::BadArguments);
            }
            parent_acl_check(kernel, session, &r.path, perms::DELETE)?;
            Ok(TreeOp::Delete {
                path: r.path.clone(),
                version: r.version,
            })
        }
        MultiOp::SetData(r) => {
            check_acl(kernel, session, &r.path, perms::WRITE)?;
            Ok(TreeOp::SetData {
                path: r.path.clone(),
                data: r.data.clone(),
                version: r.version,
            })
        }
        MultiOp::Check(r) => Ok(TreeOp::Check {
            path: r.path.clone(),
            version: r.version,
        }),
        MultiOp::GetChildren(_) | MultiOp::GetData(_) => Err(ErrorCode::BadArguments),
    }
}

/// A write request ready to queue, or the error reply it gets at once.
pub enum Planned {
    Write(Vec<TreeOp>, WriteShape),
    Failed(ErrorCode),
    /// A multi whose op `index` failed before reaching the kernel.
    MultiFailed(usize, ErrorCode, usize),
}

/// Plans a write request; `None` if `request` is not a write.
pub fn plan_write(kernel: &Kernel, session: &SessionView, request: &Request) -> Option<Planned> {
    let single = |op: MultiOp, shape| match write_op(kernel, session, &op) {
        Ok(op) => Planned::Write(vec![op], shape),
        Err(e) => Planned::Failed(e),
    };
    Some(match request {
        Request::Create(r) => single(
            MultiOp::Create {
                op: OpCode::Create,
                request: r.clone(),
            },
            WriteShape::Single(OpCode::Create),
        ),
        Request::Create2(r) => single(
            MultiOp::Create {
                op: OpCode::Create2,
                request: r.clone(),
            },
            WriteShape::Single(OpCode::Create2),
        ),
        Request::CreateContainer(r) => single(
            MultiOp::Create {
                op: OpCode::CreateContainer,
                request: r.clone(),
            },
            WriteShape::Single(OpCode::CreateContainer),
        ),
        Request::CreateTtl(r) => single(
            MultiOp::CreateTtl(r.clone()),
            WriteShape::Single(OpCode::CreateTtl),
        ),
        Request::Delete(r) => single(
            MultiOp::Delete(r.clone()),
            WriteShape::Single(OpCode::Delete),
        ),
        Request::SetData(r) => single(
            MultiOp::SetData(r.clone()),
            WriteShape::Single(OpCode::SetData),
        ),
        Request::Check(r) => single(MultiOp::Check(r.clone()), WriteShape::Single(OpCode::Check)),
        Request::SetAcl(r) => {
            if let Err(e) = check_acl(kernel, session, &r.path, perms::ADMIN) {
                return Some(Planned::Failed(e));
            }
            match acl::fix_up(&r.acl, &session.identities) {
                Some(acl) => Planned::Write(
                    vec![TreeOp::SetAcl {
                        path: r.path.clone(),
                        acl,
                        version: r.version,
                    }],
                    WriteShape::Single(OpCode::SetAcl),
                ),
                None => Planned::Failed(ErrorCode::InvalidAcl),
            }
        }
        Request::Multi(ops) => {
            let mut tree_ops = Vec::with_capacity(ops.len());
            for (index, op) in ops.iter().enumerate() {
                match write_op(kernel, session, op) {
                    Ok(op) => tree_ops.push(op),
                    Err(e) => return Some(Planned::MultiFailed(index, e, ops.len())),
                }
            }
            Planned::Write(tree_ops, WriteShape::Multi)
        }
        _ => return None,
    })
}

/// Queues a planned write in the kernel (in call order).
pub fn submit(kernel: &Kernel, ops: Vec<TreeOp>) -> Result<PendingWrite, ErrorCode> {
    kernel
        .submit_tree_txn(ops)
        .map(|pending| Box::pin(pending) as PendingWrite)
        .map_err(|e| kernel_error_code(&e))
}

/// The result list of a multi that failed at `index` (of `len`): earlier ops report 0,
/// the failing one its code, later ones RUNTIMEINCONSISTENCY, as ZooKeeper reports.
pub fn failed_multi(index: usize, error: ErrorCode, len: usize) -> Response {
    Response::Multi(
        (0..len)
            .map(|i| {
                MultiResult::Error(match i.cmp(&index) {
                    std::cmp::Ordering::Less => ErrorCode::Ok.code(),
                    std::cmp::Ordering::Equal => error.code(),
                    std::cmp::Ordering::Greater => ErrorCode::RuntimeInconsistency.code(),
                })
            })
            .collect(),
    )
}

/// The body one write op is answered with, in the form of the request's opcode: a
/// plain create answers with the path only, the other creates with the stat too.
fn single_response(op: OpCode, result: TreeOpResult) -> Response {
    match result {
        TreeOpResult::Created { path, .. } if op == OpCode::Create => {
            Response::Create(CreateResponse { path })
        }
        TreeOpResult::Created { path, stat } => Response::Create2(Create2Response {
            path,
            stat: wire_stat(&stat),
        }),
        TreeOpResult::DataSet { stat } | TreeOpResult::AclSet { stat } => {
            Response::Stat(wire_stat(&stat))
        }
        // v2 results never come back to a ZooKeeper session.
        TreeOpResult::Deleted
        | TreeOpResult::Checked
        | TreeOpResult::V2Written { .. }
        | TreeOpResult::V2Deleted { .. } => Response::Empty,
    }
}

/// One op's entry in a multi's result list; every kind of create reports its path only
/// (ZooKeeper 3.8).
fn multi_result(result: TreeOpResult) -> MultiResult {
    match result {
        TreeOpResult::Created { path, .. } => MultiResult::Create(CreateResponse { path }),
        TreeOpResult::Deleted | TreeOpResult::V2Deleted { .. } => MultiResult::Delete,
        TreeOpResult::DataSet { stat } => MultiResult::SetData(StatResponse {
            stat: wire_stat(&stat),
        }),
        // setACL is no multi op; a check's result has no body.
        TreeOpResult::AclSet { .. } | TreeOpResult::Checked | TreeOpResult::V2Written { .. } => {
            MultiResult::Check
        }
    }
}

/// The reply a finished write gets.
pub fn write_reply(
    xid: i32,
    shape: WriteShape,
    op_count: usize,
    outcome: Result<TreeTxnResponse, KernelError>,
    current: Revision,
) -> Reply {
    let response = match outcome {
        Ok(r) => r,
        Err(e) => return Reply::error(xid, current, kernel_error_code(&e)),
    };
    let zxid = response.header.revision;
    match (shape, response.outcome) {
        (WriteShape::Multi, Ok(results)) => Reply::ok(
            xid,
            zxid,
            Response::Multi(results.into_iter().map(multi_result).collect()),
        ),
        (WriteShape::Multi, Err((index, error))) => Reply::ok(
            xid,
            zxid,
            failed_multi(index, tree_error_code(error), op_count),
        ),
        (WriteShape::Single(_), Err((_, error))) => Reply::error(xid, zxid, tree_error_code(error)),
        (WriteShape::Single(op), Ok(mut results)) => match results.pop() {
            Some(result) => Reply::ok(xid, zxid, single_response(op, result)),
            None => Reply::error(xid, zxid, ErrorCode::SystemError),
        },
    }
}

/// How many ops a write request has (a multi's result list has one per op).
pub fn op_count(request: &Request) -> usize {
    match request {
        Request::Multi(ops) => ops.len(),
        _ => 1,
    }
}

/// Runs a read request (or a session-local one), setting watches in `watches`.
pub struct ReadContext<'a> {
    pub kernel: &'a Kernel,
    pub session: &'a SessionView,
    pub watches: &'a ConnectionWatches,
    /// The newest state revision a read of this request saw: the reply's zxid, and the
    /// revision watches set by it start after.
    observed: AtomicI64,
}

fn need(ctx: &ReadContext<'_>, acl: &[StoredAcl], perm: i32) -> Result<(), ErrorCode> {
    if acl::allows(acl, perm, &ctx.session.identities) {
        Ok(())
    } else {
        Err(ErrorCode::NoAuth)
    }
}

impl<'a> ReadContext<'a> {
    pub fn new(
        kernel: &'a Kernel,
        session: &'a SessionView,
        watches: &'a ConnectionWatches,
    ) -> Self {
        ReadContext {
            kernel,
            session,
            watches,
            observed: AtomicI64::new(-1),
        }
    }

    fn saw(&self, revision: Revision) {
        self.observed.fetch_max(revision, Ordering::Relaxed);
    }

    /// The newest revision a read of this request saw, if it read the state.
    pub fn observed(&self) -> Option<Revision> {
        Some(self.observed.load(Ordering::Relaxed)).filter(|r| *r >= 0)
    }

    /// Reads a node (and, if asked, its children's names) from one snapshot of the
    /// state.
    fn read(&self, path: &str, with_children: bool) -> Result<TreeRead, ErrorCode> {
        // ZooKeeper checks paths of writes only; a read of a malformed path finds nothing.
        if !valid_path(path) {
            return Err(ErrorCode::NoNode);
        }
        let read = self
            .kernel
            .tree_read(path, with_children)
            .map_err(|e| kernel_error_code(&e))?;
        self.saw(read.revision);
        Ok(read)
    }

    fn node(&self, path: &str) -> Result<(TreeNode, Revision), ErrorCode> {
        let read = self.read(path, false)?;
        read.node
            .map(|node| (node, read.revision))
            .ok_or(ErrorCode::NoNode)
    }

    fn watch(&self, set: bool, kind: WatchKind, path: &str, revision: Revision) {
        if set {
            self.watches.lock().add(kind, path, revision);
        }
    }

    fn get_data(&self, path: &str, watch: bool) -> Result<Response, ErrorCode> {
        let (node, revision) = self.node(path)?;
        need(self, &node.acl, perms::READ)?;
        self.watch(watch, WatchKind::Data, path, revision);
        Ok(Response::GetData(GetDataResponse {
            data: (!node.null_data).then_some(node.data),
            stat: wire_stat(&node.stat),
        }))
    }

    fn children(&self, path: &str, watch: bool) -> Result<(Vec<String>, Stat), ErrorCode> {
        let read = self.read(path, true)?;
        let node = read.node.ok_or(ErrorCode::NoNode)?;
        need(self, &node.acl, perms::READ)?;
        self.watch(watch, WatchKind::Child, path, read.revision);
        Ok((read.children, wire_stat(&node.stat)))
    }

    /// Answers a read (watches it sets fire for changes after the state it read).
    pub async fn run(&self, request: &Request) -> Result<Response, ErrorCode> {
        match request {
            Request::Exists(r) => {
                let read = self.read(&r.path, false)?;
                match read.node {
                    Some(node) => {
                        self.watch(r.watch, WatchKind::Data, &r.path, read.revision);
                        Ok(Response::Stat(wire_stat(&node.stat)))
                    }
                    None => {
                        self.watch(r.watch, WatchKind::Exist, &r.path, read.revision);
                        Err(ErrorCode::NoNode)
                    }
                }
            }
            Request::GetData(r) => self.get_data(&r.path, r.watch),
            Request::GetChildren(r) => self
                .children(&r.path, r.watch)
                .map(|(children, _)| Response::GetChildren(GetChildrenResponse { children })),
            Request::GetChildren2(r) => self.children(&r.path, r.watch).map(|(children, stat)| {
                Response::GetChildren2(GetChildren2Response { children, stat })
            }),
            Request::GetAcl(r) => {
                let (node, _) = self.node(&r.path)?;
                need(self, &node.acl, perms::READ | perms::ADMIN)?;
                let mut acl = reported_acl(&node.acl);
                // Without ADMIN, digest hashes are hidden (`user:x`), as ZooKeeper 3.8 does.
                if !acl::allows(&node.acl, perms::ADMIN, &self.session.identities) {
                    for entry in acl.iter_mut().filter(|e| e.id.scheme == "digest") {
                        if let Some((user, _)) = entry.id.id.split_once(':') {
                            entry.id.id = format!("{user}:x");
                        }
                    }
                }
                Ok(Response::GetAcl(GetAclResponse {
                    acl,
                    stat: wire_stat(&node.stat),
                }))
            }
            Request::GetAllChildrenNumber(r) => {
                let (node, _) = self.node(&r.path)?;
                need(self, &node.acl, perms::READ)?;
                let prefix = if r.path == "/" {
                    "/".to_string()
                } else {
                    format!("{}/", r.path)
                };
                let mut range_end = prefix.clone().into_bytes();
                if let Some(last) = range_end.last_mut() {
                    *last += 1;
                }
                let count = self
                    .kernel
                    .range(RangeRequest {
                        key: prefix.into_bytes(),
                        range_end,
                        count_only: true,
                        serializable: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| kernel_error_code(&e))?
                    .count;
                Ok(Response::AllChildrenNumber(
                    i32::try_from(count).unwrap_or(i32::MAX),
                ))
            }
            Request::GetEphemerals(r) => self.ephemerals(&r.path).await,
            Request::SetWatches(w) => {
                self.set_watches(
                    w.relative_zxid,
                    [
                        &w.data_watches,
                        &w.exist_watches,
                        &w.child_watches,
                        &Vec::new(),
                        &Vec::new(),
                    ],
                )?;
                Ok(Response::Empty)
            }
            Request::SetWatches2(w) => {
                self.set_watches(
                    w.relative_zxid,
                    [
                        &w.data_watches,
                        &w.exist_watches,
                        &w.child_watches,
                        &w.persistent_watches,
                        &w.persistent_recursive_watches,
                    ],
                )?;
                Ok(Response::Empty)
            }
            Request::Sync(r) => Ok(Response::Sync(PathRequest {
                path: r.path.clone(),
            })),
            Request::MultiRead(ops) => Ok(Response::Multi(
                ops.iter()
                    .map(|op| {
                        let outcome = match op {
                            MultiOp::GetData(r) => self.get_data(&r.path, false),
                            MultiOp::GetChildren(r) => {
                                self.children(&r.path, false).map(|(children, _)| {
                                    Response::GetChildren(GetChildrenResponse { children })
                                })
                            }
                            _ => Err(ErrorCode::BadArguments),
                        };
                        match outcome {
                            Ok(Response::GetData(d)) => MultiResult::GetData(d),
                            Ok(Response::GetChildren(c)) => MultiResult::GetChildren(c),
                            Ok(_) => MultiResult::Error(ErrorCode::SystemError.code()),
                            Err(e) => MultiResult::Error(e.code()),
                        }
                    })
                    .collect(),
            )),
            Request::AddWatch(r) => {
                let kind = match r.mode {
                    0 => WatchKind::Persistent,
                    1 => WatchKind::PersistentRecursive,
                    _ => return Err(ErrorCode::BadArguments),
                };
                if !valid_path(&r.path) {
                    return Err(ErrorCode::BadArguments);
                }
                let revision = self.kernel.revision().map_err(|e| kernel_error_code(&e))?;
                self.saw(revision);
                self.watches.lock().add(kind, &r.path, revision);
                Ok(Response::AddWatch(0))
            }
            Request::RemoveWatches(r) | Request::CheckWatches(r) => {
                let remove = matches!(request, Request::RemoveWatches(_));
                let kinds: &[WatchKind] = match WatcherType::try_from(r.watcher_type) {
                    Ok(WatcherType::Children) => &[WatchKind::Child],
                    Ok(WatcherType::Data) => &[WatchKind::Data, WatchKind::Exist],
                    Ok(WatcherType::Any) => &[
                        WatchKind::Child,
                        WatchKind::Data,
                        WatchKind::Exist,
                        WatchKind::Persistent,
                        WatchKind::PersistentRecursive,
                    ],
                    Err(_) => return Err(ErrorCode::BadArguments),
                };
                let mut table = self.watches.lock();
                let mut found = false;
                for kind in kinds {
                    found |= if remove {
                        table.remove(*kind, &r.path)
                    } else {
                        table.contains(*kind, &r.path)
                    };
                }
                if found {
                    Ok(Response::Empty)
                } else {
                    Err(ErrorCode::NoWatcher)
                }
            }
            Request::WhoAmI => {
                // As ZooKeeper reports them: digest users by name, before the address.
                let mut infos: Vec<ClientInfo> = self
                    .session
                    .identities
                    .iter()
                    .map(|i| ClientInfo {
                        auth_scheme: i.scheme.clone(),
                        user: match i.scheme.as_str() {
                            "digest" => i.id.split(':').next().unwrap_or_default().to_string(),
                            _ => i.id.clone(),
                        },
                    })
                    .collect();
                infos.sort_by_key(|info| info.auth_scheme == "ip");
                Ok(Response::WhoAmI(infos))
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    /// Re-registers the watches a reconnecting client had (data, exist, child,
    /// persistent, persistent-recursive), first sending the events it missed since
    /// `relative_zxid`, as ZooKeeper's `setWatches` does.
    fn set_watches(
        &self,
        relative_zxid: i64,
        [data, exist, child, persistent, recursive]: [&Vec<String>; 5],
    ) -> Result<(), ErrorCode> {
        use crate::codes::EventType;
        use crate::watches::event;
        let revision = self.kernel.revision().map_err(|e| kernel_error_code(&e))?;
        self.saw(revision);
        // Each node is read at `revision` or later: a change after `revision` that the
        // read already shows may fire the re-registered watch once more (a spurious
        // event, never a missed one).
        let node = |path: &str| self.read(path, false).map(|r| r.node);
        for path in data {
            match node(path)? {
                None => self.watches.send(event(EventType::NodeDeleted, path)),
                Some(n) if n.stat.mzxid > relative_zxid => {
                    self.watches.send(event(EventType::NodeDataChanged, path));
                }
                Some(_) => self.watches.lock().add(WatchKind::Data, path, revision),
            }
        }
        for path in exist {
            match node(path)? {
                Some(_) => self.watches.send(event(EventType::NodeCreated, path)),
                None => self.watches.lock().add(WatchKind::Exist, path, revision),
            }
        }
        for path in child {
            match node(path)? {
                None => self.watches.send(event(EventType::NodeDeleted, path)),
                Some(n) if n.stat.pzxid > relative_zxid => {
                    self.watches
                        .send(event(EventType::NodeChildrenChanged, path));
                }
                Some(_) => self.watches.lock().add(WatchKind::Child, path, revision),
            }
        }
        let mut table = self.watches.lock();
        for path in persistent {
            table.add(WatchKind::Persistent, path, revision);
        }
        for path in recursive {
            table.add(WatchKind::PersistentRecursive, path, revision);
        }
        Ok(())
    }

    /// The session's ephemeral nodes under `prefix`, sorted.
    async fn ephemerals(&self, prefix: &str) -> Result<Response, ErrorCode> {
        let lease = self
            .kernel
            .lease_time_to_live(self.session.id, true)
            .await
            .map_err(|e| kernel_error_code(&e))?;
        let mut ephemerals: Vec<String> = lease
            .keys
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .filter(|k| k.starts_with(prefix))
            .collect();
        ephemerals.sort();
        Ok(Response::Ephemerals(GetEphemeralsResponse { ephemerals }))
    }
}
