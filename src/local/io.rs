//! The socket under an instance connection: a shared `TcpStream` whose write side, once the
//! instance has reset or closed it, swallows the rest of the request instead of failing, so an
//! early response the instance already sent (a `413` before the upload ended) is still read.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// An instance connection's I/O. The pool keeps a second handle on the same stream to check, with
/// a non-blocking peek, that an idle connection was not closed by the instance before reusing it.
pub(super) struct OriginIo {
    stream: Arc<TcpStream>,
    /// The instance stopped reading (EPIPE / ECONNRESET on a write): the rest of the request is
    /// dropped unsent, and reading goes on until its response or the end of the connection.
    /// HTTP allows a server to answer before the request ends (RFC 9112 §9.5, RFC 9110 §15.5.14);
    /// without this, hyper reports the failed write and never reads the answer.
    write_closed: bool,
}

impl OriginIo {
    pub(super) fn new(stream: Arc<TcpStream>) -> Self {
        Self {
            stream,
            write_closed: false,
        }
    }

    /// Turns a write error into "the instance stopped reading" where that is what it means.
    fn on_write(&mut self, r: io::Result<usize>, len: usize) -> Poll<io::Result<usize>> {
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(error = %e, "instance stopped reading the request; reading its answer");
                self.write_closed = true;
                Poll::Ready(Ok(len))
            }
            other => Poll::Ready(other),
        }
    }
}

/// True while an idle connection's socket shows neither an end (the instance closed it) nor
/// unexpected bytes (an idle connection has nothing to read until a request is sent on it).
pub(super) fn idle_and_open(stream: &TcpStream) -> bool {
    let mut probe = [MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut probe) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false, // 0: closed; more: an unsolicited answer (a 408, say)
    }
}

/// True when nothing arrived on an idle connection as far as the reactor knows: no bytes, no end.
/// Free (no system call) unless the reactor saw the socket become readable; then a peek tells
/// an end or an unsolicited answer (a `408` sent before closing) from a stale readiness. It
/// cannot see what arrived since the reactor last polled: a request sent on such a connection
/// fails, and is resent if it may be.
pub(super) fn nothing_arrived(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => idle_and_open(stream),
    }
}

impl AsyncRead for OriginIo {
    /// Reads into the caller's uninitialized buffer as tokio's own `TcpStream::poll_read` does,
    /// including its short-read rule: a read that filled less than the buffer drained the socket
    /// (epoll is edge-triggered), so the readiness is cleared and the next read waits for the next
    /// edge instead of asking the kernel and getting `EAGAIN`. Without it, every response cost one
    /// more `recvfrom` (1.24 `EAGAIN` per proxied request with `strace -c`; HAProxy: 0).
    /// (Zeroing the buffer first with the safe `initialize_unfilled` cost a memset of hyper's whole
    /// read buffer on every read: 36% more instructions per proxied request, measured with
    /// callgrind.)
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            // SAFETY: `unfilled_mut` lends the uninitialized tail of `buf`; `recv` only writes
            // into it, never de-initializes.
            let unfilled = unsafe { buf.unfilled_mut() };
            let len = unfilled.len();
            let mut short = None;
            let r = self.stream.try_io(Interest::READABLE, || {
                let n = socket2::SockRef::from(&*self.stream).recv(unfilled)?;
                if 0 < n && n < len {
                    // `try_io` clears the readiness it saw on `WouldBlock` only: say that, keep n.
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match short.map_or(r, Ok) {
                Ok(n) => {
                    // SAFETY: the kernel wrote exactly the first `n` bytes of the unfilled tail.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // The instance answered, then reset the connection it had stopped reading: the
                // kernel hands out what it sent before the reset first, so this is its end.
                Err(e) if self.write_closed && e.kind() == io::ErrorKind::ConnectionReset => {
                    return Poll::Ready(Ok(()));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for OriginIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Ok(buf.len()));
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return self.on_write(r, buf.len()),
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.write_closed {
            return Poll::Ready(Ok(len));
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return self.on_write(r, len),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            let _ = socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_answer_sent_before_the_peer_stopped_reading_is_still_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 16];
            s.read_exact(&mut head).await.unwrap();
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n")
                .await
                .unwrap();
            // Close with unread bytes: the kernel answers later writes with a reset.
        });
        let stream = Arc::new(TcpStream::connect(addr).await.unwrap());
        let mut io = OriginIo::new(stream.clone());
        io.write_all(&[b'x'; 16]).await.unwrap();
        server.await.unwrap();
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..64 {
            io.write_all(&chunk)
                .await
                .expect("writes after a reset are swallowed");
        }
        assert!(
            io.write_closed,
            "4 MiB into a closed peer must have failed once"
        );
        let mut answer = Vec::new();
        let _ = io.read_to_end(&mut answer).await;
        assert!(answer.starts_with(b"HTTP/1.1 413"), "{answer:?}");
    }

    #[tokio::test]
    async fn bytes_that_arrive_after_a_short_read_still_wake_the_reader() {
        // A short read clears the socket's readiness; the next bytes must set it again (a lost
        // edge would hang a pooled connection's next response).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = Arc::new(TcpStream::connect(addr).await.unwrap());
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut io = OriginIo::new(stream);
        let wait = std::time::Duration::from_secs(5);
        for round in 0..50u8 {
            peer.write_all(&[round; 10]).await.unwrap();
            let mut got = [0u8; 64];
            let n = tokio::time::timeout(wait, io.read(&mut got))
                .await
                .expect("the reader was woken")
                .unwrap();
            assert_eq!(&got[..n], &[round; 10][..n], "round {round}");
            if n < 10 {
                let rest = tokio::time::timeout(wait, io.read(&mut got[n..]))
                    .await
                    .expect("the reader was woken for the rest")
                    .unwrap();
                assert_eq!(n + rest, 10, "round {round}");
            }
        }
        drop(peer);
        let mut got = [0u8; 8];
        let n = tokio::time::timeout(wait, io.read(&mut got))
            .await
            .expect("the end was seen")
            .unwrap();
        assert_eq!(n, 0, "the peer's close reads as the end");
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_seen_without_reading_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        assert!(idle_and_open(&stream));
        drop(peer);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while idle_and_open(&stream) {
            assert!(tokio::time::Instant::now() < deadline, "close never seen");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
