//! A connection on the etcd client port: plain TCP, or TCP under TLS (rustls). One type
//! for both so that gRPC (tonic) and the HTTP/1.1 handoff take either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The transport under an accepted client connection.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Bytes written but not yet handed to the transport, at most; past this a write first
/// drains them.
const MAX_BUFFERED: usize = 256 * 1024;

/// An accepted client connection. Writes are coalesced: bytes go into a buffer, and the
/// first flush of a round does not write but answers `Pending` and wakes the task, which
/// tokio then runs behind the tasks already runnable (such as the handlers whose replies
/// a batched Raft entry has just released). The next poll writes everything queued by
/// then in one system call; a flush completes only once its bytes are written. Without
/// this each reply of a batch became its own `writev`, as tokio runs a woken connection
/// task right after the handler that woke it.
#[derive(Debug)]
pub struct ClientStream {
    transport: Transport,
    out: Vec<u8>,
    /// How much of `out` the transport has taken.
    written: usize,
    /// A flush was deferred: the next poll of the task writes `out`.
    deferred: bool,
}

impl ClientStream {
    pub fn plain(stream: TcpStream) -> Self {
        Self::over(Transport::Plain(stream))
    }

    pub fn tls(stream: TlsStream<TcpStream>) -> Self {
        Self::over(Transport::Tls(Box::new(stream)))
    }

    fn over(transport: Transport) -> Self {
        ClientStream {
            transport,
            out: Vec::new(),
            written: 0,
            deferred: false,
        }
    }

    /// Hands every buffered byte to the transport.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n =
                ready!(Pin::new(&mut self.transport).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        self.deferred = false;
        Poll::Ready(Ok(()))
    }

    /// Buffers `bufs` (draining first when the buffer is full).
    fn poll_buffer(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.out.len() >= MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        let mut taken = 0;
        for buf in bufs {
            self.out.extend_from_slice(buf);
            taken += buf.len();
        }
        Poll::Ready(Ok(taken))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.deferred {
            // The task is being polled again: the deferred bytes go out now, whatever
            // path through the connection's poll follows.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.transport).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_buffer(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_buffer(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.out.is_empty() {
            this.deferred = false;
        } else if !this.deferred {
            // Let the runnable tasks add their replies first; the wake puts this task
            // at the back of the run queue, and its next poll writes (see poll_read).
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        } else {
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.transport).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.transport).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for ClientStream {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn connected_pair() -> (ClientStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, peer) = tokio::join!(listener.accept(), peer);
        (ClientStream::plain(accepted.unwrap().0), peer.unwrap())
    }

    #[tokio::test]
    async fn writes_wait_for_a_flush_and_a_flush_writes_them_all() {
        let (mut stream, mut peer) = connected_pair().await;
        stream.write_all(b"first ").await.unwrap();
        stream.write_all(b"second").await.unwrap();
        let mut probe = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), peer.read(&mut probe)).await;
        assert!(early.is_err(), "nothing is sent before a flush");
        stream.flush().await.unwrap();
        let mut received = [0u8; 12];
        peer.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"first second");
    }

    #[tokio::test]
    async fn the_first_flush_of_a_round_yields_once_then_completes() {
        let (mut stream, _peer) = connected_pair().await;
        stream.write_all(b"reply").await.unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut pinned = Pin::new(&mut stream);
        assert!(pinned.as_mut().poll_flush(&mut cx).is_pending());
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(stream.out.is_empty());
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_buffered() {
        let (mut stream, mut peer) = connected_pair().await;
        stream.write_all(b"last words").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"last words");
    }
}
