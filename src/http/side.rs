//! One end of an upgraded connection (a WebSocket), as a byte stream: a hyper upgrade, a raw
//! stream, or a stream a transport hands over later. Shared by the edge, the backhaul owner and
//! the session layer.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Any byte stream a connection can run on (TCP, TLS, an upgraded HTTP connection, a QUIC stream).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One side of a splice.
pub enum Side {
    /// An HTTP/1.1 upgrade that completes once the 101 is through.
    Hyper(OnUpgrade),
    /// A stream that is already raw bytes.
    Stream(Box<dyn Io>),
    /// A stream handed over once the transport has written its own 101 head (QUIC backhaul).
    Later(tokio::sync::oneshot::Receiver<Box<dyn Io>>),
}

impl Side {
    /// The raw stream, once the side is ready; an error says why it never became one.
    pub async fn ready(self) -> Result<Box<dyn Io>, String> {
        match self {
            Side::Hyper(on) => Ok(Box::new(TokioIo::new(on.await.map_err(|e| e.to_string())?))),
            Side::Stream(s) => Ok(s),
            Side::Later(rx) => rx.await.map_err(|_| "stream never handed over".to_string()),
        }
    }
}

/// Bytes read at a time in each direction of a splice.
pub const RELAY_BUF: usize = 8 * 1024;

thread_local! {
    /// The read buffer every splice on this thread reads into, lent only while a read is being
    /// polled: an idle WebSocket holds no buffer at all (two 8 KiB buffers each were most of its
    /// memory), and what a read returns is copied out at its exact length.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; RELAY_BUF].into_boxed_slice());
}

/// Reads what `r` has (at most [`RELAY_BUF`] bytes); empty at EOF.
pub async fn read_some<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    std::future::poll_fn(|cx| {
        let mut poll = |buf: &mut [u8]| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().to_vec())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        };
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut buf) => poll(&mut buf),
            Err(_) => poll(&mut vec![0u8; RELAY_BUF]), // a read polled from inside another
        })
    })
    .await
}
