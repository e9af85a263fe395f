//! Per-request phase timings (route, retries, connect, first byte, body): the slow-request log,
//! and the spans exported over OTLP when `tracing.otlp_endpoint` is set.

pub mod otlp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;

/// An attempt's clock: when it began (read once by whoever starts the attempt; the transport
/// reuses it for its pool's idle check and its response deadline), and when its connection was
/// ready (pooled or new), set by the transport. The latter is an atomic, not a lock:
/// nanoseconds after [`mark_base`] plus one, 0 when unset.
#[derive(Debug)]
pub struct ConnectMark {
    at: AtomicU64,
    began: Instant,
}

/// The instant marks count from (the first mark of the process).
fn mark_base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl ConnectMark {
    /// The clock of an attempt that began at `began` (a clock read a moment ago).
    pub fn new(began: Instant) -> Self {
        Self {
            at: AtomicU64::new(0),
            began,
        }
    }

    /// When the attempt began.
    pub fn began(&self) -> Instant {
        self.began
    }

    /// A new attempt began at `began`; its connection is not ready yet.
    fn restart(&mut self, began: Instant) {
        self.began = began;
        *self.at.get_mut() = 0;
    }

    /// The connection is ready now.
    pub fn mark(&self) {
        self.mark_at(Instant::now());
    }

    /// The connection was ready at `at` (a pooled one: when it was checked out, at
    /// [`Self::began`]).
    pub fn mark_at(&self, at: Instant) {
        let since = at.saturating_duration_since(mark_base()).as_nanos() as u64;
        self.at.store(since + 1, Ordering::Relaxed);
    }

    fn take(&self) -> Option<Instant> {
        match self.at.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(mark_base() + Duration::from_nanos(n - 1)),
        }
    }
}

/// Where the request went.
#[derive(Debug, Clone)]
pub struct Target {
    /// Instance id.
    pub instance: std::sync::Arc<str>,
    /// Its region.
    pub region: std::sync::Arc<str>,
    /// Sent over the backhaul to another node.
    pub remote: bool,
    /// The node hosting it.
    pub node: std::sync::Arc<str>,
}

/// What only the access log needs of a request, gathered only while it is on (`crate::access`).
#[derive(Debug, Default)]
pub struct AccessFields {
    entry: crate::access::Entry,
    /// Request body bytes, counted by the upload as it streams.
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
}

impl AccessFields {
    /// A WebSocket ended: its line, with the bytes each way.
    pub fn websocket_ended(mut self, start: Instant, from_client: u64, to_client: u64) {
        self.entry.status = 101;
        self.entry.kind = Some("websocket");
        self.entry.bytes_in = from_client;
        self.entry.bytes_out = to_client;
        self.entry.duration_ms = start.elapsed().as_secs_f64() * 1e3;
        crate::access::log(&self.entry);
    }
}

/// The timeline of one request at the edge.
#[derive(Debug)]
pub struct Trace {
    start: Instant,
    /// The caller's W3C trace, read only while spans are exported.
    parent: Option<otlp::Parent>,
    routed: Option<Instant>,
    connected: Option<Instant>,
    head: Option<Instant>,
    attempts: u32,
    target: Option<Target>,
    /// Reset for each attempt and read after it.
    pub mark: ConnectMark,
    /// The request's id (cloning it shares its bytes).
    request_id: http::HeaderValue,
    /// Set once routed.
    app: Option<Arc<str>>,
    slow: Duration,
    sample: f64,
    access: Option<Box<AccessFields>>,
}

/// Durations of each phase; `None` where the request never got there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phases {
    /// Host lookup and candidate selection.
    pub route: Option<Duration>,
    /// Attempts that were rejected or could not connect, before the one that answered.
    pub retries: Option<Duration>,
    /// Getting a connection for the last attempt: to the owner node (`backhaul_connect`) or to
    /// the local instance (`instance_connect`).
    pub connect: Option<Duration>,
    /// From the connection to the response head.
    pub first_byte: Option<Duration>,
    /// From the response head to the end of the body.
    pub body: Option<Duration>,
    /// Start to end.
    pub total: Duration,
    /// The last attempt went over the backhaul.
    pub remote: bool,
}

impl Phases {
    /// Each phase by name, in order.
    pub fn named(&self) -> [(&'static str, Option<Duration>); 5] {
        let connect = if self.remote {
            "backhaul_connect"
        } else {
            "instance_connect"
        };
        [
            ("route", self.route),
            ("retries", self.retries),
            (connect, self.connect),
            ("first_byte", self.first_byte),
            ("body", self.body),
        ]
    }

    /// The name of the longest phase.
    pub fn slowest(&self) -> &'static str {
        self.named()
            .into_iter()
            .filter_map(|(n, d)| d.map(|d| (n, d)))
            .max_by_key(|(_, d)| *d)
            .map_or("route", |(n, _)| n)
    }
}

impl Trace {
    /// A request that arrived at `start`, continuing the caller's W3C trace if it sent one;
    /// logged if it takes `slow` or more, exported if slow or picked by `sample`.
    ///
    /// Nothing here reads a clock or allocates: a request that ends neither slow nor sampled
    /// costs its trace a few field writes (benches/per-request.sh).
    pub fn new(
        start: Instant,
        headers: &HeaderMap,
        request_id: &http::HeaderValue,
        slow: Duration,
        sample: f64,
    ) -> Self {
        Self {
            start,
            parent: otlp::exporter().and_then(|_| otlp::Parent::from_headers(headers)),
            routed: None,
            connected: None,
            head: None,
            attempts: 0,
            target: None,
            mark: ConnectMark::new(start),
            request_id: request_id.clone(),
            app: None,
            slow,
            sample,
            access: None,
        }
    }

    /// Gathers what the access log writes of this request (call only while it is on).
    pub fn log_access<B>(&mut self, client: std::net::SocketAddr, req: &http::Request<B>) {
        let h = req.headers();
        let text = |n: http::header::HeaderName| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .chars()
                .take(512)
                .collect::<String>()
        };
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| text(http::header::HOST));
        self.access = Some(Box::new(AccessFields {
            entry: crate::access::Entry {
                time: crate::access::rfc3339(self.wall()),
                request_id: self.request_id().to_string(),
                client: client.to_string(),
                host,
                method: req.method().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .chars()
                    .take(2048)
                    .collect(),
                protocol: format!("{:?}", req.version()),
                user_agent: text(http::header::USER_AGENT),
                referer: text(http::header::REFERER),
                at: Some(self.wall()),
                ..Default::default()
            },
            ..Default::default()
        }));
    }

    /// Replaces the path the access log writes (a token in the query is redacted).
    pub fn set_access_path(&mut self, path: String) {
        if let Some(a) = self.access.as_mut() {
            a.entry.path = path.chars().take(2048).collect();
        }
    }

    /// The app's strategy, for the access log.
    pub fn set_strategy(&mut self, strategy: &str) {
        if let Some(a) = self.access.as_mut() {
            a.entry.strategy = strategy.to_string();
        }
    }

    /// The phase that failed, for the access log.
    pub fn set_failure(&mut self, phase: &'static str) {
        if let Some(a) = self.access.as_mut() {
            a.entry.failure = Some(phase);
        }
    }

    /// The counter the upload adds its bytes to, while the access log is on.
    pub fn bytes_in(&self) -> Option<Arc<AtomicU64>> {
        self.access.as_ref().map(|a| a.bytes_in.clone())
    }

    /// `n` more response body bytes went to the client.
    pub fn count_out(&mut self, n: usize) {
        if let Some(a) = self.access.as_mut() {
            a.bytes_out += n as u64;
        }
    }

    /// A page petrel made itself, of `n` body bytes, went to the client: counted unless the
    /// request was `HEAD`, whose response carries no body (RFC 9110 §9.3.2).
    pub fn count_page(&mut self, n: usize) {
        if let Some(a) = self.access.as_mut() {
            if a.entry.method != "HEAD" {
                a.bytes_out += n as u64;
            }
        }
    }

    /// Takes the access fields away from this request's end, for a WebSocket's own line.
    pub fn take_access(&mut self) -> Option<Box<AccessFields>> {
        let mut a = self.access.take()?;
        self.fill(&mut a.entry, Instant::now());
        Some(a)
    }

    /// The routing facts of the entry: app, where it went, tries, phases.
    fn fill(&self, e: &mut crate::access::Entry, end: Instant) {
        e.app = self.app().to_string();
        e.attempts = self.attempts;
        if let Some(t) = &self.target {
            e.instance = t.instance.to_string();
            e.region = t.region.to_string();
            e.node = t.node.to_string();
        }
        let phases = self.phases(end);
        for (name, d) in phases.named() {
            if let Some(d) = d {
                e.phases_ms.insert(name, d.as_secs_f64() * 1e3);
            }
        }
        e.duration_ms = phases.total.as_secs_f64() * 1e3;
    }

    /// The app the request was routed to.
    pub fn set_app(&mut self, app: &Arc<str>) {
        self.app = Some(app.clone());
    }

    /// The app's name, empty before routing.
    pub(crate) fn app(&self) -> &str {
        self.app.as_deref().unwrap_or_default()
    }

    /// The request id as text.
    pub(crate) fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The wall-clock time the request began: the wall clock now, less the monotonic time
    /// since `start` (read when needed, for the few requests that are logged or exported; an
    /// export of an hour-long WebSocket still gets its true start).
    pub(crate) fn wall(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.start.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Candidates are ordered.
    pub fn routed(&mut self) {
        self.routed = Some(Instant::now());
    }

    /// An attempt to `target` starts (the one clock read its transport reuses, through
    /// [`Self::mark`], for its pool and its deadline). The log names the last try's target,
    /// whether it answered or failed (a `504` names the instance that did not answer in time).
    pub fn attempt(&mut self, target: Target) {
        self.attempts += 1;
        self.connected = None;
        self.target = Some(target);
        self.mark.restart(Instant::now());
    }

    /// When the last attempt began, once one has (kept in [`Self::mark`] alone).
    fn attempt_at(&self) -> Option<Instant> {
        (self.attempts > 0).then(|| self.mark.began())
    }

    /// The attempt's connection time, if the transport marked it.
    pub fn attempt_done(&mut self) {
        self.connected = self.mark.take().or(self.connected);
    }

    /// The response head arrived (from the last attempt's target).
    pub fn head(&mut self) {
        self.head = Some(Instant::now());
    }

    /// When the response head arrived, once it has.
    pub fn head_at(&self) -> Option<Instant> {
        self.head
    }

    /// The phases as of `end`.
    pub fn phases(&self, end: Instant) -> Phases {
        let span = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
            _ => None,
        };
        // Without an answer, the phase in progress runs to the end.
        let first_byte = match self.connected {
            Some(c) => span(Some(c), self.head.or(Some(end))),
            None => span(self.attempt_at(), self.head),
        };
        Phases {
            route: span(Some(self.start), self.routed),
            retries: span(self.routed, self.attempt_at()).filter(|_| self.attempts > 1),
            connect: span(
                self.attempt_at(),
                self.connected.or(self.head).or(Some(end)),
            ),
            first_byte,
            body: span(self.head, Some(end)),
            total: end.saturating_duration_since(self.start),
            remote: self.target.as_ref().is_some_and(|t| t.remote),
        }
    }

    /// The request ended at `end` with `status`: log it if slow, export it if slow or sampled.
    pub fn finish(mut self, end: Instant, status: u16) {
        if let Some(mut a) = self.access.take() {
            self.fill(&mut a.entry, end);
            a.entry.status = status;
            a.entry.bytes_in = a.bytes_in.load(Ordering::Relaxed);
            a.entry.bytes_out = a.bytes_out;
            crate::access::log(&a.entry);
        }
        let is_slow = end.saturating_duration_since(self.start) >= self.slow;
        let exporter = otlp::exporter()
            .filter(|_| is_slow || (self.sample > 0.0 && rand::random::<f64>() < self.sample));
        if !is_slow && exporter.is_none() {
            return; // most requests: neither logged nor exported
        }
        let phases = self.phases(end);
        let (app, request_id) = (self.app(), self.request_id());
        if is_slow {
            let ms = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1e3);
            let (instance, region, remote) = match &self.target {
                Some(t) => (&*t.instance, &*t.region, t.remote),
                None => ("", "", false),
            };
            tracing::warn!(
                request_id,
                app,
                status,
                total_ms = phases.total.as_secs_f64() * 1e3,
                slowest = phases.slowest(),
                route_ms = ms(phases.route),
                retries_ms = ms(phases.retries),
                connect_ms = ms(phases.connect),
                connect = phases.named()[2].0,
                first_byte_ms = ms(phases.first_byte),
                body_ms = ms(phases.body),
                attempts = self.attempts,
                instance,
                region,
                remote,
                "slow request"
            );
        }
        if let Some(exporter) = exporter {
            exporter.offer(otlp::Record {
                trace: self,
                phases,
                status,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace that began at `t0`, slow after 1 s, never sampled.
    fn trace_from(t0: Instant) -> Trace {
        let id = http::HeaderValue::from_static("r");
        Trace::new(t0, &HeaderMap::new(), &id, Duration::from_secs(1), 0.0)
    }

    #[test]
    fn phases_add_up_and_name_the_slowest() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = trace_from(t0);
        t.routed = Some(t0 + ms(1));
        t.attempts = 2;
        t.mark.restart(t0 + ms(11));
        t.connected = Some(t0 + ms(13));
        t.head = Some(t0 + ms(513));
        let p = t.phases(t0 + ms(520));
        assert_eq!(p.route, Some(ms(1)));
        assert_eq!(p.retries, Some(ms(10)));
        assert_eq!(p.connect, Some(ms(2)));
        assert_eq!(p.first_byte, Some(ms(500)));
        assert_eq!(p.body, Some(ms(7)));
        assert_eq!(p.total, ms(520));
        assert_eq!(p.slowest(), "first_byte");
    }

    #[test]
    fn a_request_that_never_got_an_answer_has_no_body_phase() {
        let t0 = Instant::now();
        let mut t = trace_from(t0);
        t.routed = Some(t0);
        t.attempts = 1;
        t.mark.restart(t0);
        let p = t.phases(t0 + Duration::from_secs(3));
        assert_eq!((p.body, p.first_byte, p.retries), (None, None, None));
        assert_eq!(p.connect, Some(Duration::from_secs(3)));
        assert_eq!(p.slowest(), "instance_connect");
    }
}
