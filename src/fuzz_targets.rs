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
    let _ = crate::config::topology::Topology::from_source(&src);
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
            let _ = crate::routes::normalize_host(v.trim());
        }
    }
    let _ = crate::balance::Hints::from_headers(&headers);
    let _ = crate::trace::otlp::Parent::from_headers(&headers);
}

/// WebSocket bytes as a session sees them. The first byte splits the rest into what an instance
/// sends and what a client sends, and sets the replay limit and read sizes. Checks the frame
/// decoder (frames are the input's bytes, unchanged) and the replay ring (never over its limit,
/// every replay a suffix of what was held), then runs a session's owner task over both byte
/// streams until it ends.
pub fn ws_session(data: &[u8]) {
    use crate::session::frame::Decoder;
    use crate::session::ReplayBuffer;
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    let (from_instance, from_client) = rest.split_at(usize::from(knob) * rest.len() / 256);
    let limit = 1024 + usize::from(knob) * 64;
    let mut frames = Decoder::default();
    let mut replay = ReplayBuffer::new(limit);
    let mut consumed = Vec::new();
    'feed: for chunk in from_instance.chunks(1 + usize::from(knob) % 37) {
        frames.push(chunk);
        loop {
            match frames.next_frame() {
                Ok(Some(f)) => {
                    consumed.extend_from_slice(&f.raw);
                    if !f.opcode.is_control() {
                        replay.push_frame(&f.raw, f.fin);
                        assert!(replay.used() <= limit, "replay over its limit");
                    }
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert!(
        from_instance.starts_with(&consumed),
        "frames changed the bytes"
    );
    let sent = replay.sent();
    let all = replay.replay_from(0).expect("0 is never beyond").bytes;
    for n in [sent / 2, sent] {
        let r = replay.replay_from(n).expect("within what was sent");
        assert!(
            all.ends_with(&r.bytes),
            "a replay is a suffix of what is held"
        );
    }
    assert!(replay.replay_from(sent + 1).is_err());
    session_task(from_instance, from_client);
}

/// Runs one session's owner task between an instance and a client that send these bytes.
fn session_task(from_instance: &[u8], from_client: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let (inst, mut inst_peer) = tokio::io::duplex(1 << 16);
        let (client, mut client_peer) = tokio::io::duplex(1 << 16);
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let cfg = crate::session::SessionConfig {
            hold: Duration::from_secs(1),
            replay_bytes: 4096,
            ping_interval: Duration::from_millis(200),
        };
        let task = crate::session::task::Task::new(
            "fuzz".into(),
            cfg,
            Box::new(inst),
            Box::new(client),
            tokio_util::sync::CancellationToken::new(),
            rx,
        );
        let run = tokio::spawn(task.run());
        let (a, b) = (from_instance.to_vec(), from_client.to_vec());
        let inst_side = tokio::spawn(async move {
            let _ = inst_peer.write_all(&a).await;
            let _ = inst_peer.shutdown().await;
            let mut sink = Vec::new();
            let _ = inst_peer.read_to_end(&mut sink).await;
        });
        let client_side = tokio::spawn(async move {
            let _ = client_peer.write_all(&b).await;
            let _ = client_peer.shutdown().await;
            let mut sink = Vec::new();
            let _ = client_peer.read_to_end(&mut sink).await;
        });
        // Both peers end their streams, so the task ends without waiting on a timer.
        match tokio::time::timeout(Duration::from_secs(10), run).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("the session task failed: {e}"),
            Err(_) => panic!("the session task never ended"),
        }
        inst_side.abort();
        client_side.abort();
    });
}
