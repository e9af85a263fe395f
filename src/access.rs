//! The access log (SPEC §11): one line per request, and per WebSocket when it ends, to stderr or a
//! file, as JSON or in a `combined`-like text form. Lines go to a writer thread through a bounded
//! queue: the request path never waits on the disk; a full queue drops the line and counts it.
//! SIGUSR1 reopens the file (logrotate's `postrotate`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Lines queued for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where the access log goes (`log.access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard error, beside the process log.
    Stderr,
    /// A file, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// How each line is written (`log.access_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// Apache's combined format, then petrel's own fields as `key=value`.
    Combined,
}

/// One finished request or WebSocket.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Entry {
    /// When it arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `Petrel-Request-Id`.
    pub request_id: String,
    /// The client's address, `ip:port`.
    pub client: String,
    /// The Host (or `:authority`), as routed.
    pub host: String,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The client's protocol: `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: String,
    /// Status sent to the client (`101` for a WebSocket).
    pub status: u16,
    /// Request body bytes read from the client (for a WebSocket: bytes the client sent).
    pub bytes_in: u64,
    /// Response body bytes sent to the client (for a WebSocket: bytes sent to the client).
    pub bytes_out: u64,
    /// Start to end, milliseconds.
    pub duration_ms: f64,
    /// The app, if one was routed to.
    pub app: String,
    /// The instance the last try went to: the one that answered, or the one that did not (a
    /// `502`, a `504`).
    pub instance: String,
    /// The node hosting it.
    pub node: String,
    /// Its region.
    pub region: String,
    /// The app's strategy.
    pub strategy: String,
    /// Tries made.
    pub attempts: u32,
    /// Each phase's time in milliseconds (`route`, `retries`, `instance_connect` or
    /// `backhaul_connect`, `first_byte`, `body`); absent phases were not reached.
    pub phases_ms: std::collections::BTreeMap<&'static str, f64>,
    /// The phase that failed (SPEC §8 `phase` values), if the request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'static str>,
    /// `User-Agent`.
    pub user_agent: String,
    /// `Referer`.
    pub referer: String,
    /// When it arrived, for the combined format's `[day/Mon/year:h:m:s +0000]`.
    #[serde(skip)]
    pub at: Option<SystemTime>,
    /// `websocket` for a WebSocket's line, else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

enum Msg {
    Line(String),
    Reopen,
}

struct Sink {
    tx: SyncSender<Msg>,
    format: Format,
    dropped: AtomicU64,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Starts the writer (once per process); `Err` if the file cannot be opened.
pub fn install(target: Target, format: Format) -> io::Result<()> {
    let out = open(&target)?;
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("petrel-access-log".into())
        .spawn(move || write_loop(rx, target, out))?;
    let _ = SINK.set(Sink {
        tx,
        format,
        dropped: AtomicU64::new(0),
    });
    Ok(())
}

/// True when an access log is being written (the request path gathers its fields only then).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Reopens the file (after logrotate moved it); stderr needs nothing.
pub fn reopen() {
    if let Some(s) = SINK.get() {
        let _ = s.tx.try_send(Msg::Reopen);
    }
}

/// Lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Queues `e`; never blocks.
pub fn log(e: &Entry) {
    let Some(s) = SINK.get() else { return };
    let line = match s.format {
        Format::Json => serde_json::to_string(e).unwrap_or_default(),
        Format::Combined => combined(e),
    };
    if let Err(TrySendError::Full(_)) = s.tx.try_send(Msg::Line(line)) {
        s.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// `client - - [time] "METHOD path PROTO" status bytes "referer" "agent" key=value…`, Apache's
/// combined format (quotes and backslashes escaped as Apache does), then petrel's fields.
fn combined(e: &Entry) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let time = e.at.map_or_else(|| e.time.clone(), clf_time);
    let mut line = format!(
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" request_id={} host={} app={} instance={} node={} region={} strategy={} attempts={} duration_ms={:.3} bytes_in={}",
        e.client.rsplit_once(':').map_or(e.client.as_str(), |(ip, _)| ip),
        time,
        e.method,
        q(&e.path),
        e.protocol,
        e.status,
        e.bytes_out,
        if e.referer.is_empty() { "-".to_string() } else { q(&e.referer) },
        q(&e.user_agent),
        e.request_id,
        e.host,
        dash(&e.app),
        dash(&e.instance),
        dash(&e.node),
        dash(&e.region),
        dash(&e.strategy),
        e.attempts,
        e.duration_ms,
        e.bytes_in,
    );
    for (k, v) in &e.phases_ms {
        line.push_str(&format!(" {k}_ms={v:.3}"));
    }
    if let Some(f) = e.failure {
        line.push_str(&format!(" failure={f}"));
    }
    if let Some(k) = e.kind {
        line.push_str(&format!(" kind={k}"));
    }
    line
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn open(target: &Target) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stderr => Box::new(io::stderr()),
        Target::File(p) => Box::new(BufWriter::new(append(p)?)),
    })
}

fn append(p: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

fn write_loop(rx: Receiver<Msg>, target: Target, mut out: Box<dyn Write + Send>) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Write what is queued, then flush once.
        while let Some(msg) = next {
            match msg {
                Msg::Line(l) => {
                    let _ = out.write_all(l.as_bytes());
                    let _ = out.write_all(b"\n");
                }
                Msg::Reopen => {
                    let _ = out.flush();
                    match open(&target) {
                        Ok(o) => {
                            out = o;
                            tracing::info!("access log reopened");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "access log could not be reopened; still writing the old file")
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// The Common Log Format's time, e.g. `01/Dec/2026:01:02:03 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let iso = rfc3339(t); // 2026-12-01T01:02:03.456Z
    let month = iso[5..7].parse::<usize>().unwrap_or(1).clamp(1, 12);
    format!(
        "{}/{}/{}:{} +0000",
        &iso[8..10],
        MONTHS[month - 1],
        &iso[0..4],
        &iso[11..19]
    )
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-12-01T01:02:03.456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_550_923_456);
        assert_eq!(rfc3339(t), "2025-12-01T01:02:03.456Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T"));
    }

    #[test]
    fn combined_lines_read_like_apache_s_then_petrel_s() {
        let e = Entry {
            time: "t".into(),
            client: "127.0.0.1:5000".into(),
            method: "GET".into(),
            path: "/a?b".into(),
            protocol: "HTTP/1.1".into(),
            status: 200,
            bytes_out: 12,
            user_agent: "curl/8".into(),
            app: "hello".into(),
            failure: Some("instance_full"),
            ..Entry::default()
        };
        let l = combined(&e);
        assert!(
            l.starts_with("127.0.0.1 - - [t] \"GET /a?b HTTP/1.1\" 200 12 \"-\" \"curl/8\""),
            "{l}"
        );
        let e = Entry {
            at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_550_923)),
            user_agent: "a\\\"b".into(),
            referer: "http://r/".into(),
            ..e
        };
        let l = combined(&e);
        assert!(l.contains("[01/Dec/2025:01:02:03 +0000]"), "{l}");
        assert!(l.contains("\"http://r/\" \"a\\\\\\\"b\""), "{l}");
        assert!(
            l.contains(" app=hello ")
                && l.contains(" instance=- ")
                && l.ends_with("failure=instance_full"),
            "{l}"
        );
    }
}
