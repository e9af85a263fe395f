//! systemd's readiness protocol (`sd_notify`, <https://www.freedesktop.org/software/systemd/man/sd_notify.html>)
//! for `Type=notify` units: READY when the node serves, RELOADING around a reload, STOPPING when it
//! drains, and MAINPID handed to the new process of a binary upgrade. Without `$NOTIFY_SOCKET`
//! (not under systemd) every call does nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// The node serves; `MAINPID` is this process (after an upgrade, the service's new main process).
pub fn ready() {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status("serving"),
    ]);
}

/// A reload starts (systemd 253+ wants the monotonic time with it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A reload ended (whether the new config was taken or refused).
pub fn reloaded() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// The node is shutting down (draining, then exiting).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// A drain started without stopping the process (`petrel drain`).
pub fn draining() {
    send(&[NotifyState::Status(
        "draining (petrel drain); send SIGTERM to exit",
    )]);
}
