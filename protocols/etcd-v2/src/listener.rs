//! The accept loop the crate's own HTTP/1.1 ports share (the v2 API's own port and the
//! metrics port): bind, then until shutdown hand each connection to the port's service,
//! in plaintext or, with a TLS profile, after the adapters' shared handshake (which logs
//! a refusal with the port's name).

use std::net::SocketAddr;
use std::sync::Arc;

use concord_plugin_api::{AdapterContext, AdapterError, RunningAdapter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// A connection as a port's service gets it: TCP or TLS.
pub(crate) trait Connection: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> Connection for S {}

/// One listener of `adapter` on `listen`, named `port` in log lines.
pub(crate) struct Http1Port {
    pub adapter: &'static str,
    pub port: &'static str,
    pub listen: SocketAddr,
    pub tls: Option<Arc<ServerConfig>>,
}

impl Http1Port {
    /// Binds and serves until `context`'s shutdown: `serve` is called (on the accepted
    /// connection's own task, after any TLS handshake) for every connection.
    pub(crate) async fn start<F>(
        self,
        context: &AdapterContext,
        serve: F,
    ) -> Result<RunningAdapter, AdapterError>
    where
        F: Fn(Box<dyn Connection>) + Send + Sync + 'static,
    {
        let bind_error = |source| AdapterError::Bind {
            adapter: self.adapter.into(),
            addr: self.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let tls = self.tls.is_some();
        let acceptor = self.tls.map(TlsAcceptor::from);
        let serve = Arc::new(serve);
        let (adapter, port) = (self.adapter, self.port);
        let stop = context.shutdown.clone().wait();
        let task = tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                let stream = tokio::select! {
                    () = &mut stop => return Ok(()),
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "{port}: accept failed");
                            continue;
                        }
                    },
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let (serve, acceptor) = (serve.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(Box::new(stream)),
                        Some(acceptor) => {
                            let accepted = concord_plugin_api::tls::accept(&acceptor, stream, port);
                            if let Some(tls) = accepted.await {
                                serve(Box::new(tls));
                            }
                        }
                    }
                });
            }
        });
        tracing::info!(%local, tls, "{adapter} listening");
        Ok(RunningAdapter {
            name: adapter.into(),
            listening_on: vec![local],
            task,
        })
    }
}
