//! `[simulate]` for streams: bytes written are held for a fixed one-way delay before they go out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// A stream whose writes reach the peer `delay` later (reads are untouched).
pub struct Delayed<S> {
    read: tokio::io::ReadHalf<S>,
    tx: mpsc::UnboundedSender<(tokio::time::Instant, Option<Bytes>)>,
    delay: Duration,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Delayed<S> {
    /// Wraps `stream`; a task owns the write half and releases each chunk when it is due.
    pub fn new(stream: S, delay: Duration) -> Self {
        let (read, mut write) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Option<Bytes>)>();
        tokio::spawn(async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                let r = match chunk {
                    Some(b) => write.write_all(&b).await,
                    None => write.shutdown().await,
                };
                if r.is_err() {
                    break;
                }
            }
        });
        Self { read, tx, delay }
    }
}

impl<S: AsyncRead + AsyncWrite> AsyncRead for Delayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite> AsyncWrite for Delayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let due = tokio::time::Instant::now() + self.delay;
        match self.tx.send((due, Some(Bytes::copy_from_slice(buf)))) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let due = tokio::time::Instant::now() + self.delay;
        let _ = self.tx.send((due, None));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn writes_arrive_after_the_delay() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut d = Delayed::new(a, Duration::from_millis(40));
        let t0 = tokio::time::Instant::now();
        d.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        assert!(t0.elapsed() >= Duration::from_millis(40));
    }
}
