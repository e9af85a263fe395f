//! Per-client concurrency (`[http_service.concurrency] per_client`): requests in flight from one
//! client IP for one app at this edge, so one client cannot take an app's whole capacity (as
//! HAProxy's stick tables and Envoy's local rate limit are used). Above the limit the client gets
//! `429 Too Many Requests` with `Retry-After` (RFC 6585 §4).
//!
//! Off by default. When on, each request takes a short `Mutex` on this app's table twice (in and
//! out); apps without the key never touch it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The in-flight count of each client of one app.
pub struct PerClient {
    limit: u32,
    inflight: Mutex<HashMap<IpAddr, u32>>,
}

impl PerClient {
    /// A table allowing `limit` requests in flight per client IP.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A slot for one more request from `ip`, or `None` when it has `limit` in flight already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut m = self.inflight.lock().expect("per-client lock");
        let n = m.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One request's place in its client's count; given back when dropped (the response ended or
/// failed).
pub struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self.table.inflight.lock().expect("per-client lock");
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_limit_and_slots_come_back() {
        let t = Arc::new(PerClient::new(2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let s1 = t.acquire(a).unwrap();
        let _s2 = t.acquire(a).unwrap();
        assert!(t.acquire(a).is_none(), "a third from the same client");
        let _b = t.acquire(b).expect("another client is not affected");
        drop(s1);
        assert!(t.acquire(a).is_some(), "a slot came back");
        drop(_b);
        assert!(
            !t.inflight.lock().unwrap().contains_key(&b),
            "idle clients are forgotten"
        );
    }
}
