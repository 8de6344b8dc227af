//! The v2 HTTP/1.1 service: routing of `/v2/keys`, `/version`, `/health`,
//! `/v2/members`, `/v2/machines` and `/v2/stats/*`, the headers etcd sends, and the
//! adapter that serves it on a listener of its own. On the etcd client port it is
//! handed the connections that do not start with HTTP/2's preface (see
//! [`V2Service::serve_connection`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use concord_kernel::{ETCD_CLUSTER_VERSION, ETCD_VERSION, Kernel};
use concord_plugin_api::{Adapter, AdapterContext, StartFuture};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{V2Error, code};
use crate::json::rfc3339_nanos;
use crate::keys::{Answer, Keys, StoreStats};
use crate::listener::Http1Port;
use crate::request::{self, KEYS_PREFIX, KeyRequest};
use crate::wait::{self, Actions, WaitSpec};

type Body = BoxBody<Bytes, Infallible>;

/// Go's `ParseForm` reads at most this much of a form body ("http: POST too large").
const MAX_FORM_BYTES: usize = 10 << 20;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// The etcd v2 HTTP service over one kernel.
#[derive(Debug, Clone)]
pub struct V2Service {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    keys: Keys,
    started: SystemTime,
}

impl V2Service {
    pub fn new(kernel: Kernel) -> Self {
        V2Service {
            shared: Arc::new(Shared {
                keys: Keys {
                    kernel,
                    actions: Arc::new(Actions::default()),
                    stats: StoreStats::default(),
                },
                started: SystemTime::now(),
            }),
        }
    }

    fn kernel(&self) -> &Kernel {
        &self.shared.keys.kernel
    }

    /// Serves one HTTP/1.1 connection (plain or TLS) on a task of its own.
    pub fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| service.clone().handle(req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await
            {
                tracing::debug!(error = %e, "etcd v2 connection ended");
            }
        });
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_string();
        if path == KEYS_PREFIX || path.starts_with("/v2/keys/") {
            return Ok(self.keys(req).await);
        }
        let method = req.method().clone();
        let response = match path.as_str() {
            "/version" => self.json_get(
                &method,
                json!({
                    "etcdserver": ETCD_VERSION,
                    "etcdcluster": ETCD_CLUSTER_VERSION,
                }),
            ),
            "/health" => self.health(&method).await,
            "/v2/members" => self.members(&method),
            "/v2/machines" => only_get(&method).unwrap_or_else(|| {
                let urls: Vec<String> = self
                    .kernel()
                    .members()
                    .into_iter()
                    .flat_map(|m| m.client_urls)
                    .collect();
                plain(StatusCode::OK, urls.join(", "))
            }),
            "/v2/stats/self" => self.stats_self(&method),
            "/v2/stats/store" => {
                let stats = &self.shared.keys.stats;
                self.json_get(&method, serde_json::to_value(stats).unwrap_or_default())
            }
            "/v2/stats/leader" => self.stats_leader(&method),
            _ => plain(StatusCode::NOT_FOUND, "404 page not found\n"),
        };
        Ok(response)
    }

    fn cluster_id(&self) -> String {
        format!("{:x}", self.kernel().cluster_id())
    }

    fn json_get(&self, method: &Method, value: serde_json::Value) -> Response<Body> {
        only_get(method).unwrap_or_else(|| json_response(StatusCode::OK, value.to_string()))
    }

    /// Healthy when the group has a leader (etcd's v2 `/health` asks the same).
    async fn health(&self, method: &Method) -> Response<Body> {
        if let Some(refused) = only_get(method) {
            return refused;
        }
        let healthy = self
            .kernel()
            .status()
            .await
            .is_ok_and(|status| status.leader != 0);
        let (status, body) = if healthy {
            (StatusCode::OK, r#"{"health":"true"}"#)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
        };
        plain(status, body)
    }

    fn members(&self, method: &Method) -> Response<Body> {
        if let Some(refused) = only_get(method) {
            return refused;
        }
        let members: Vec<serde_json::Value> = self
            .kernel()
            .members()
            .into_iter()
            .map(|m| {
                json!({
                    "id": format!("{:x}", m.id),
                    "name": m.name,
                    "peerURLs": m.peer_urls,
                    "clientURLs": m.client_urls,
                })
            })
            .collect();
        let mut response = json_response(StatusCode::OK, json!({ "members": members }).to_string());
        set(&mut response, "X-Etcd-Cluster-Id", &self.cluster_id());
        response
    }

    fn stats_self(&self, method: &Method) -> Response<Body> {
        let kernel = self.kernel();
        let id = format!("{:x}", kernel.member_id());
        let started = rfc3339_nanos(self.shared.started);
        let uptime = self.shared.started.elapsed().unwrap_or_default();
        self.json_get(
            method,
            json!({
                "name": kernel.name(),
                "id": id,
                "state": if kernel.is_leader() { "StateLeader" } else { "StateFollower" },
                "startTime": started,
                "leaderInfo": {
                    "leader": id,
                    "uptime": format!("{:?}", uptime),
                    "startTime": started,
                },
                "recvAppendRequestCnt": 0,
                "sendAppendRequestCnt": 0,
            }),
        )
    }

    fn stats_leader(&self, method: &Method) -> Response<Body> {
        if let Some(refused) = only_get(method) {
            return refused;
        }
        let kernel = self.kernel();
        if !kernel.is_leader() {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({ "message": "not current leader" }).to_string(),
            );
        }
        json_response(
            StatusCode::OK,
            json!({ "leader": format!("{:x}", kernel.member_id()), "followers": {} }).to_string(),
        )
    }

    async fn keys(self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        if let Some(target) = request::redirect_target(&path) {
            let location = if query.is_empty() {
                target
            } else {
                format!("{target}?{query}")
            };
            return redirect(req.method(), &location);
        }
        let method = req.method().clone();
        if ![
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
        ]
        .contains(&method)
        {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
            set(&mut response, "Allow", "HEAD,GET,PUT,POST,DELETE");
            return response;
        }
        let form_body = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
            && (method == Method::PUT || method == Method::POST);
        let body = if form_body {
            match Limited::new(req.into_body(), MAX_FORM_BYTES)
                .collect()
                .await
            {
                Ok(collected) => Some(collected.to_bytes()),
                Err(_) => {
                    return self
                        .error(V2Error::request(code::INVALID_FORM, "http: POST too large"));
                }
            }
        } else {
            None
        };
        let parsed = request::parse(method.as_str(), &path, &query, body.as_deref());
        let key_request = match parsed {
            Ok(r) => r,
            Err(e) => return self.error(e),
        };
        let keys = &self.shared.keys;
        let answer = match method {
            Method::GET | Method::HEAD if key_request.wait => {
                return self.long_poll(&key_request);
            }
            Method::GET | Method::HEAD => keys.get(&key_request).await,
            Method::PUT => keys.write(&key_request, false).await,
            Method::POST => keys.write(&key_request, true).await,
            _ => keys.delete(&key_request).await,
        };
        match answer {
            Ok(answer) => self.answer(answer),
            Err(e) => self.error(e),
        }
    }

    fn with_index_headers(&self, response: &mut Response<Body>, index: i64) {
        let kernel = self.kernel();
        set(response, "X-Etcd-Cluster-Id", &self.cluster_id());
        set(response, "X-Etcd-Index", &index.to_string());
        set(
            response,
            "X-Raft-Index",
            &kernel.raft_applied_index().to_string(),
        );
        set(response, "X-Raft-Term", &kernel.raft_term().to_string());
    }

    fn answer(&self, answer: Answer) -> Response<Body> {
        let mut response = json_response(answer.status, answer.event.body());
        cors(&mut response);
        self.with_index_headers(&mut response, answer.index);
        response
    }

    fn error(&self, error: V2Error) -> Response<Body> {
        let mut response = json_response(error.status(), error.body());
        cors(&mut response);
        set(&mut response, "X-Etcd-Cluster-Id", &self.cluster_id());
        set(&mut response, "X-Etcd-Index", &error.index.to_string());
        response
    }

    /// Headers now, the body when the first matching event comes.
    fn long_poll(&self, req: &KeyRequest) -> Response<Body> {
        let spec = WaitSpec {
            key: req.key.clone(),
            recursive: req.recursive,
            stream: req.stream,
            wait_index: req.wait_index,
        };
        let (watcher, index) = match wait::start(self.kernel(), &spec) {
            Ok(started) => started,
            Err(e) => return self.error(e),
        };
        let (tx, rx) = mpsc::channel::<String>(16);
        let actions = self.shared.keys.actions.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            shared.keys.stats.watchers.fetch_add(1, Ordering::Relaxed);
            wait::run(shared.keys.kernel.clone(), watcher, spec, actions, tx).await;
            shared.keys.stats.watchers.fetch_sub(1, Ordering::Relaxed);
        });
        let stream = ReceiverStream::new(rx).map(|chunk| Ok(Frame::data(Bytes::from(chunk))));
        let mut response = Response::new(StreamBody::new(stream).boxed());
        set(&mut response, CONTENT_TYPE.as_str(), "application/json");
        cors(&mut response);
        self.with_index_headers(&mut response, index);
        response
    }
}

fn set(response: &mut Response<Body>, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        http::header::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        response.headers_mut().insert(name, value);
    }
}

fn cors(response: &mut Response<Body>) {
    set(
        response,
        "Access-Control-Allow-Methods",
        "POST, GET, OPTIONS, PUT, DELETE",
    );
    set(response, "Access-Control-Allow-Origin", "*");
    set(
        response,
        "Access-Control-Allow-Headers",
        "accept, content-type, authorization",
    );
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    set(&mut response, CONTENT_TYPE.as_str(), "application/json");
    response
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(full(body.into()));
    *response.status_mut() = status;
    set(
        &mut response,
        CONTENT_TYPE.as_str(),
        "text/plain; charset=utf-8",
    );
    response
}

/// etcd's stats and member endpoints answer GET only.
fn only_get(method: &Method) -> Option<Response<Body>> {
    (method != Method::GET && method != Method::HEAD).then(|| {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        set(&mut response, "Allow", "GET");
        response
    })
}

/// Go's `ServeMux` answer to an unclean path: 301 to the cleaned one.
fn redirect(method: &Method, location: &str) -> Response<Body> {
    let body = if method == Method::GET || method == Method::HEAD {
        format!("<a href=\"{location}\">Moved Permanently</a>.\n\n")
    } else {
        String::new()
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    set(
        &mut response,
        CONTENT_TYPE.as_str(),
        "text/html; charset=utf-8",
    );
    set(&mut response, "Location", location);
    response
}

/// The etcd v2 dialect on a listener of its own (when it does not share the etcd
/// client port).
#[derive(Debug, Clone)]
pub struct EtcdV2Adapter {
    pub listen: SocketAddr,
    pub service: V2Service,
    /// TLS on this port (through the adapters' shared handshake); `None`: plaintext.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Adapter for EtcdV2Adapter {
    fn name(&self) -> &str {
        "etcd_v2"
    }

    fn start(self: Box<Self>, context: AdapterContext) -> StartFuture {
        Box::pin(async move {
            let port = Http1Port {
                adapter: "etcd_v2",
                port: "the etcd v2 port",
                listen: self.listen,
                tls: self.tls,
            };
            let service = self.service;
            port.start(&context, move |stream| service.serve_connection(stream))
                .await
        })
    }
}
