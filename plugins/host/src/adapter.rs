//! A loaded plugin run as an adapter. The host side of the sans-IO contract: the
//! listener, TLS handshakes, one reader and one writer task per connection, timers and
//! kernel calls all live on the host's runtime; the plugin instance lives on a thread of
//! its own (the driver), which hands it one event at a time and carries out its actions.
//! A plugin that panics is stopped alone: its connections close, its listener closes,
//! and the other adapters keep serving.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use concord_kernel::Kernel;
use concord_plugin_api::{
    Adapter, AdapterContext, AdapterError, RunningAdapter, ShutdownSignal, StartFuture, tls,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::envelope::{self, action::Action, host_event::Event, kernel_call::Request};
use crate::kernel_calls;
use crate::library::{self, PluginError, PluginInstance};

/// Events queued for the driver; bounded, so a slow plugin slows its readers.
const DRIVER_QUEUE: usize = 1024;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A dialect from a shared library, configured by `[adapters.<name>]`.
#[derive(Debug)]
pub struct PluginAdapter {
    pub name: String,
    pub library: PathBuf,
    /// The plugin's own settings (a JSON object).
    pub settings_json: String,
    pub listen: SocketAddr,
    pub tls: Option<Arc<ServerConfig>>,
}

impl Adapter for PluginAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(self: Box<Self>, context: AdapterContext) -> StartFuture {
        Box::pin(async move {
            let failed = |e: PluginError| AdapterError::Failed {
                adapter: self.name.clone(),
                message: e.to_string(),
            };
            let loaded = library::load(&self.name, &self.library).map_err(failed)?;
            let instance = loaded
                .instantiate(&self.name, &self.settings_json)
                .map_err(failed)?;
            let listener =
                TcpListener::bind(self.listen)
                    .await
                    .map_err(|source| AdapterError::Bind {
                        adapter: self.name.clone(),
                        addr: self.listen,
                        source,
                    })?;
            let local = listener.local_addr().unwrap_or(self.listen);
            tracing::info!(
                adapter = %self.name,
                dialect = %loaded.dialect(),
                library = %self.library.display(),
                "plugin loaded"
            );
            let (events, queue) = mpsc::channel(DRIVER_QUEUE);
            let (stopped_tx, stopped) = watch::channel(false);
            let driver = Driver {
                name: self.name.clone(),
                instance,
                kernel: context.kernel.clone(),
                runtime: tokio::runtime::Handle::current(),
                events: events.clone(),
                connections: HashMap::new(),
                pending: VecDeque::new(),
                stopped: stopped_tx,
            };
            std::thread::Builder::new()
                .name(format!("plugin-{}", self.name))
                .spawn(move || driver.run(queue))
                .map_err(|e| AdapterError::Failed {
                    adapter: self.name.clone(),
                    message: format!("cannot start the plugin's thread: {e}"),
                })?;
            let accept = AcceptLoop {
                name: self.name.clone(),
                listener,
                tls: self.tls.map(TlsAcceptor::from),
                events,
            };
            let task = tokio::spawn(accept.run(context.shutdown, stopped));
            Ok(RunningAdapter {
                name: self.name,
                listening_on: vec![local],
                task,
            })
        })
    }
}

/// What the driver thread is told.
enum DriverEvent {
    Opened {
        connection: u64,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        writer: mpsc::UnboundedSender<Outgoing>,
        reading: watch::Sender<bool>,
    },
    Received {
        connection: u64,
        data: Vec<u8>,
    },
    PeerClosed {
        connection: u64,
    },
    KernelReply {
        connection: u64,
        call: u64,
        reply: envelope::kernel_reply::Reply,
    },
    Timer {
        connection: u64,
        timer: u64,
    },
    Shutdown,
}

/// What a connection's writer task is told.
enum Outgoing {
    Data(Vec<u8>),
    Close,
}

struct AcceptLoop {
    name: String,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    events: mpsc::Sender<DriverEvent>,
}

impl AcceptLoop {
    async fn run(
        self,
        shutdown: ShutdownSignal,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), AdapterError> {
        let mut next_connection = 1u64;
        let stop = shutdown.clone().wait();
        let plugin_stopped = async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        };
        tokio::pin!(stop, plugin_stopped);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    let _ = self.events.send(DriverEvent::Shutdown).await;
                    return Ok(());
                }
                _ = &mut plugin_stopped => {
                    tracing::error!(
                        adapter = %self.name,
                        "plugin stopped: its listener is closed; the other adapters keep serving"
                    );
                    drop(self.listener);
                    shutdown.wait().await;
                    return Ok(());
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let connection = next_connection;
                        next_connection += 1;
                        tokio::spawn(open_connection(
                            connection,
                            stream,
                            peer,
                            self.tls.clone(),
                            self.events.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(adapter = %self.name, "accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

async fn open_connection(
    connection: u64,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    events: mpsc::Sender<DriverEvent>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let ends = Ends { peer, local };
    match tls {
        None => serve_connection(connection, stream, ends, false, events).await,
        Some(acceptor) => {
            if let Some(stream) = tls::accept(&acceptor, stream, "a plugin's port").await {
                serve_connection(connection, stream, ends, true, events).await;
            }
        }
    }
}

/// A connection's two addresses.
#[derive(Debug, Clone, Copy)]
struct Ends {
    peer: SocketAddr,
    local: SocketAddr,
}

/// Registers the connection with the driver, reads on one task and writes on this one.
async fn serve_connection<S>(
    connection: u64,
    stream: S,
    ends: Ends,
    tls: bool,
    events: mpsc::Sender<DriverEvent>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (writer_tx, mut outgoing) = mpsc::unbounded_channel();
    let (reading, mut may_read) = watch::channel(true);
    let opened = DriverEvent::Opened {
        connection,
        peer: ends.peer,
        local: ends.local,
        tls,
        writer: writer_tx,
        reading,
    };
    if events.send(opened).await.is_err() {
        return;
    }
    let read = tokio::spawn(async move {
        let mut buffer = vec![0u8; READ_CHUNK];
        loop {
            // Paused by the plugin: the bytes wait in the socket.
            if may_read.wait_for(|may| *may).await.is_err() {
                return;
            }
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = buffer[..n].to_vec();
                    if events
                        .send(DriverEvent::Received { connection, data })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = events.send(DriverEvent::PeerClosed { connection }).await;
    });
    // Ends on Close, when the driver forgets the connection, or on a write error.
    while let Some(Outgoing::Data(data)) = outgoing.recv().await {
        if writer.write_all(&data).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
    read.abort();
}

/// A connection as the driver knows it.
struct Connection {
    writer: mpsc::UnboundedSender<Outgoing>,
    reading: watch::Sender<bool>,
    timers: HashMap<u64, AbortHandle>,
    watches: HashMap<u64, AbortHandle>,
    unary_calls: HashSet<u64>,
}

impl Connection {
    fn close(self) {
        let _ = self.writer.send(Outgoing::Close);
        for task in self.timers.values().chain(self.watches.values()) {
            task.abort();
        }
    }
}

/// Owns the plugin instance; runs on its own thread.
struct Driver {
    name: String,
    instance: PluginInstance,
    kernel: Kernel,
    runtime: tokio::runtime::Handle,
    /// For the tasks it starts to report back.
    events: mpsc::Sender<DriverEvent>,
    connections: HashMap<u64, Connection>,
    /// Events the driver made itself (a Closed after the plugin's Close), handed over
    /// before the next queued one.
    pending: VecDeque<Event>,
    stopped: watch::Sender<bool>,
}

impl Driver {
    fn run(mut self, mut queue: mpsc::Receiver<DriverEvent>) {
        while let Some(event) = queue.blocking_recv() {
            let event = match self.admit(event) {
                Admit::Deliver(event) => event,
                Admit::Drop => continue,
                Admit::Stop => break,
            };
            self.pending.push_back(event);
            while let Some(event) = self.pending.pop_front() {
                if let Err(error) = self.deliver(event) {
                    tracing::error!(adapter = %self.name, "{error}; stopping the plugin");
                    self.close_all();
                    self.stopped.send_replace(true);
                    return;
                }
            }
        }
        self.close_all();
    }

    /// Bookkeeping for a queued event, and whether the plugin should see it.
    fn admit(&mut self, event: DriverEvent) -> Admit {
        match event {
            DriverEvent::Opened {
                connection,
                peer,
                local,
                tls,
                writer,
                reading,
            } => {
                self.connections.insert(
                    connection,
                    Connection {
                        writer,
                        reading,
                        timers: HashMap::new(),
                        watches: HashMap::new(),
                        unary_calls: HashSet::new(),
                    },
                );
                Admit::Deliver(Event::Opened(envelope::Opened {
                    connection,
                    peer: peer.to_string(),
                    tls,
                    local: local.to_string(),
                }))
            }
            DriverEvent::Received { connection, data } => {
                if !self.connections.contains_key(&connection) {
                    return Admit::Drop;
                }
                Admit::Deliver(Event::Received(envelope::Received { connection, data }))
            }
            DriverEvent::PeerClosed { connection } => match self.connections.remove(&connection) {
                Some(state) => {
                    state.close();
                    Admit::Deliver(Event::Closed(envelope::Closed { connection }))
                }
                None => Admit::Drop,
            },
            DriverEvent::KernelReply {
                connection,
                call,
                reply,
            } => {
                let Some(state) = self.connections.get_mut(&connection) else {
                    return Admit::Drop;
                };
                if !state.unary_calls.remove(&call) && !state.watches.contains_key(&call) {
                    return Admit::Drop;
                }
                Admit::Deliver(Event::KernelReply(envelope::KernelReply {
                    connection,
                    call,
                    reply: Some(reply),
                }))
            }
            DriverEvent::Timer { connection, timer } => {
                let fired = self
                    .connections
                    .get_mut(&connection)
                    .and_then(|state| state.timers.remove(&timer));
                match fired {
                    Some(_) => Admit::Deliver(Event::TimerFired(envelope::TimerFired {
                        connection,
                        timer,
                    })),
                    None => Admit::Drop,
                }
            }
            DriverEvent::Shutdown => Admit::Stop,
        }
    }

    fn deliver(&mut self, event: Event) -> Result<(), PluginError> {
        let connection = event_connection(&event);
        match self.instance.handle(event) {
            Ok(actions) => {
                for action in actions {
                    self.carry_out(action);
                }
                Ok(())
            }
            Err(error @ PluginError::Panicked { .. }) => Err(error),
            Err(error) => {
                // A refused event costs its connection, not the plugin.
                tracing::warn!(adapter = %self.name, connection, "{error}; closing the connection");
                self.close(connection);
                Ok(())
            }
        }
    }

    fn close(&mut self, connection: u64) {
        if let Some(state) = self.connections.remove(&connection) {
            state.close();
            self.pending
                .push_back(Event::Closed(envelope::Closed { connection }));
        }
    }

    fn close_all(&mut self) {
        for (_, state) in self.connections.drain() {
            state.close();
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Write(write) => {
                if let Some(state) = self.connections.get(&write.connection) {
                    let _ = state.writer.send(Outgoing::Data(write.data));
                }
            }
            Action::Close(close) => self.close(close.connection),
            Action::PauseReading(pause) => self.set_reading(pause.connection, false),
            Action::ResumeReading(resume) => self.set_reading(resume.connection, true),
            Action::SetTimer(set) => {
                let Some(state) = self.connections.get_mut(&set.connection) else {
                    return;
                };
                let events = self.events.clone();
                let (connection, timer) = (set.connection, set.timer);
                let after = std::time::Duration::from_millis(set.after_ms);
                let task = self.runtime.spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = events.send(DriverEvent::Timer { connection, timer }).await;
                });
                if let Some(old) = state.timers.insert(timer, task.abort_handle()) {
                    old.abort();
                }
            }
            Action::CancelTimer(cancel) => {
                if let Some(task) = self
                    .connections
                    .get_mut(&cancel.connection)
                    .and_then(|state| state.timers.remove(&cancel.timer))
                {
                    task.abort();
                }
            }
            Action::KernelCall(call) => self.kernel_call(call),
        }
    }

    fn set_reading(&mut self, connection: u64, reading: bool) {
        if let Some(state) = self.connections.get(&connection) {
            state.reading.send_replace(reading);
        }
    }

    fn kernel_call(&mut self, call: envelope::KernelCall) {
        let (connection, id) = (call.connection, call.call);
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        let Some(request) = call.request else {
            return;
        };
        let kernel = self.kernel.clone();
        let events = self.events.clone();
        match request {
            Request::Watch(create) => {
                let task =
                    self.runtime
                        .spawn(kernel_calls::watch(kernel, create, async move |reply| {
                            let reply = DriverEvent::KernelReply {
                                connection,
                                call: id,
                                reply,
                            };
                            events.send(reply).await.is_ok()
                        }));
                if let Some(old) = state.watches.insert(id, task.abort_handle()) {
                    old.abort();
                }
            }
            Request::WatchCancel(_) => {
                if let Some(task) = state.watches.remove(&id) {
                    task.abort();
                    self.pending
                        .push_back(Event::KernelReply(envelope::KernelReply {
                            connection,
                            call: id,
                            reply: Some(kernel_calls::canceled(&self.kernel)),
                        }));
                }
            }
            request => {
                state.unary_calls.insert(id);
                self.runtime.spawn(async move {
                    let reply = kernel_calls::unary(&kernel, request).await;
                    let _ = events
                        .send(DriverEvent::KernelReply {
                            connection,
                            call: id,
                            reply,
                        })
                        .await;
                });
            }
        }
    }
}

enum Admit {
    Deliver(Event),
    Drop,
    Stop,
}

fn event_connection(event: &Event) -> u64 {
    match event {
        Event::Opened(e) => e.connection,
        Event::Received(e) => e.connection,
        Event::Closed(e) => e.connection,
        Event::KernelReply(e) => e.connection,
        Event::TimerFired(e) => e.connection,
    }
}
