//! The Consul KV HTTP API (`/v1/kv/`) as a sans-IO Concord dialect plugin.
//!
//! The host owns the sockets; this crate is a per-connection state machine
//! ([`ConsulKv`]): bytes arrive, [`http::Parser`] frames requests, [`kv::parse_request`]
//! validates each into a [`kv::Op`], the op becomes one etcd v3 kernel call, and the
//! reply becomes Consul's answer. Requests on a connection are served one at a time and
//! answered in order (HTTP/1.1 keep-alive; pipelined requests wait in a queue).
//!
//! Storage layout, shared with the other dialects:
//! - Consul key `k` is kernel key `key_prefix + k` (config `key_prefix`, default `/`),
//!   so Consul `app/db` is `/app/db` for etcd, etcd v2 and ZooKeeper too.
//! - A key's non-zero `Flags` live in a sidecar kernel key `"\0consul-flags" + kernel
//!   key` (the decimal flags as the value). A PUT writes the value and puts (or, for
//!   flags 0, deletes) the sidecar in one Txn; a DELETE removes both (with `?recurse`,
//!   both prefixes) in one Txn; a GET reads value and sidecar ranges in one read-only
//!   Txn, so flags and value are always consistent. Sidecars never show in listings.
//!   A sidecar counts only at the value's own mod revision: if another dialect rewrites
//!   the value (it knows no flags), the stale sidecar reads as flags 0.
//! - `CreateIndex`/`ModifyIndex` are the kernel create/mod revisions, `X-Consul-Index`
//!   the reply header's revision, `LockIndex` is always 0.
//!
//! Blocking queries (`?index=N&wait=D`) open a kernel watch on the key (or prefix) from
//! revision `N + 1` and set a timer for `D`: a watch from the past replays at once, so
//! a change after `N` answers at once; otherwise the first event or the timer, whichever
//! comes first, cancels the other and the current data is read and answered.
//!
//! Not implemented: sessions (`?acquire`/`?release` answer 400), `/v1/txn` and every
//! endpoint outside `/v1/kv/`, ACL tokens (`?token` is ignored), the wait jitter.

// The export macro emits `#[unsafe(no_mangle)]` for the C entry point.
#![allow(unsafe_code)]

pub mod error;
pub mod http;
pub mod kv;
pub mod query;

use std::collections::{HashMap, VecDeque};

use concord_plugin_abi::pb::{WatchCancel, action::Action, host_event, kernel_call, kernel_reply};
use concord_plugin_abi::sdk::{SansIoPlugin, actions};

use crate::error::KvError;
use crate::http::{HttpError, Parser, Request};
use crate::kv::{Config, Op, Reply};

/// The most requests a connection may have unanswered at once: past it (a client that
/// pipelines without reading its answers, faster than flow control below holds it back)
/// the connection is cut off instead of growing the queue without bound.
pub const MAX_PIPELINED: usize = 128;
/// Flow control: with this many requests queued the host stops reading the connection,
/// and starts again once the queue is down to [`RESUME_READING_AT`].
pub const PAUSE_READING_AT: usize = 16;
pub const RESUME_READING_AT: usize = 4;

/// The plugin instance: the config and every open connection's state.
#[derive(Debug)]
pub struct ConsulKv {
    config: Config,
    connections: HashMap<u64, Connection>,
    /// The newest kernel revision seen, for answers that did not ask the kernel.
    last_revision: i64,
}

/// What waits on a connection, in arrival order.
#[derive(Debug)]
enum Queued {
    Request(Request),
    /// The stream broke here: answer, then close.
    Broken(HttpError),
}

/// Where the request being served stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the reply to kernel call `call`.
    Call(u64),
    /// A blocking query waiting for watch `watch` or timer `timer`.
    Blocking { watch: u64, timer: u64 },
}

/// What becomes of the connection after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// HTTP/1.1's default.
    KeepAlive,
    /// HTTP/1.0 that asked for keep-alive: the answer must say so.
    KeepAlive10,
    Close,
}

impl Persist {
    fn of(request: &Request) -> Persist {
        match (request.keep_alive(), request.minor_version) {
            (false, _) => Persist::Close,
            (true, 0) => Persist::KeepAlive10,
            (true, _) => Persist::KeepAlive,
        }
    }

    fn header(self) -> Option<&'static str> {
        match self {
            Persist::KeepAlive => None,
            Persist::KeepAlive10 => Some("keep-alive"),
            Persist::Close => Some("close"),
        }
    }
}

#[derive(Debug)]
struct Serving {
    op: Op,
    pretty: bool,
    persist: Persist,
    stage: Stage,
}

#[derive(Debug)]
struct Connection {
    parser: Parser,
    queue: VecDeque<Queued>,
    serving: Option<Serving>,
    /// Call and timer ids, unique on this connection.
    next_id: u64,
    /// Close was sent: nothing more is read or written.
    closed: bool,
    /// PauseReading was sent (and no ResumeReading since).
    paused: bool,
}

impl Connection {
    fn new(config: &Config) -> Connection {
        Connection {
            parser: Parser::new(config.max_value_bytes),
            queue: VecDeque::new(),
            serving: None,
            next_id: 1,
            closed: false,
            paused: false,
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// The per-event context: who we answer and where the actions go.
struct Ctx<'a> {
    config: &'a Config,
    last_revision: &'a mut i64,
    connection: u64,
    out: Vec<Action>,
}

impl Ctx<'_> {
    fn write_reply(&mut self, reply: Reply, persist: Persist) {
        if let Some(r) = reply.revision {
            *self.last_revision = (*self.last_revision).max(r);
        }
        // As Consul's setIndex: never 0, or a blocking client would spin on `?index=0`.
        let revision = reply.revision.unwrap_or(*self.last_revision).max(1);
        let mut headers: Vec<(&str, String)> = vec![
            ("Content-Type", reply.content_type.to_string()),
            ("X-Consul-Index", revision.to_string()),
            ("X-Consul-Knownleader", "true".into()),
            ("X-Consul-Lastcontact", "0".into()),
        ];
        headers.extend(reply.headers.iter().map(|(n, v)| (*n, v.clone())));
        if let Some(value) = persist.header() {
            headers.push(("Connection", value.into()));
        }
        let bytes = http::write_response(reply.status, &headers, &reply.body);
        self.out.push(actions::write(self.connection, bytes));
        if persist == Persist::Close {
            self.out.push(actions::close(self.connection));
        }
    }

    fn answer(&mut self, conn: &mut Connection, outcome: Result<Reply, KvError>, persist: Persist) {
        let reply = outcome.unwrap_or_else(|e| Reply::error(&e));
        self.write_reply(reply, persist);
        if persist == Persist::Close {
            conn.closed = true;
        }
    }

    /// Starts the read of `op` (the request, or the data after a blocking wait).
    fn call(&mut self, conn: &mut Connection, op: &Op) -> Stage {
        let call = conn.id();
        self.out
            .push(actions::kernel(self.connection, call, op.request()));
        Stage::Call(call)
    }

    /// Serves queued requests until one waits on the kernel or the queue is empty.
    fn pump(&mut self, conn: &mut Connection) {
        while conn.serving.is_none() && !conn.closed {
            let Some(item) = conn.queue.pop_front() else {
                break;
            };
            let request = match item {
                Queued::Broken(e) => {
                    self.answer(conn, Err(KvError::Http(e)), Persist::Close);
                    break;
                }
                Queued::Request(request) => request,
            };
            let persist = Persist::of(&request);
            let (op, pretty) = match kv::parse_request(self.config, &request) {
                Ok(parsed) => (parsed.op, parsed.pretty),
                Err(e) => {
                    // A target we can not even route is a malformed request.
                    let persist = match e {
                        KvError::Http(_) => Persist::Close,
                        _ => persist,
                    };
                    self.answer(conn, Err(e), persist);
                    continue;
                }
            };
            let stage = match op.block() {
                Some(block) => {
                    let watch = conn.id();
                    let timer = conn.id();
                    self.out.push(actions::kernel(
                        self.connection,
                        watch,
                        op.watch_request(block.index),
                    ));
                    self.out
                        .push(actions::set_timer(self.connection, timer, block.wait_ms));
                    Stage::Blocking { watch, timer }
                }
                None => self.call(conn, &op),
            };
            conn.serving = Some(Serving {
                op,
                pretty,
                persist,
                stage,
            });
        }
        if conn.serving.is_none()
            && conn.queue.is_empty()
            && !conn.closed
            && conn.parser.take_continue()
        {
            self.out
                .push(actions::write(self.connection, http::CONTINUE.to_vec()));
        }
    }

    fn kernel_reply(&mut self, conn: &mut Connection, call: u64, reply: kernel_reply::Reply) {
        let Some(serving) = conn.serving.take() else {
            return;
        };
        match serving.stage {
            Stage::Call(c) if c == call => {
                let outcome = serving.op.answer(self.config, reply, serving.pretty);
                self.answer(conn, outcome, serving.persist);
                self.pump(conn);
            }
            Stage::Blocking { watch, timer } if watch == call => match reply {
                kernel_reply::Reply::Watch(w) if w.events.is_empty() && !w.canceled => {
                    // `created`, or a progress notice: keep waiting.
                    conn.serving = Some(serving);
                }
                kernel_reply::Reply::Watch(w) => {
                    // A change after the index (or history compacted away: it may have
                    // changed): read and answer now.
                    self.out.push(actions::cancel_timer(self.connection, timer));
                    if !w.canceled {
                        self.cancel_watch(watch);
                    }
                    let stage = self.call(conn, &serving.op);
                    conn.serving = Some(Serving { stage, ..serving });
                }
                other => {
                    self.out.push(actions::cancel_timer(self.connection, timer));
                    self.cancel_watch(watch);
                    let outcome = match other {
                        kernel_reply::Reply::Error(e) => Err(KvError::Kernel {
                            code: e.code,
                            message: e.message,
                        }),
                        _ => Err(KvError::UnexpectedReply("not a watch response")),
                    };
                    self.answer(conn, outcome, serving.persist);
                    self.pump(conn);
                }
            },
            // A late reply (e.g. of a cancelled watch): not ours any more.
            _ => conn.serving = Some(serving),
        }
    }

    fn timer_fired(&mut self, conn: &mut Connection, fired: u64) {
        let Some(serving) = conn.serving.take() else {
            return;
        };
        match serving.stage {
            Stage::Blocking { watch, timer } if timer == fired => {
                self.cancel_watch(watch);
                let stage = self.call(conn, &serving.op);
                conn.serving = Some(Serving { stage, ..serving });
            }
            _ => conn.serving = Some(serving),
        }
    }

    fn cancel_watch(&mut self, watch: u64) {
        self.out.push(actions::kernel(
            self.connection,
            watch,
            kernel_call::Request::WatchCancel(WatchCancel {}),
        ));
    }
}

impl ConsulKv {
    fn with_connection(
        &mut self,
        connection: u64,
        create: bool,
        f: impl FnOnce(&mut Ctx<'_>, &mut Connection),
    ) -> Vec<Action> {
        let conn = match self.connections.entry(connection) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) if create => {
                v.insert(Connection::new(&self.config))
            }
            std::collections::hash_map::Entry::Vacant(_) => return Vec::new(),
        };
        let mut ctx = Ctx {
            config: &self.config,
            last_revision: &mut self.last_revision,
            connection,
            out: Vec::new(),
        };
        if conn.closed {
            return Vec::new();
        }
        f(&mut ctx, conn);
        let backlog = conn.queue.len();
        if !conn.closed && !conn.paused && backlog >= PAUSE_READING_AT {
            conn.paused = true;
            ctx.out.push(actions::pause_reading(connection));
        } else if !conn.closed && conn.paused && backlog <= RESUME_READING_AT {
            conn.paused = false;
            ctx.out.push(actions::resume_reading(connection));
        }
        ctx.out
    }
}

impl SansIoPlugin for ConsulKv {
    fn create(config_json: &str) -> Result<Self, String> {
        Ok(ConsulKv {
            config: Config::from_json(config_json)?,
            connections: HashMap::new(),
            last_revision: 0,
        })
    }

    fn handle(&mut self, event: host_event::Event) -> Vec<Action> {
        match event {
            host_event::Event::Opened(opened) => {
                self.connections
                    .insert(opened.connection, Connection::new(&self.config));
                Vec::new()
            }
            host_event::Event::Closed(closed) => {
                self.connections.remove(&closed.connection);
                Vec::new()
            }
            host_event::Event::Received(received) => {
                self.with_connection(received.connection, true, |ctx, conn| {
                    if matches!(conn.queue.back(), Some(Queued::Broken(_))) {
                        // The stream already broke: only the answers before it remain.
                        return;
                    }
                    conn.parser.push(&received.data);
                    loop {
                        if conn.queue.len() >= MAX_PIPELINED {
                            let e = HttpError::Malformed("too many pipelined requests".into());
                            conn.queue.push_back(Queued::Broken(e));
                            break;
                        }
                        match conn.parser.next_request() {
                            Ok(Some(request)) => conn.queue.push_back(Queued::Request(request)),
                            Ok(None) => break,
                            Err(e) => {
                                conn.queue.push_back(Queued::Broken(e));
                                break;
                            }
                        }
                    }
                    ctx.pump(conn);
                })
            }
            host_event::Event::KernelReply(reply) => {
                let Some(inner) = reply.reply else {
                    return Vec::new();
                };
                self.with_connection(reply.connection, false, |ctx, conn| {
                    ctx.kernel_reply(conn, reply.call, inner);
                })
            }
            host_event::Event::TimerFired(fired) => {
                self.with_connection(fired.connection, false, |ctx, conn| {
                    ctx.timer_fired(conn, fired.timer);
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;

concord_plugin_abi::export_plugin!(ConsulKv, "consul");
