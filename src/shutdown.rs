//! One drain signal passed down from `main`: counted tasks, a deadline, and a fast path for a second signal.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// Cloned into every task that must finish (or be cut) before the process exits.
#[derive(Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    cut: CancellationToken,
    handover: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh, not-draining signal with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the drain: listeners close, open work runs on.
    pub fn trigger(&self) {
        self.drain.cancel();
    }

    /// True once the drain has started.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Resolves when the drain starts.
    pub async fn draining(&self) {
        self.drain.cancelled().await
    }

    /// Resolves when the drain starts, for a `select!` loop that waits on it beside a busy branch
    /// (a QUIC connection's stream accept). Unlike [`Shutdown::draining`], it looks at the token
    /// only after the token woke it: a waiting `draining()` future takes tokio's `Notify` lock on
    /// every poll, and a fresh one per loop turn takes it twice more.
    pub fn drain_signal(&self) -> DrainSignal {
        DrainSignal(std::iter::once(self.drain.clone().cancelled_owned()).collect())
    }

    /// A newer process took the listening sockets (`petrel run --upgrade`): drain as on SIGTERM,
    /// but stay quiet in the mesh (the new process is this node now) and stop serving admin.
    pub fn hand_over(&self) {
        self.handover.cancel();
        self.drain.cancel();
    }

    /// True once the sockets were handed over.
    pub fn is_handed_over(&self) -> bool {
        self.handover.is_cancelled()
    }

    /// Resolves when the sockets are handed over.
    pub async fn handed_over(&self) {
        self.handover.cancelled().await
    }

    /// The drain deadline has passed: long-lived work (spliced WebSockets) closes cleanly now.
    pub fn cut(&self) {
        self.drain.cancel();
        self.cut.cancel();
    }

    /// Cancelled by [`Shutdown::cut`]; spliced sockets watch it.
    pub fn cut_token(&self) -> CancellationToken {
        self.cut.clone()
    }

    /// Spawns a task the drain waits for (a connection, a spliced WebSocket).
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Tasks still running.
    pub fn open_tasks(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every counted task has ended or `deadline` passed; true if all ended.
    pub async fn wait_drained(&self, deadline: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// [`Shutdown::drain_signal`]: a set of one wait, polled only when its waker fired
/// (`FuturesUnordered`); ready from the drain on, also when polled again.
pub struct DrainSignal(FuturesUnordered<WaitForCancellationFutureOwned>);

impl Future for DrainSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // `None` once the one wait has resolved: the drain started before.
        self.0.poll_next_unpin(cx).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_up_to_the_deadline() {
        let s = Shutdown::new();
        let s2 = s.clone();
        s.spawn(async move {
            s2.draining().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        s.spawn(std::future::pending::<()>());
        assert!(!s.is_draining());
        s.trigger();
        assert!(s.is_draining());
        assert!(
            !s.wait_drained(Duration::from_secs(10)).await,
            "pending task must hit the deadline"
        );
        assert_eq!(
            s.open_tasks(),
            1,
            "the finite task ended, the pending one did not"
        );
    }

    #[tokio::test]
    async fn a_drain_signal_resolves_on_the_drain_and_stays_resolved() {
        use futures_util::FutureExt;
        let s = Shutdown::new();
        let mut signal = s.drain_signal();
        assert!((&mut signal).now_or_never().is_none(), "no drain yet");
        assert!(
            (&mut signal).now_or_never().is_none(),
            "polled again, still none"
        );
        s.trigger();
        assert!((&mut signal).now_or_never().is_some(), "the drain started");
        assert!((&mut signal).now_or_never().is_some(), "and stays started");
        let late = s.drain_signal();
        assert!(
            late.now_or_never().is_some(),
            "made after the drain: ready at once"
        );
    }
}
