//! Entry points that fuzz every decoder fed from outside: mesh datagrams, config files and
//! routing headers. `fuzz/` runs them under libFuzzer (cargo fuzz, nightly); `tests/fuzz.rs`
//! runs them on stable over the committed corpus plus random mutations, for a bounded time.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use petrel_mesh::wire::{Kind, Sealer};
use petrel_mesh::{Mesh, MeshConfig, NodeId, Profile};

const KEY: [u8; 32] = [7; 32];

/// A datagram from anywhere into a keyed mesh core. Even first bytes feed raw bytes to the wire
/// decoder; odd ones seal the rest properly first, so the payload decoders (SWIM, pings, load
/// records) see arbitrary input too.
pub fn mesh_datagram(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let me = NodeId {
        name: "fuzz".into(),
        region: "iad".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
        backhaul: SocketAddr::from(([127, 0, 0, 1], 7443)),
        generation: 1,
    };
    let mut mesh = Mesh::new(
        me,
        MeshConfig::new(Profile::Lan, 8, vec![KEY]),
        1,
        Duration::ZERO,
    );
    let from = SocketAddr::from(([127, 0, 0, 2], 7946));
    let datagram = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let (kind, payload) = rest.split_first().unwrap_or((&0, &[]));
        let kind = match kind % 3 {
            0 => Kind::Swim,
            1 => Kind::Ping,
            _ => Kind::Pong,
        };
        Sealer::new(&[KEY], 2).seal(2, u64::from(mode), kind, payload)
    };
    let _ = Sealer::new(&[], 3).open(&datagram);
    mesh.handle_datagram(from, &datagram, Duration::from_secs(1));
    mesh.handle_timeout(Duration::from_secs(2));
    while mesh.poll_transmit().is_some() {}
    let _ = mesh.view(Duration::from_secs(2));
}

/// Arbitrary text as a node file, an app file and a topology file.
pub fn config_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = crate::config::check_node_text(Path::new("node.toml"), text.clone());
    let _ = crate::config::check_app_text(Path::new("fly.toml"), text.clone());
    let src = crate::config::Source::from_text(Path::new("topology.toml"), text);
    let _ = crate::topology::Topology::from_source(&src);
}

/// Arbitrary `name: value` lines as request headers for the routing-hint, trace-context and Host
/// parsers.
pub fn routing_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value.trim_ascii()),
        ) {
            headers.append(n, v);
        }
        if let Ok(v) = std::str::from_utf8(value) {
            let _ = crate::edge::normalize_host(v.trim());
        }
    }
    let _ = crate::balance::Hints::from_headers(&headers);
    let _ = crate::trace::otlp::Parent::from_headers(&headers);
}
