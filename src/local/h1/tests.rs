//! petrel's own HTTP/1.1 client through `send_to_instance`, against scripted origins on loopback
//! for the cases real origins do not produce on demand (an unsolicited `408` on an idle
//! connection, a body cut short). The conformance suite runs the same path against nginx, a
//! strict h11 server and Node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::{InstanceForm, ReplayableRequest};
use crate::local::{send_to_instance, Instance, Outcome, UpstreamTimeouts};
use crate::trace::ConnectMark;

const WAIT: Duration = Duration::from_secs(5);

fn timeouts() -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: WAIT,
        response: WAIT,
        pool_idle: Duration::from_secs(2),
    }
}

/// Reads one request head (these tests send no bodies).
async fn read_request(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// An origin that runs `script(connection number, stream)` for each connection it accepts.
async fn origin<F, Fut>(script: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let k = n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(k, s));
        }
    });
    (addr, accepted)
}

/// GET / through the pool: the response, its body unread, or the error.
async fn send(inst: &Arc<Instance>) -> Result<http::Response<crate::body::Body>, String> {
    let req = Request::get("/")
        .header("host", "app.test")
        .body(crate::body::empty())
        .unwrap();
    let req = ReplayableRequest::from_peer(req);
    let form = InstanceForm::default();
    let (t, mark) = (timeouts(), ConnectMark::new(std::time::Instant::now()));
    match tokio::time::timeout(WAIT, send_to_instance(inst, &req, form, &t, &mark)).await {
        Err(_) => Err("no response in time".into()),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(Outcome::Failed(e))) => Err(e.to_string()),
        Ok(Err(Outcome::NotSent(e))) => Err(e.to_string()),
        Ok(Err(Outcome::Timeout)) => Err("timeout".into()),
    }
}

/// GET / through the pool; the status, the body and its trailers, or the error.
async fn get(inst: &Arc<Instance>) -> Result<(u16, Bytes, Option<http::HeaderMap>), String> {
    let resp = send(inst).await?;
    let status = resp.status().as_u16();
    let collected = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .map_err(|_| "body timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    Ok((status, collected.to_bytes(), trailers))
}

#[tokio::test]
async fn a_connection_goes_back_to_the_pool_when_its_body_ends() {
    let (addr, accepted) = origin(|_, mut s| async move {
        while read_request(&mut s).await {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                .await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    for _ in 0..3 {
        let (status, body, _) = get(&inst).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"hello"[..]));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "three requests, one connection"
    );
}

/// A response dropped unread (a `fly-replay` answer the edge does not pass on) whose body came
/// whole with its head leaves its connection reusable; one with more to come closes it.
#[tokio::test]
async fn a_response_dropped_unread_keeps_its_connection_only_if_its_body_had_arrived() {
    let (addr, accepted) = origin(|_, mut s| async move {
        let mut n = 0;
        while read_request(&mut s).await {
            n += 1;
            let resp: &[u8] = if n == 2 {
                // Promises more than it sends at first: dropped, the connection must go.
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
            };
            let _ = s.write_all(resp).await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    // Whole body in the buffer with the head: dropped unread, the connection goes back.
    drop(send(&inst).await.unwrap());
    drop(send(&inst).await.unwrap()); // 100 bytes promised, 7 sent: this one is closed
    let (status, body, _) = get(&inst).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"hello"[..]));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the first connection carried the first two requests; the third needed a new one"
    );
}

#[tokio::test]
async fn an_unsolicited_answer_on_an_idle_connection_is_never_the_next_response() {
    // The first connection answers, then sends a 408 while idle and closes (as Apache does when
    // its keep-alive runs out); the next request must get its own answer on a new connection.
    let (addr, accepted) = origin(|k, mut s| async move {
        if !read_request(&mut s).await {
            return;
        }
        if k == 0 {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = s
                .write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        } else {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh").await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    assert_eq!(get(&inst).await.unwrap().1, "first");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, body, _) = get(&inst).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"fresh"[..]));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_chunked_body_arrives_whole_with_its_trailers_and_leaves_the_connection_usable() {
    let (addr, accepted) = origin(|_, mut s| async move {
        while read_request(&mut s).await {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n")
                .await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    let (_, body, trailers) = get(&inst).await.unwrap();
    assert_eq!(&body[..], b"hello world");
    assert_eq!(trailers.unwrap()["x-sum"], "11");
    // The last chunk and the trailer section were read: the second request reuses the connection.
    let (_, body, _) = get(&inst).await.unwrap();
    assert_eq!(&body[..], b"hello world");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_close_delimited_body_ends_with_the_connection_which_is_not_reused() {
    let (addr, accepted) = origin(|_, mut s| async move {
        if read_request(&mut s).await {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    for _ in 0..2 {
        assert_eq!(&get(&inst).await.unwrap().1[..], b"until the end");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_its_connection_is_dropped() {
    let (addr, accepted) = origin(|k, mut s| async move {
        if read_request(&mut s).await {
            let answer: &[u8] = if k == 0 {
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            };
            let _ = s.write_all(answer).await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    let err = get(&inst).await.unwrap_err();
    assert!(err.contains("middle of its response"), "{err}");
    assert_eq!(&get(&inst).await.unwrap().1[..], b"ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_invalid_response_head_is_the_instances_fault() {
    let (addr, _) = origin(|_, mut s| async move {
        if read_request(&mut s).await {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd")
                .await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    let err = get(&inst).await.unwrap_err();
    assert!(err.contains("Content-Length"), "{err}");
}

#[tokio::test]
async fn a_408_that_crossed_a_request_on_a_pooled_connection_sends_it_again_on_a_fresh_one() {
    // The instance's idle timeout answers 408 just as the second request arrives on the pooled
    // connection: the request was never read, so it goes again on a new connection. A 408 on a
    // new connection is the instance's answer and reaches the client.
    let (addr, accepted) = origin(|k, mut s| async move {
        match k {
            0 => {
                if read_request(&mut s).await {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst").await;
                }
                if read_request(&mut s).await {
                    let _ = s
                        .write_all(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            }
            1 => {
                if read_request(&mut s).await {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh").await;
                }
            }
            _ => {
                if read_request(&mut s).await {
                    let _ = s.write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n").await;
                }
            }
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    assert_eq!(get(&inst).await.unwrap().1, "first");
    let (status, body, _) = get(&inst).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"fresh"[..]));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Connection 1 went back to the pool after its answer; drop it so the next request dials.
    inst.sweep_idle(Duration::ZERO);
    assert_eq!(
        get(&inst).await.unwrap().0,
        408,
        "a fresh connection's 408 is an answer"
    );
}

#[tokio::test]
async fn the_sweep_closes_idle_connections_the_instance_closed_or_that_expired() {
    let (addr, _) = origin(|k, mut s| async move {
        if read_request(&mut s).await {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
        if k == 1 {
            // Keeps its side open: only the pool's idle timeout can end this one.
            let _ = read_request(&mut s).await;
        }
        // k == 0 closes at once, without `Connection: close`.
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    let a = get(&inst);
    let b = get(&inst);
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(inst.idle_connections(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await; // the reactor sees the instance's FIN
    inst.sweep_idle(Duration::from_secs(60));
    assert_eq!(
        inst.idle_connections(),
        1,
        "the one the instance closed goes"
    );
    inst.sweep_idle(Duration::ZERO);
    assert_eq!(inst.idle_connections(), 0, "the expired one goes");
}

#[tokio::test]
async fn a_408_that_keeps_the_connection_is_an_answer_and_the_request_goes_once() {
    // Sent on the pooled connection, but the instance keeps it open: this 408 answers the
    // request (an application's own use of the code), and the request must not run twice.
    let (addr, accepted) = origin(|_, mut s| async move {
        if read_request(&mut s).await {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                .await;
        }
        while read_request(&mut s).await {
            let _ = s
                .write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    })
    .await;
    let inst = Instance::new("a-1", "a", addr);
    assert_eq!(get(&inst).await.unwrap().1, "first");
    assert_eq!(get(&inst).await.unwrap().0, 408);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "not sent again on a new connection"
    );
}
