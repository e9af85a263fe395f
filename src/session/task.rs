//! One session's owner task: the instance's WebSocket, the client attached to it (if any), the
//! replay buffer, pings, hold, takeover and the drain cut, in one loop that owns them all.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame::{
    close_payload, message_limit, to_client, to_instance, Decoder, Frame, FrameError, Opcode,
};
use super::replay::ReplayBuffer;
use crate::http::{read_some, Io, Side};
use crate::telemetry::session_metrics;

/// After one side sent a close frame, how long the other has to answer it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a claimed session waits for the new client's stream (its 101 to be written).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write toward the instance may block before the session ends.
const INSTANCE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Close code sent to a client whose session another client took (SPEC §10).
pub const TAKEN_OVER: u16 = 4001;

/// A session's settings (`[http_service.sessions]`).
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// How long the instance's WebSocket is kept after the client vanished.
    pub hold: Duration,
    /// Bytes of instance→client messages kept for replay.
    pub replay_bytes: usize,
    /// An idle client is pinged after this long; no pong within another and it is gone.
    pub ping_interval: Duration,
}

/// A request to attach a client to the session.
pub struct Attach {
    /// Messages the client already received; `None` to go on live from now.
    pub from: Option<u64>,
    /// The client's stream, ready once its 101 is written.
    pub client: Side,
    /// The counts for the 101, or why the client cannot attach.
    pub reply: oneshot::Sender<Result<Attached, AttachError>>,
}

/// What a client that attached is told in its 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// Client→instance messages the instance was given (`Petrel-Session-Received`).
    pub received: u64,
    /// Missed messages no longer held (`Petrel-Session-Gap`).
    pub gap: u64,
}

/// Why a client could not attach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The client claims more messages than the instance sent (`400`).
    #[error("petrel_resume={asked} is more than the {sent} messages this session has sent")]
    Beyond {
        /// What it claimed.
        asked: u64,
        /// What was sent.
        sent: u64,
    },
    /// The session ended before the client could attach (`404`).
    #[error("the session ended")]
    Ended,
}

/// The client attached now.
struct Client {
    r: ReadHalf<Box<dyn Io>>,
    w: WriteHalf<Box<dyn Io>>,
    frames: Decoder,
    /// Frames of a fragmented client message, forwarded whole when it ends.
    message: Vec<u8>,
    /// When it last sent anything.
    heard: Instant,
    /// The ping petrel sent it and is waiting a pong for: when, and its payload.
    ping: Option<(Instant, [u8; 8])>,
}

/// How a session ended, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The instance sent a close frame, or its stream ended.
    InstanceClosed,
    /// Nobody came back within `hold`.
    HoldExpired,
    /// The node's drain deadline passed.
    Drained,
    /// A side broke the WebSocket protocol.
    Protocol,
}

enum Event {
    Cut,
    Command(Option<Box<Attach>>),
    Instance(std::io::Result<Vec<u8>>),
    Client(std::io::Result<Vec<u8>>),
    PingDue,
    HoldOver,
}

/// The owner task's state.
pub struct Task {
    name: String,
    cfg: SessionConfig,
    inst_r: ReadHalf<Box<dyn Io>>,
    inst_w: WriteHalf<Box<dyn Io>>,
    inst_frames: Decoder,
    /// The instance is in the middle of a fragmented message.
    inst_in_message: bool,
    /// The instance closed (or went away) while no client was attached: the close frame its
    /// client is sent, after what it missed, when it comes back within `hold`.
    last_words: Option<Vec<u8>>,
    /// The largest message (and frame) this session passes.
    limit: u64,
    replay: ReplayBuffer,
    /// Client→instance messages the instance was given.
    received: u64,
    client: Option<Client>,
    held_until: Instant,
    cut: CancellationToken,
    rx: mpsc::Receiver<Box<Attach>>,
    ping_seq: u64,
    /// Bytes from clients and to clients, for the access log.
    up: u64,
    down: u64,
}

impl Task {
    /// A session over the instance's stream, with its first client attached.
    pub fn new(
        name: String,
        cfg: SessionConfig,
        instance: Box<dyn Io>,
        client: Box<dyn Io>,
        cut: CancellationToken,
        rx: mpsc::Receiver<Box<Attach>>,
    ) -> Self {
        let (inst_r, inst_w) = tokio::io::split(instance);
        session_metrics().live.increment(1.0);
        let limit = message_limit(cfg.replay_bytes);
        Self {
            name,
            cfg,
            inst_r,
            inst_w,
            inst_frames: Decoder::new(limit),
            inst_in_message: false,
            last_words: None,
            limit,
            replay: ReplayBuffer::new(cfg.replay_bytes),
            received: 0,
            client: Some(Client::new(client, limit)),
            held_until: Instant::now(),
            cut,
            rx,
            ping_seq: 0,
            up: 0,
            down: 0,
        }
    }

    /// Runs until the session ends; returns how, and the bytes from and to its clients.
    pub async fn run(mut self) -> (End, u64, u64) {
        let end = loop {
            let ev = self.next_event().await;
            let step = match ev {
                Event::Cut => Err(self.cut_both().await),
                Event::Command(None) => Err(self.cut_both().await), // the node is going away
                Event::Command(Some(a)) => self.attach(a).await,
                Event::Instance(Ok(b)) if !b.is_empty() => self.on_instance_bytes(&b).await,
                Event::Instance(_) => self.instance_gone().await,
                Event::Client(Ok(b)) if !b.is_empty() => self.on_client_bytes(&b).await,
                Event::Client(r) => {
                    let why = r
                        .err()
                        .map_or("closed without a close frame".into(), |e| e.to_string());
                    self.detach(&why);
                    Ok(())
                }
                Event::PingDue => {
                    self.ping_due().await;
                    Ok(())
                }
                Event::HoldOver => Err(self.hold_over().await),
            };
            if let Err(end) = step {
                break end;
            }
        };
        self.rx.close();
        while let Ok(a) = self.rx.try_recv() {
            let _ = a.reply.send(Err(AttachError::Ended));
        }
        let m = session_metrics();
        match self.client {
            Some(_) => m.live.decrement(1.0),
            None => m.held.decrement(1.0),
        }
        tracing::info!(session = %self.name, ?end, sent = self.replay.sent(), received = self.received, "session ended");
        (end, self.up, self.down)
    }

    async fn next_event(&mut self) -> Event {
        let ping_at = self.client.as_ref().map(|c| match c.ping {
            Some((t, _)) => t + self.cfg.ping_interval,
            None => c.heard + self.cfg.ping_interval,
        });
        let attached = self.client.is_some();
        let client = &mut self.client;
        let client_read = async {
            match client.as_mut() {
                Some(c) => read_some(&mut c.r).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.cut.cancelled() => Event::Cut,
            a = self.rx.recv() => Event::Command(a),
            r = read_some(&mut self.inst_r), if self.last_words.is_none() => Event::Instance(r),
            r = client_read => Event::Client(r),
            _ = tokio::time::sleep_until(ping_at.unwrap_or_else(Instant::now)), if attached => Event::PingDue,
            _ = tokio::time::sleep_until(self.held_until), if !attached => Event::HoldOver,
        }
    }

    /// Bytes from the instance: messages into the replay buffer and on to the client.
    async fn on_instance_bytes(&mut self, data: &[u8]) -> Result<(), End> {
        self.inst_frames.push(data);
        loop {
            let frame = match self.inst_frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.protocol_error("instance", &e).await),
            };
            let order = match frame.opcode {
                Opcode::Continuation => self.inst_in_message,
                Opcode::Text | Opcode::Binary => !self.inst_in_message,
                _ => true,
            };
            if frame.opcode == Opcode::Close && !frame.valid_close() {
                return Err(self.protocol_error("instance", &FrameError::BadClose).await);
            }
            if frame.masked() || !order {
                let e = if order {
                    FrameError::Masking
                } else {
                    FrameError::Fragments
                };
                return Err(self.protocol_error("instance", &e).await);
            }
            match frame.opcode {
                Opcode::Continuation | Opcode::Text | Opcode::Binary => {
                    self.inst_in_message = !frame.fin;
                    self.replay.push_frame(&frame.raw, frame.fin);
                    self.send_client(&frame.raw).await;
                }
                Opcode::Ping if self.client.is_none() => {
                    // The client is away: petrel answers for it, so the instance keeps the socket.
                    self.send_instance(&to_instance(Opcode::Pong, &frame.payload()))
                        .await?;
                }
                Opcode::Ping | Opcode::Pong => self.send_client(&frame.raw).await,
                Opcode::Close => return self.instance_closed(frame).await,
            }
        }
    }

    /// Bytes from the client: messages on to the instance (fragments gathered, so a client that
    /// vanishes mid-message never leaves half of one at the instance), pongs to petrel's pings
    /// kept, a close frame ends the session.
    async fn on_client_bytes(&mut self, data: &[u8]) -> Result<(), End> {
        let Some(c) = self.client.as_mut() else {
            return Ok(());
        };
        self.up += data.len() as u64;
        c.heard = Instant::now();
        c.frames.push(data);
        loop {
            let Some(c) = self.client.as_mut() else {
                return Ok(());
            };
            let frame = match c.frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.protocol_error("client", &e).await),
            };
            let open = !c.message.is_empty();
            let problem = match frame.opcode {
                _ if !frame.masked() => Some(FrameError::Masking),
                Opcode::Continuation if !open => Some(FrameError::Fragments),
                Opcode::Text | Opcode::Binary if open => Some(FrameError::Fragments),
                Opcode::Close if !frame.valid_close() => Some(FrameError::BadClose),
                _ => None,
            };
            if let Some(e) = problem {
                return Err(self.protocol_error("client", &e).await);
            }
            match frame.opcode {
                Opcode::Continuation | Opcode::Text | Opcode::Binary => {
                    if frame.fin && c.message.is_empty() {
                        self.send_instance(&frame.raw).await?;
                        self.received += 1;
                    } else {
                        c.message.extend_from_slice(&frame.raw);
                        if c.message.len() as u64 > self.limit {
                            let e = FrameError::TooBig(c.message.len() as u64);
                            return Err(self.protocol_error("client", &e).await);
                        }
                        if frame.fin {
                            let whole = std::mem::take(&mut c.message);
                            self.send_instance(&whole).await?;
                            self.received += 1;
                        }
                    }
                }
                Opcode::Pong if c.ping.is_some_and(|(_, p)| frame.payload() == p) => c.ping = None,
                Opcode::Ping | Opcode::Pong => self.send_instance(&frame.raw).await?,
                Opcode::Close => return Err(self.client_closed(frame).await),
            }
        }
    }

    /// Writes to the client; a client that cannot take it within a ping interval is gone.
    async fn send_client(&mut self, bytes: &[u8]) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let write = async {
            c.w.write_all(bytes).await?;
            c.w.flush().await
        };
        match tokio::time::timeout(self.cfg.ping_interval, write).await {
            Ok(Ok(())) => self.down += bytes.len() as u64,
            Ok(Err(e)) => self.detach(&format!("write failed: {e}")),
            Err(_) => self.detach("took no output for a ping interval"),
        }
    }

    async fn send_instance(&mut self, bytes: &[u8]) -> Result<(), End> {
        let write = async {
            self.inst_w.write_all(bytes).await?;
            self.inst_w.flush().await
        };
        match tokio::time::timeout(INSTANCE_WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            _ => self.instance_gone().await,
        }
    }

    /// The client vanished without a close frame: the session is held for `hold`.
    fn detach(&mut self, why: &str) {
        if self.client.take().is_some() {
            let m = session_metrics();
            m.live.decrement(1.0);
            m.held.increment(1.0);
            self.held_until = Instant::now() + self.cfg.hold;
            tracing::info!(session = %self.name, why, hold_s = self.cfg.hold.as_secs_f64(), "session client gone; held");
        }
    }

    async fn ping_due(&mut self) {
        let interval = self.cfg.ping_interval;
        let Some(c) = self.client.as_mut() else {
            return;
        };
        match c.ping {
            Some((at, _)) if at.elapsed() >= interval => {
                self.detach("no pong within a ping interval");
            }
            Some(_) => {}
            None if c.heard.elapsed() >= interval => {
                self.ping_seq += 1;
                let payload = self.ping_seq.to_be_bytes();
                c.ping = Some((Instant::now(), payload));
                self.send_client(&to_client(Opcode::Ping, &payload)).await;
            }
            None => {}
        }
    }

    /// A client attaches: a live one is told 4001 and let go, what the new one missed is sent,
    /// then it goes on live (or, if the instance ended while it was away, gets its close).
    async fn attach(&mut self, a: Box<Attach>) -> Result<(), End> {
        // No count: a client that has received nothing, sent everything still held.
        let from = a.from.unwrap_or(0);
        let replay = match self.replay.replay_from(from) {
            Ok(r) => r,
            Err(sent) => {
                session_metrics().refused.increment(1);
                let _ = a.reply.send(Err(AttachError::Beyond { asked: from, sent }));
                return Ok(());
            }
        };
        let m = session_metrics();
        if let Some(mut old) = self.client.take() {
            m.taken_over.increment(1);
            let bye = to_client(
                Opcode::Close,
                &close_payload(TAKEN_OVER, "session taken over"),
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = old.w.write_all(&bye).await;
                let _ = old.w.shutdown().await;
            })
            .await;
        } else {
            m.held.decrement(1.0);
            m.live.increment(1.0);
        }
        if replay.gap > 0 { &m.gap } else { &m.resumed }.increment(1);
        let counts = Attached {
            received: self.received,
            gap: replay.gap,
        };
        if a.reply.send(Ok(counts)).is_err() {
            self.held_after_failed_attach("the attaching request went away");
            return Ok(());
        }
        match tokio::time::timeout(ATTACH_TIMEOUT, a.client.ready()).await {
            Ok(Ok(io)) => {
                tracing::info!(session = %self.name, from, gap = replay.gap, replayed_bytes = replay.bytes.len(), "client attached");
                self.client = Some(Client::new(io, self.limit));
                self.send_client(&replay.bytes).await;
            }
            Ok(Err(e)) => self.held_after_failed_attach(&e),
            Err(_) => self.held_after_failed_attach("the client's stream was not ready in time"),
        }
        match self.last_words.take() {
            // The instance ended while the client was away: what it missed, then its close.
            Some(bye) if self.client.is_some() => Err(self.last_words_sent(&bye).await),
            other => {
                self.last_words = other;
                Ok(())
            }
        }
    }

    fn held_after_failed_attach(&mut self, why: &str) {
        let m = session_metrics();
        m.live.decrement(1.0);
        m.held.increment(1.0);
        self.held_until = Instant::now() + self.cfg.hold;
        tracing::info!(session = %self.name, why, "session attach failed; held");
    }

    /// Sends the instance's close, kept while the client was away, and waits for the client's.
    async fn last_words_sent(&mut self, bye: &[u8]) -> End {
        self.send_client(bye).await;
        self.await_client_close().await;
        if let Some(c) = self.client.as_mut() {
            let _ = tokio::time::timeout(CLOSE_GRACE, c.w.shutdown()).await;
        }
        End::InstanceClosed
    }

    /// Reads the client for up to [`CLOSE_GRACE`] until its close frame, which it returns.
    async fn await_client_close(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + CLOSE_GRACE;
        while let Some(c) = self.client.as_mut() {
            match tokio::time::timeout_at(deadline, read_some(&mut c.r)).await {
                Ok(Ok(b)) if !b.is_empty() => {
                    c.frames.push(&b);
                    while let Ok(Some(f)) = c.frames.next_frame() {
                        if f.opcode == Opcode::Close {
                            return Some(f);
                        }
                    }
                }
                _ => return None,
            }
        }
        None
    }

    async fn client_closed(&mut self, close: Frame) -> End {
        let _ = self.send_instance(&close.raw).await;
        // The instance's answering close (and anything it still had in flight) goes back.
        let deadline = Instant::now() + CLOSE_GRACE;
        while let Ok(Ok(b)) = tokio::time::timeout_at(deadline, read_some(&mut self.inst_r)).await {
            if b.is_empty() {
                break;
            }
            self.inst_frames.push(&b);
            let mut done = false;
            while let Ok(Some(f)) = self.inst_frames.next_frame() {
                self.send_client(&f.raw).await;
                done |= f.opcode == Opcode::Close;
            }
            if done {
                break;
            }
        }
        self.shutdown_both().await;
        End::ClientClosed
    }

    /// The instance sent a close frame. With a client attached it goes on to the client, whose
    /// answer goes back, and the session ends; without one, petrel answers it and keeps it for
    /// the client's return within `hold`.
    async fn instance_closed(&mut self, close: Frame) -> Result<(), End> {
        if self.client.is_none() {
            let code = close.close_code().unwrap_or(1000);
            let answer = to_instance(Opcode::Close, &code.to_be_bytes());
            let _ = tokio::time::timeout(CLOSE_GRACE, self.inst_w.write_all(&answer)).await;
            let _ = tokio::time::timeout(CLOSE_GRACE, self.inst_w.shutdown()).await;
            tracing::info!(session = %self.name, code, "instance closed while the client was away; its close waits for the client");
            self.last_words = Some(close.raw.to_vec());
            return Ok(());
        }
        self.send_client(&close.raw).await;
        if let Some(reply) = self.await_client_close().await {
            let _ = self.send_instance(&reply.raw).await;
        }
        self.shutdown_both().await;
        Err(End::InstanceClosed)
    }

    /// The instance's stream ended or failed without a close frame. With a client attached the
    /// session ends (1011 to the client); without one it is kept for the client's return, which
    /// gets what it missed and then 1011.
    async fn instance_gone(&mut self) -> Result<(), End> {
        if self.client.is_none() {
            if self.last_words.is_none() {
                tracing::info!(session = %self.name, "instance went away while the client was away");
                let _ = tokio::time::timeout(CLOSE_GRACE, self.inst_w.shutdown()).await;
                let bye = close_payload(1011, "instance went away");
                self.last_words = Some(to_client(Opcode::Close, &bye));
            }
            return Ok(());
        }
        if let Some(c) = self.client.as_mut() {
            let bye = to_client(Opcode::Close, &close_payload(1011, "instance went away"));
            let _ = tokio::time::timeout(CLOSE_GRACE, c.w.write_all(&bye)).await;
        }
        self.shutdown_both().await;
        Err(End::InstanceClosed)
    }

    async fn hold_over(&mut self) -> End {
        tracing::info!(session = %self.name, "session hold expired; closing the instance's WebSocket");
        if self.last_words.is_none() {
            let bye = to_instance(Opcode::Close, &close_payload(1001, "session hold expired"));
            let _ = self.send_instance(&bye).await;
        }
        self.shutdown_both().await;
        End::HoldExpired
    }

    /// The drain deadline: close 1001 both ways (as a spliced WebSocket gets).
    async fn cut_both(&mut self) -> End {
        let going = close_payload(1001, "petrel is shutting down");
        if let Some(c) = self.client.as_mut() {
            let bye = to_client(Opcode::Close, &going);
            let _ = tokio::time::timeout(CLOSE_GRACE, c.w.write_all(&bye)).await;
        }
        if self.last_words.is_none() {
            let _ = self
                .send_instance(&to_instance(Opcode::Close, &going))
                .await;
        }
        self.shutdown_both().await;
        End::Drained
    }

    async fn protocol_error(&mut self, side: &str, e: &FrameError) -> End {
        tracing::warn!(session = %self.name, side, error = %e, "session ended: WebSocket protocol error");
        let p = close_payload(e.close_code(), &e.to_string());
        if let Some(c) = self.client.as_mut() {
            let _ = tokio::time::timeout(CLOSE_GRACE, c.w.write_all(&to_client(Opcode::Close, &p)))
                .await;
        }
        let _ = self.send_instance(&to_instance(Opcode::Close, &p)).await;
        self.shutdown_both().await;
        End::Protocol
    }

    async fn shutdown_both(&mut self) {
        let _ = tokio::time::timeout(CLOSE_GRACE, self.inst_w.shutdown()).await;
        if let Some(c) = self.client.as_mut() {
            let _ = tokio::time::timeout(CLOSE_GRACE, c.w.shutdown()).await;
        }
    }
}

impl Client {
    fn new(io: Box<dyn Io>, limit: u64) -> Self {
        let (r, w) = tokio::io::split(io);
        Self {
            r,
            w,
            frames: Decoder::new(limit),
            message: Vec::new(),
            heard: Instant::now(),
            ping: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A session over in-memory streams: (task, instance's end, client's end, its mailbox).
    fn session(
        replay_bytes: usize,
    ) -> (Task, DuplexStream, DuplexStream, mpsc::Sender<Box<Attach>>) {
        let (inst, inst_peer) = tokio::io::duplex(1 << 20);
        let (client, client_peer) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(1);
        let cfg = SessionConfig {
            hold: Duration::from_secs(5),
            replay_bytes,
            ping_interval: Duration::from_secs(5),
        };
        let t = Task::new(
            "test".into(),
            cfg,
            Box::new(inst),
            Box::new(client),
            CancellationToken::new(),
            rx,
        );
        (t, inst_peer, client_peer, tx)
    }

    /// The close code of the first close frame in `bytes` (server or client frames).
    fn close_code_in(bytes: &[u8]) -> Option<u16> {
        let mut d = Decoder::default();
        d.push(bytes);
        while let Ok(Some(f)) = d.next_frame() {
            if f.opcode == Opcode::Close {
                return f.close_code();
            }
        }
        None
    }

    /// Runs the session with `from_instance` and `from_client` written to it; returns how it
    /// ended and what each side received.
    async fn run(
        replay_bytes: usize,
        from_instance: Vec<u8>,
        from_client: Vec<u8>,
    ) -> (End, Vec<u8>, Vec<u8>) {
        let (t, mut inst, mut client, _mailbox) = session(replay_bytes);
        let task = tokio::spawn(t.run());
        inst.write_all(&from_instance).await.unwrap();
        client.write_all(&from_client).await.unwrap();
        let (end, _, _) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the session ends")
            .unwrap();
        let (mut to_inst, mut to_client) = (Vec::new(), Vec::new());
        let _ = tokio::time::timeout(Duration::from_secs(1), inst.read_to_end(&mut to_inst)).await;
        let _ =
            tokio::time::timeout(Duration::from_secs(1), client.read_to_end(&mut to_client)).await;
        (end, to_inst, to_client)
    }

    #[tokio::test]
    async fn frames_masked_the_wrong_way_end_the_session_with_1002() {
        // A masked frame from the instance would make browsers drop the connection, and every
        // resume would replay it: the session ends instead.
        let (end, at_inst, at_client) =
            run(1 << 20, to_instance(Opcode::Text, b"masked"), Vec::new()).await;
        assert_eq!(end, End::Protocol);
        assert_eq!(close_code_in(&at_client), Some(1002));
        assert_eq!(close_code_in(&at_inst), Some(1002));
        let (end, _, at_client) =
            run(1 << 20, Vec::new(), to_client(Opcode::Text, b"unmasked")).await;
        assert_eq!(end, End::Protocol);
        assert_eq!(close_code_in(&at_client), Some(1002));
    }

    #[tokio::test]
    async fn fragments_out_of_order_and_bad_close_codes_end_the_session() {
        let orphan = {
            let mut f = to_instance(Opcode::Text, b"x");
            f[0] &= 0xF0; // a continuation with no message begun
            f
        };
        let (end, to_inst, _) = run(1 << 20, Vec::new(), orphan).await;
        assert_eq!(end, End::Protocol);
        let mut d = Decoder::default();
        d.push(&to_inst);
        let first = d.next_frame().unwrap().expect("a frame");
        assert_eq!(first.opcode, Opcode::Close, "the orphan was not forwarded");
        let open_then_new = [
            {
                let mut f = to_instance(Opcode::Text, b"first-");
                f[0] &= 0x7F; // no FIN
                f
            },
            to_instance(Opcode::Text, b"second"),
        ]
        .concat();
        let (end, _, _) = run(1 << 20, Vec::new(), open_then_new).await;
        assert_eq!(end, End::Protocol);
        let bad_close = to_instance(Opcode::Close, &1005u16.to_be_bytes());
        let (end, _, to_client) = run(1 << 20, Vec::new(), bad_close).await;
        assert_eq!(end, End::Protocol);
        assert_eq!(close_code_in(&to_client), Some(1002));
    }

    #[tokio::test]
    async fn a_client_message_over_the_limit_is_refused_with_1009_not_buffered() {
        // 1 MiB is the least limit; a fragmented message past it ends the session.
        let mut msg = Vec::new();
        let part = vec![b'x'; 256 << 10];
        for i in 0..5 {
            let mut f = to_instance(
                if i == 0 {
                    Opcode::Text
                } else {
                    Opcode::Continuation
                },
                &part,
            );
            f[0] &= 0x7F;
            msg.extend(f);
        }
        let (end, to_inst, to_client) = run(64 << 10, Vec::new(), msg).await;
        assert_eq!(end, End::Protocol);
        assert_eq!(close_code_in(&to_client), Some(1009));
        assert_eq!(
            close_code_in(&to_inst),
            Some(1009),
            "no fragment reached the instance"
        );
    }
}
