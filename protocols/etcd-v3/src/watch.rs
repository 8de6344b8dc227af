//! The Watch service: one bidirectional stream carries many watches.
//!
//! Requests are read in order on one task per stream; each watch then runs on its own
//! task that turns the kernel watcher's batches into responses. All of them write into
//! one bounded channel that is the response stream, so a client that reads slowly slows
//! only its own watches (their kernel watchers fall back to history), never writers.
//! Ids, created/canceled replies and cancel reasons follow etcd's watch server.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use concord_kernel::types::{Revision, WatchBatch};
use concord_kernel::{Kernel, WatchEnd};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, watch_server::Watch};
use crate::pb::mvccpb;
use crate::status::to_status;

/// Responses buffered per stream before its watches wait for the client.
const STREAM_BUFFER: usize = 256;
/// How often a watch that asked for progress notifications gets one when idle (etcd's
/// default).
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// The watch id etcd puts in replies that belong to no watch.
const NO_WATCH_ID: i64 = -1;

pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
pub const EMPTY_WATCH_RANGE: &str = "mvcc: watcher range is empty";

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct WatchService {
    kernel: Kernel,
    /// Events beyond this size are split into fragments for watches that allow it.
    max_response_bytes: usize,
}

impl WatchService {
    pub fn new(kernel: Kernel, max_response_bytes: usize) -> Self {
        WatchService {
            kernel,
            max_response_bytes,
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner();
        let (out, responses) = mpsc::channel(STREAM_BUFFER);
        let stream = WatchStream {
            kernel: self.kernel.clone(),
            max_response_bytes: self.max_response_bytes,
            out,
            watches: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }
}

/// The server side of one Watch stream.
struct WatchStream {
    kernel: Kernel,
    max_response_bytes: usize,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watches: HashMap<i64, JoinHandle<()>>,
    next_id: i64,
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        while let Some(message) = inbound.next().await {
            let request = match message {
                Ok(request) => request,
                Err(status) => {
                    tracing::debug!(%status, "watch stream ended by the client");
                    break;
                }
            };
            let keep_going = match request.request_union {
                Some(pb::watch_request::RequestUnion::CreateRequest(create)) => {
                    self.create(create).await
                }
                Some(pb::watch_request::RequestUnion::CancelRequest(cancel)) => {
                    self.cancel(cancel.watch_id).await
                }
                Some(pb::watch_request::RequestUnion::ProgressRequest(_)) => self.progress().await,
                // An empty request carries nothing to act on; etcd ignores it too.
                None => true,
            };
            if !keep_going {
                break;
            }
        }
        for (_, task) in self.watches.drain() {
            task.abort();
        }
    }

    fn header(&self, revision: Revision) -> Option<pb::ResponseHeader> {
        convert::header(self.kernel.header(revision))
    }

    /// Sends one response; false once the client is gone.
    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    async fn refuse(&self, reason: &str) -> bool {
        let revision = self.kernel.revision().unwrap_or_default();
        self.send(pb::WatchResponse {
            header: self.header(revision),
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        })
        .await
    }

    fn allocate_id(&mut self, requested: i64) -> Option<i64> {
        if requested != 0 {
            return (!self.watches.contains_key(&requested)).then_some(requested);
        }
        while self.watches.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(id)
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> bool {
        // Drop finished watches so their ids can be reused, as etcd frees them.
        self.watches.retain(|_, task| !task.is_finished());
        let range_end_is_open = create.range_end.is_empty() || create.range_end == [0];
        if !range_end_is_open && create.key >= create.range_end {
            return self.refuse(EMPTY_WATCH_RANGE).await;
        }
        let Some(watch_id) = self.allocate_id(create.watch_id) else {
            return self.refuse(DUPLICATE_WATCH_ID).await;
        };
        let progress_notify = create.progress_notify;
        let fragment = create.fragment;
        let request = convert::watch_request(create);
        let watcher = match self.kernel.watch(request) {
            Ok(watcher) => watcher,
            Err(e) => {
                let _ = self.out.send(Err(to_status(&e))).await;
                return false;
            }
        };
        let revision = self.kernel.revision().unwrap_or_default();
        let created = pb::WatchResponse {
            header: self.header(revision),
            watch_id,
            created: true,
            ..Default::default()
        };
        if !self.send(created).await {
            return false;
        }
        let task = WatchTask {
            kernel: self.kernel.clone(),
            out: self.out.clone(),
            watch_id,
            progress_notify,
            fragment_above: fragment.then_some(self.max_response_bytes),
        };
        self.watches
            .insert(watch_id, tokio::spawn(task.run(watcher)));
        true
    }

    async fn cancel(&mut self, watch_id: i64) -> bool {
        // etcd answers nothing for an id it does not know.
        let Some(task) = self.watches.remove(&watch_id) else {
            return true;
        };
        task.abort();
        let revision = self.kernel.revision().unwrap_or_default();
        self.send(pb::WatchResponse {
            header: self.header(revision),
            watch_id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    async fn progress(&mut self) -> bool {
        let revision = self.kernel.revision().unwrap_or_default();
        self.send(pb::WatchResponse {
            header: self.header(revision),
            watch_id: NO_WATCH_ID,
            ..Default::default()
        })
        .await
    }
}

/// One watch's delivery loop.
struct WatchTask {
    kernel: Kernel,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watch_id: i64,
    progress_notify: bool,
    fragment_above: Option<usize>,
}

impl WatchTask {
    async fn run(self, mut watcher: concord_kernel::Watcher) {
        // Only watches that asked for progress notifications pay for a timer.
        let mut progress = self
            .progress_notify
            .then(|| tokio::time::interval(PROGRESS_NOTIFY_INTERVAL));
        if let Some(progress) = progress.as_mut() {
            progress.tick().await;
        }
        loop {
            let next = match progress.as_mut() {
                None => watcher.next().await,
                Some(progress) => tokio::select! {
                    next = watcher.next() => next,
                    _ = progress.tick() => {
                        let revision = self.kernel.revision().unwrap_or_default();
                        if !self.send(self.response(revision, Vec::new())).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            match next {
                Ok(batch) => {
                    if let Some(progress) = progress.as_mut() {
                        progress.reset();
                    }
                    if !self.deliver(batch).await {
                        return;
                    }
                }
                Err(WatchEnd::Compacted { compact_revision }) => {
                    let response = pb::WatchResponse {
                        header: convert::header(self.kernel.header(0)),
                        watch_id: self.watch_id,
                        canceled: true,
                        compact_revision,
                        ..Default::default()
                    };
                    self.send(response).await;
                    return;
                }
                Err(WatchEnd::Closed) => return,
                Err(WatchEnd::Failed(e)) => {
                    let response = pb::WatchResponse {
                        header: convert::header(self.kernel.header(0)),
                        watch_id: self.watch_id,
                        canceled: true,
                        cancel_reason: to_status(&e).message().to_string(),
                        ..Default::default()
                    };
                    self.send(response).await;
                    return;
                }
            }
        }
    }

    fn response(&self, revision: Revision, events: Vec<mvccpb::Event>) -> pb::WatchResponse {
        pb::WatchResponse {
            header: convert::header(self.kernel.header(revision)),
            watch_id: self.watch_id,
            events,
            ..Default::default()
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    /// Sends one revision's events: one response, or fragments of at most the size
    /// limit when the watch allows fragmenting.
    async fn deliver(&self, batch: WatchBatch) -> bool {
        let events: Vec<mvccpb::Event> = batch.events.into_iter().map(convert::event).collect();
        let whole = self.response(batch.revision, events);
        let Some(limit) = self
            .fragment_above
            .filter(|limit| whole.encoded_len() > *limit)
        else {
            return self.send(whole).await;
        };
        let mut fragments = Vec::new();
        let mut current: Vec<mvccpb::Event> = Vec::new();
        let mut size = 0;
        for event in whole.events {
            let event_size = event.encoded_len();
            if !current.is_empty() && size + event_size > limit {
                fragments.push(std::mem::take(&mut current));
                size = 0;
            }
            size += event_size;
            current.push(event);
        }
        fragments.push(current);
        let last = fragments.len() - 1;
        for (i, events) in fragments.into_iter().enumerate() {
            let mut response = self.response(batch.revision, events);
            response.fragment = i < last;
            if !self.send(response).await {
                return false;
            }
        }
        true
    }
}
