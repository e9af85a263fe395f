//! The retry loop of one request as a state machine: which try comes next, when retrying must
//! stop (budget spent, body not replayable, a replay's deadline passed), and the error a request
//! ends with when no try answered. [`drive`] runs it over any transport; the proxy passes its
//! real attempts (`attempt.rs`), the tests below scripted ones under paused time.

use std::future::Future;

use http::Response;
use tokio::time::Instant;

use super::attempt::{Miss, Step};
use super::error::ProxyError;
use crate::backhaul::BackhaulError;
use crate::body::Body;
use crate::http::Side;
use crate::local::{ConnectError, Slot};
use crate::telemetry::RetryReason;

/// One try the machine allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Try {
    /// Which try (0-based): an index into the pick's order.
    pub n: usize,
    /// The retry budget's last try (where the proxy may swap in its last resort).
    pub last: bool,
    /// Why the try before this one missed (`None` for the first try): a retry, to be counted.
    pub retry_of: Option<RetryReason>,
}

/// A request's tries so far and what they missed on.
pub(super) struct Retry<'a> {
    app: &'a str,
    forced: Option<&'a str>,
    budget: usize,
    tries: usize,
    next: usize,
    full: usize,
    last_instance: Option<ConnectError>,
    last_backhaul: Option<BackhaulError>,
    previous: Option<RetryReason>,
}

/// Why the machine allows no further try.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// Every picked candidate was tried (the pick holds at most the budget; a fallback after a
    /// replay may hold one more).
    Exhausted,
    /// The request body was partly sent and is too large to send again.
    NotReplayable,
    /// A `fly-replay`'s `timeout` passed before this retry (it bounds reaching the target, never
    /// a try under way).
    Deadline,
}

impl<'a> Retry<'a> {
    /// A loop for app `app` over `tries` picked candidates (at most one try each), where `budget`
    /// (1 + the app's `retries`) only marks the budget's last try; `forced`: the instance a
    /// `fly-force-instance-id` named, if any.
    pub fn new(app: &'a str, forced: Option<&'a str>, budget: usize, tries: usize) -> Self {
        Self {
            app,
            forced,
            budget,
            tries,
            next: 0,
            full: 0,
            last_instance: None,
            last_backhaul: None,
            previous: None,
        }
    }

    /// The error for a request that made no try at all.
    pub fn untried(self) -> ProxyError {
        self.error(Stop::Exhausted)
    }

    /// The next try, or why there is none. `now` reads the clock, only when a retry must be
    /// checked against `deadline`. `can_replay`: the request can still be sent again whole.
    fn turn(
        &mut self,
        now: impl FnOnce() -> Instant,
        deadline: Option<Instant>,
        can_replay: bool,
    ) -> Result<Try, Stop> {
        let n = self.next;
        if n >= self.tries {
            return Err(Stop::Exhausted);
        }
        if n > 0 && deadline.is_some_and(|d| now() >= d) {
            return Err(Stop::Deadline);
        }
        let retry_of = self.previous.take();
        if retry_of.is_some() && !can_replay {
            return Err(Stop::NotReplayable);
        }
        self.next += 1;
        Ok(Try {
            n,
            last: n + 1 == self.budget,
            retry_of,
        })
    }

    /// A try missed: nothing reached its target, so the next one may go.
    fn missed(&mut self, reason: RetryReason, miss: Miss) {
        self.previous = Some(reason);
        match miss {
            Miss::Full => self.full += 1,
            Miss::Instance(e) => self.last_instance = Some(e),
            Miss::Backhaul(e) => self.last_backhaul = Some(e),
        }
    }

    /// The error for `stop`: the replay's deadline, or what the misses add up to (every target
    /// full: 503; only unreachable ones: 502 naming the last failure).
    fn error(self, stop: Stop) -> ProxyError {
        if stop == Stop::Deadline {
            return ProxyError::ReplayTarget {
                app: self.app.to_string(),
                target: "within the replay's timeout".into(),
            };
        }
        if let Some(forced) = self.forced {
            return ProxyError::ForcedUnavailable(forced.chars().take(63).collect());
        }
        match (self.full, self.last_instance, self.last_backhaul) {
            (0, Some(last), _) => ProxyError::Connect {
                app: self.app.to_string(),
                last,
            },
            (0, None, Some(last)) => ProxyError::Backhaul {
                app: self.app.to_string(),
                last: last.to_string(),
            },
            _ => ProxyError::AtCapacity(self.app.to_string()),
        }
    }
}

/// What answered: the response, the instance's upgraded stream or slot, and which try it was.
pub(super) struct Answer {
    /// The response.
    pub resp: Response<Body>,
    /// The upgraded stream toward the instance, for a 101.
    pub side: Option<Side>,
    /// The local instance's slot, held until the response ends.
    pub slot: Option<Slot>,
    /// Which try answered (an index into the pick's order).
    pub n: usize,
}

/// Where the tries go: the proxy's local instances and backhaul, or a test's script.
pub(super) trait Transport {
    /// Makes try `t` and says what came of it.
    fn attempt(&mut self, t: Try) -> impl Future<Output = Step> + Send;
    /// True while the request can still be sent again whole.
    fn can_replay(&self) -> bool;
}

/// Runs `retry` to its end: each allowed try goes to `transport`; a miss leads to the next try,
/// an answer or a failure after the request went out ends the loop.
///
/// # Errors
/// The failure of a try that went out ([`Step::Fatal`]), or, when no try answered, what
/// [`Retry`] makes of the misses.
pub(super) async fn drive(
    mut retry: Retry<'_>,
    deadline: Option<Instant>,
    transport: &mut impl Transport,
) -> Result<Answer, ProxyError> {
    loop {
        let t = match retry.turn(Instant::now, deadline, transport.can_replay()) {
            Ok(t) => t,
            Err(stop) => return Err(retry.error(stop)),
        };
        match transport.attempt(t).await {
            Step::Done(resp, side, slot) => {
                return Ok(Answer {
                    resp,
                    side,
                    slot,
                    n: t.n,
                })
            }
            Step::Fatal(e) => return Err(e),
            Step::Next(reason, miss) => retry.missed(reason, miss),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use http::StatusCode;

    use super::*;

    /// How long a scripted try takes when it sleeps (paused time makes it free).
    const TRY_TAKES: Duration = Duration::from_millis(600);

    /// What a scripted transport does on each try.
    enum Script {
        Answer(u16),
        Full,
        ConnectRefused,
        NotSent,
        SentThenFailed,
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn step(s: &Script) -> Step {
        match s {
            Script::Answer(code) => {
                let mut r = Response::new(crate::body::empty());
                *r.status_mut() = StatusCode::from_u16(*code).unwrap();
                Step::Done(r, None, None)
            }
            Script::Full => Step::Next(RetryReason::Full, Miss::Full),
            Script::ConnectRefused => Step::Next(
                RetryReason::Connect,
                Miss::Instance(ConnectError::Io(
                    addr(),
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                )),
            ),
            Script::NotSent => Step::Next(
                RetryReason::Connect,
                Miss::Backhaul(BackhaulError::NotSent(addr())),
            ),
            Script::SentThenFailed => Step::Fatal(ProxyError::Backhaul {
                app: "a".into(),
                last: BackhaulError::Io(addr(), "reset".into()).to_string(),
            }),
        }
    }

    /// A scripted transport: one entry per candidate; records the tries it saw.
    struct Scripted<'a> {
        script: &'a [Script],
        seen: Vec<Try>,
        replayable: bool,
        sleep: bool,
    }

    impl Transport for Scripted<'_> {
        fn attempt(&mut self, t: Try) -> impl Future<Output = Step> + Send {
            self.seen.push(t);
            let (sleep, s) = (self.sleep, &self.script[t.n]);
            async move {
                if sleep {
                    tokio::time::sleep(TRY_TAKES).await;
                }
                step(s)
            }
        }
        fn can_replay(&self) -> bool {
            self.replayable
        }
    }

    /// Runs a loop of `budget` tries over `script`; returns the result and the tries made.
    async fn run(
        budget: usize,
        script: &[Script],
        deadline: Option<Instant>,
        replayable: bool,
        sleep: bool,
    ) -> (Result<Answer, ProxyError>, Vec<Try>) {
        let mut t = Scripted {
            script,
            seen: Vec::new(),
            replayable,
            sleep,
        };
        let retry = Retry::new("a", None, budget, script.len());
        let out = drive(retry, deadline, &mut t).await;
        (out, t.seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_reject_moves_on_and_the_retry_is_named() {
        let (out, seen) = run(4, &[Script::Full, Script::Answer(200)], None, true, false).await;
        let a = out.expect("the second answers");
        assert_eq!((a.n, a.resp.status()), (1, StatusCode::OK));
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].retry_of, None);
        assert_eq!(seen[1].retry_of, Some(RetryReason::Full));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_failure_and_a_request_not_sent_move_on() {
        let script = [Script::ConnectRefused, Script::NotSent, Script::Answer(204)];
        let (out, seen) = run(4, &script, None, true, false).await;
        assert_eq!(out.expect("the third answers").n, 2);
        assert_eq!(seen[1].retry_of, Some(RetryReason::Connect));
        assert_eq!(seen[2].retry_of, Some(RetryReason::Connect));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_after_the_request_went_out_is_never_retried() {
        let script = [Script::SentThenFailed, Script::Answer(200)];
        let (out, seen) = run(4, &script, None, true, false).await;
        assert!(matches!(out, Err(ProxyError::Backhaul { .. })));
        assert_eq!(seen.len(), 1, "the second candidate is not tried");
    }

    #[tokio::test(start_paused = true)]
    async fn every_try_full_is_503_and_the_budgets_last_try_is_marked() {
        let script = [Script::Full, Script::Full, Script::Full];
        let (out, seen) = run(3, &script, None, true, false).await;
        let e = out.err().expect("no answer");
        assert!(matches!(e, ProxyError::AtCapacity(_)), "{e}");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(seen.len(), 3, "one try per picked candidate");
        assert_eq!(
            seen.iter().map(|t| t.last).collect::<Vec<_>>(),
            [false, false, true],
            "the budget's last try is marked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_unreachable_targets_give_502_naming_the_last_failure() {
        let (out, _) = run(
            4,
            &[Script::NotSent, Script::ConnectRefused],
            None,
            true,
            false,
        )
        .await;
        let e = out.err().expect("no answer");
        assert!(matches!(e, ProxyError::Connect { .. }), "{e}");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let (out, _) = run(4, &[Script::NotSent, Script::NotSent], None, true, false).await;
        let e = out.err().expect("no answer");
        assert!(matches!(e, ProxyError::Backhaul { .. }), "{e}");
        // One full target among unreachable ones: the app is at capacity, not down.
        let (out, _) = run(4, &[Script::Full, Script::NotSent], None, true, false).await;
        assert!(matches!(out, Err(ProxyError::AtCapacity(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_cannot_be_sent_again_stops_after_the_first_miss() {
        let (out, seen) = run(4, &[Script::Full, Script::Answer(200)], None, false, false).await;
        assert!(matches!(out, Err(ProxyError::AtCapacity(_))));
        assert_eq!(seen.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replay_deadline_stops_retries_but_not_the_try_under_way() {
        // Each try takes 600 ms of (paused) time; the deadline is 1 s away: the first two tries
        // start before it, the third would start after it.
        let deadline = Instant::now() + Duration::from_secs(1);
        let script = [Script::Full, Script::Full, Script::Answer(200)];
        let (out, seen) = run(4, &script, Some(deadline), true, true).await;
        assert!(matches!(out, Err(ProxyError::ReplayTarget { .. })));
        assert_eq!(seen.len(), 2);
        // A slow answer that ends after the deadline still counts.
        let deadline = Instant::now() + Duration::from_millis(100);
        let (out, _) = run(4, &[Script::Answer(200)], Some(deadline), true, true).await;
        assert_eq!(out.expect("answered").resp.status(), StatusCode::OK);
        // The first try goes even when the deadline passed before it (a replay's target is
        // always asked once).
        let past = Instant::now() - Duration::from_millis(1);
        let (out, seen) = run(4, &[Script::Answer(200)], Some(past), true, false).await;
        assert_eq!(out.expect("answered").n, 0);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_forced_instance_that_missed_is_named() {
        let mut r = Retry::new("a", Some("inst-1"), 2, 1);
        let now = Instant::now();
        assert!(r.turn(|| now, None, true).is_ok());
        r.missed(RetryReason::Full, Miss::Full);
        let stop = r.turn(|| now, None, true).unwrap_err();
        assert!(matches!(r.error(stop), ProxyError::ForcedUnavailable(f) if f == "inst-1"));
    }
}
