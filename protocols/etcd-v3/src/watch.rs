//! The Watch service: one bidirectional stream carries many watches.
//!
//! One task per stream reads its requests in order and delivers its watches' events:
//! each watch is a feed of responses built from its kernel watcher's batches, and the
//! task takes whatever all feeds have ready and sends it in revision order, as etcd's
//! shared per-stream channel does. A client that reads slowly slows only its own
//! stream (its kernel watchers fall back to history), never writers. Ids,
//! created/canceled replies and cancel reasons follow etcd's watch server.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use concord_kernel::types::{Revision, WatchBatch};
use concord_kernel::{Kernel, WatchEnd};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, watch_server::Watch};
use crate::pb::mvccpb;
use crate::status::to_status;

/// Responses buffered per stream before its watches wait for the client.
const STREAM_BUFFER: usize = 256;
/// Ready deliveries one stream gathers and orders before sending them.
const DELIVERIES_PER_TURN: usize = 1024;
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
            watches: StreamMap::new(),
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
    /// The live watches by id; a feed that ends leaves the map, freeing its id.
    watches: StreamMap<i64, WatchFeed>,
    next_id: i64,
}

/// What a stream's task does next.
enum Step {
    Request(Option<Result<pb::WatchRequest, Status>>),
    Deliver(Delivery),
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        loop {
            let step = tokio::select! {
                message = inbound.next() => Step::Request(message),
                Some((_, delivery)) = self.watches.next(), if !self.watches.is_empty() => {
                    Step::Deliver(delivery)
                }
            };
            let keep_going = match step {
                Step::Request(Some(Ok(request))) => self.handle(request).await,
                Step::Request(Some(Err(status))) => {
                    tracing::debug!(%status, "watch stream ended by the client");
                    false
                }
                Step::Request(None) => false,
                Step::Deliver(first) => self.deliver_ready(first).await,
            };
            if !keep_going {
                return;
            }
        }
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> bool {
        match request.request_union {
            Some(pb::watch_request::RequestUnion::CreateRequest(create)) => {
                self.create(create).await
            }
            Some(pb::watch_request::RequestUnion::CancelRequest(cancel)) => {
                self.cancel(cancel.watch_id).await
            }
            Some(pb::watch_request::RequestUnion::ProgressRequest(_)) => self.progress().await,
            // An empty request carries nothing to act on; etcd ignores it too.
            None => true,
        }
    }

    /// Sends `first` with every other delivery the watches have ready now, in revision
    /// order: a watch that was polled late never sends an older revision after a newer
    /// one of another watch on this stream.
    async fn deliver_ready(&mut self, first: Delivery) -> bool {
        let mut ready = vec![first];
        self.gather_ready(&mut ready);
        ready.sort_by_key(|delivery| delivery.revision);
        for response in ready.into_iter().flat_map(|delivery| delivery.responses) {
            if !self.send(response).await {
                return false;
            }
        }
        true
    }

    /// Adds what the watches have ready without waiting. Polling with a no-op waker is
    /// harmless: the next wait polls every watch again with the task's own waker.
    fn gather_ready(&mut self, ready: &mut Vec<Delivery>) {
        let mut cx = Context::from_waker(Waker::noop());
        while ready.len() < DELIVERIES_PER_TURN {
            match Pin::new(&mut self.watches).poll_next(&mut cx) {
                Poll::Ready(Some((_, delivery))) => ready.push(delivery),
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    fn header(&self, revision: Revision) -> Option<pb::ResponseHeader> {
        convert::header(self.kernel.header(revision))
    }

    /// Sends one response; false once the client is gone.
    async fn send(&mut self, response: pb::WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    async fn refuse(&mut self, reason: &str) -> bool {
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
        let feed = WatchFeed::new(WatchTask {
            kernel: self.kernel.clone(),
            watcher,
            watch_id,
            progress: progress_notify.then(|| {
                tokio::time::interval_at(
                    tokio::time::Instant::now() + PROGRESS_NOTIFY_INTERVAL,
                    PROGRESS_NOTIFY_INTERVAL,
                )
            }),
            fragment_above: fragment.then_some(self.max_response_bytes),
        });
        self.watches.insert(watch_id, feed);
        true
    }

    async fn cancel(&mut self, watch_id: i64) -> bool {
        // etcd answers nothing for an id it does not know.
        if self.watches.remove(&watch_id).is_none() {
            return true;
        }
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

/// The responses one watch has for one revision (several when fragmented).
struct Delivery {
    revision: Revision,
    responses: Vec<pb::WatchResponse>,
}

/// A watch's next step: its next delivery and its state for the step after (`None` once
/// that delivery was the watch's last).
type NextStep = Pin<Box<dyn Future<Output = Option<(Delivery, Option<WatchTask>)>> + Send>>;

/// One watch as a stream of deliveries: it polls the watch's next step, which owns the
/// watch's state while it waits and hands it back with each delivery.
struct WatchFeed {
    next: Option<NextStep>,
}

impl WatchFeed {
    fn new(task: WatchTask) -> Self {
        WatchFeed {
            next: Some(Box::pin(task.step())),
        }
    }
}

impl Stream for WatchFeed {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let Some(next) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        match next.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.next = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some((delivery, task))) => {
                self.next = task.map(|task| Box::pin(task.step()) as NextStep);
                Poll::Ready(Some(delivery))
            }
        }
    }
}

/// One watch's state between deliveries.
struct WatchTask {
    kernel: Kernel,
    watcher: concord_kernel::Watcher,
    watch_id: i64,
    /// Present when the watch asked for progress notifications when idle.
    progress: Option<tokio::time::Interval>,
    fragment_above: Option<usize>,
}

impl WatchTask {
    /// Waits for the watch's next delivery, handing back the watch's state unless the
    /// delivery is its last (the cancel reply); `None` when it ends without a reply.
    async fn step(mut self) -> Option<(Delivery, Option<Self>)> {
        let next = match self.progress.as_mut() {
            None => self.watcher.next().await,
            Some(progress) => tokio::select! {
                next = self.watcher.next() => next,
                _ = progress.tick() => {
                    let revision = self.kernel.revision().unwrap_or_default();
                    let response = self.response(revision, Vec::new());
                    return Some((Delivery { revision, responses: vec![response] }, Some(self)));
                }
            },
        };
        match next {
            Ok(batch) => {
                if let Some(progress) = self.progress.as_mut() {
                    progress.reset();
                }
                Some((self.deliver(batch), Some(self)))
            }
            Err(WatchEnd::Closed) => None,
            Err(WatchEnd::Compacted { compact_revision }) => {
                Some((self.canceled(compact_revision, String::new()), None))
            }
            Err(WatchEnd::Failed(e)) => {
                Some((self.canceled(0, to_status(&e).message().to_string()), None))
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

    /// The watch's last reply, after its kernel watcher stopped; its header carries
    /// revision 0, as etcd's does.
    fn canceled(&self, compact_revision: Revision, cancel_reason: String) -> Delivery {
        Delivery {
            revision: self.watcher.next_revision(),
            responses: vec![pb::WatchResponse {
                header: convert::header(self.kernel.header(0)),
                watch_id: self.watch_id,
                canceled: true,
                compact_revision,
                cancel_reason,
                ..Default::default()
            }],
        }
    }

    /// One revision's events: one response, or fragments of at most the size limit
    /// when the watch allows fragmenting.
    fn deliver(&self, batch: WatchBatch) -> Delivery {
        let revision = batch.revision;
        let events: Vec<mvccpb::Event> = batch.events.into_iter().map(convert::event).collect();
        let whole = self.response(revision, events);
        let Some(limit) = self
            .fragment_above
            .filter(|limit| whole.encoded_len() > *limit)
        else {
            return Delivery {
                revision,
                responses: vec![whole],
            };
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
        let responses = fragments
            .into_iter()
            .enumerate()
            .map(|(i, events)| {
                let mut response = self.response(revision, events);
                response.fragment = i < last;
                response
            })
            .collect();
        Delivery {
            revision,
            responses,
        }
    }
}
