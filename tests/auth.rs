//! `[http_service.auth]` against the strict h11 origin: a valid token passes and never reaches the
//! instance (header, query or cookie), the instance gets `Petrel-Auth-Sub`; missing, expired,
//! forged and wrong-audience tokens get `401` with `WWW-Authenticate`, are counted under phase
//! `auth`, and reach no instance; a `petrel_instance` claim routes; ES256 with a public key file;
//! broken auth configs fail `petrel check` with file, line and key.

mod common;

use std::process::Command;

use common::http::{get_json, request, send};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

const SECRET: &str = "petrel-test-secret-0123456789abcdef";

fn app(extra: &str) -> String {
    format!(
        "app = \"hello\"\n[http_service]\nhosts = [\"hello.example.com\"]\n\
         [http_service.concurrency]\ntype = \"requests\"\nsoft_limit = 10\nhard_limit = 20\n\
         [http_service.auth]\ntype = \"jwt\"\n{extra}"
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// The node with app `hello` (two instances, `a-1` and `b-1`), its auth section `extra`, and
/// `files` (relative path, contents) beside the app file.
fn start(
    extra: &str,
    files: &[(&str, String)],
    origins: &[&common::origins::Origin],
) -> common::Node {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["a-1", "b-1"];
    let instances: Vec<_> = origins
        .iter()
        .zip(ids)
        .map(|(o, id)| (id, "hello", o.addr))
        .collect();
    common::write_node_files(dir.path(), &[("hello", app(extra))], &instances, "");
    let node_toml = dir.path().join("node.toml");
    let mut text = std::fs::read_to_string(&node_toml).unwrap();
    text.push_str(&format!(
        "\n[log]\naccess = \"{}\"\n",
        dir.path().join("access.log").display()
    ));
    std::fs::write(&node_toml, text).unwrap();
    for (rel, text) in files {
        let p = dir.path().join("apps").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    common::start_node(dir)
}

async fn requests_at(o: &common::origins::Origin) -> u64 {
    get_json(o.addr, "/stats").await["requests"]
        .as_u64()
        .unwrap()
}

async fn auth_failures(admin: std::net::SocketAddr) -> f64 {
    let text = common::http::get(admin, "localhost", "/metrics")
        .await
        .text();
    text.lines()
        .find(|l| {
            l.starts_with("petrel_session_failures_total{")
                && l.contains("app=\"hello\"")
                && l.contains("phase=\"auth\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_at_the_edge_and_never_reach_the_instance() {
    let a = common::origins::strict("a-1", 10_000);
    let b = common::origins::strict("b-1", 10_000);
    let n = start(
        "algorithms = [\"HS256\"]\nsecret_file = \"secrets/hello.key\"\n\
         token_from = [\"header:authorization\", \"query:token\", \"cookie:sess\"]\n\
         audience = \"hello\"\nleeway = \"5s\"\n",
        &[("secrets/hello.key", format!("{SECRET}\n"))],
        &[&a, &b],
    );
    let good = hs256(serde_json::json!({"sub": "user-7", "aud": "hello", "exp": now() + 600}));

    // Header: 200, the instance sees no Authorization and the verified sub (not the client's).
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "hello.example.com",
            "/headers",
            &[
                ("authorization", &format!("Bearer {good}")),
                ("petrel-auth-sub", "admin"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    let headers = seen["headers"].as_array().unwrap();
    let named = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    };
    assert!(named("authorization").is_empty(), "token forwarded: {seen}");
    assert_eq!(named("petrel-auth-sub"), vec!["user-7".to_string()]);

    // Query (what a browser WebSocket can carry): the parameter is gone, the others stay.
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "hello.example.com",
            &format!("/headers?x=1&token={good}&y=2"),
            &[],
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/headers?x=1&y=2");

    // Cookie: that cookie is gone, the others stay.
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "hello.example.com",
            "/headers",
            &[("cookie", &format!("theme=dark; sess={good}; lang=en"))],
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = r.json();
    let cookies: Vec<_> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "cookie")
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, vec!["theme=dark; lang=en".to_string()]);

    // A token in several sources: none of them reaches the instance.
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "hello.example.com",
            &format!("/headers?token={good}&x=1"),
            &[
                ("authorization", &format!("Bearer {good}")),
                ("cookie", &format!("sess={good}")),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!(seen["target"], "/headers?x=1");
    assert!(
        !seen.to_string().contains(&good),
        "a copy of the token reached the instance: {seen}"
    );

    // Refusals: each 401 with the Bearer challenge, none reaching an instance.
    let before = requests_at(&a).await + requests_at(&b).await;
    let forged = encode(
        &Header::default(),
        &serde_json::json!({"sub": "user-7", "aud": "hello", "exp": now() + 600}),
        &EncodingKey::from_secret(b"another-secret-0123456789abcdef!").unwrap(),
    )
    .unwrap();
    let cases = [
        ("missing", None, "no token"),
        (
            "expired",
            Some(hs256(
                serde_json::json!({"sub": "u", "aud": "hello", "exp": now() - 60}),
            )),
            "token expired",
        ),
        ("forged", Some(forged), "bad signature"),
        (
            "no audience",
            Some(hs256(serde_json::json!({"sub": "u", "exp": now() + 600}))),
            "missing or malformed claims",
        ),
        (
            "wrong audience",
            Some(hs256(
                serde_json::json!({"sub": "u", "aud": "billing", "exp": now() + 600}),
            )),
            "wrong audience",
        ),
    ];
    for (what, token, reason) in &cases {
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(v) = auth.as_deref() {
            headers.push(("authorization", v));
        }
        let r = send(
            n.edge,
            false,
            request("GET", "hello.example.com", "/headers", &headers),
        )
        .await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\"") && challenge.contains(reason),
            "{what}: {challenge}"
        );
    }
    let after = requests_at(&a).await + requests_at(&b).await;
    assert_eq!(
        after,
        before + 2,
        "only the two /stats requests reached an instance"
    );
    assert_eq!(
        auth_failures(n.admin).await,
        5.0,
        "counted under phase auth"
    );

    // The access log names every request, and never a token (query tokens are redacted).
    let mut log = String::new();
    for _ in 0..50 {
        // The writer is a thread: wait (bounded) for the lines to land.
        log = std::fs::read_to_string(n.dir.path().join("access.log")).unwrap_or_default();
        if log.contains("token=[redacted]") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(log.contains("token=[redacted]"), "{log}");
    assert!(!log.contains(&good), "a token in the access log: {log}");

    // A `petrel_instance` claim routes to that instance, every time.
    let pinned = hs256(serde_json::json!({
        "sub": "user-7", "aud": "hello", "exp": now() + 600, "petrel_instance": "b-1"
    }));
    for _ in 0..10 {
        // The token's claim wins over the client's own routing headers.
        let r = send(
            n.edge,
            false,
            request(
                "GET",
                "hello.example.com",
                "/",
                &[
                    ("authorization", &format!("Bearer {pinned}")),
                    ("petrel-force-instance-id", "a-1"),
                ],
            ),
        )
        .await;
        assert_eq!(r.text(), "hello from b-1\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_with_a_public_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl (apt-get install -y openssl)");
    assert!(ok.success());
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap()
        .stdout;
    let private = std::fs::read(&key).unwrap();
    let a = common::origins::strict("a-1", 10_000);
    let n = start(
        "algorithms = [\"ES256\"]\npublic_key_file = \"keys/hello.pem\"\n",
        &[("keys/hello.pem", String::from_utf8(public).unwrap())],
        &[&a],
    );
    let token = encode(
        &Header::new(Algorithm::ES256),
        &serde_json::json!({"sub": "es-user", "exp": now() + 600}),
        &EncodingKey::from_ec_pem(&private).unwrap(),
    )
    .unwrap();
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "hello.example.com",
            "/headers",
            &[("authorization", &format!("Bearer {token}"))],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An HS256 token signed with the public key's text (the classic algorithm confusion) fails.
    let confused = hs256(serde_json::json!({"sub": "x", "exp": now() + 600}));
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "hello.example.com",
            "/",
            &[("authorization", &format!("Bearer {confused}"))],
        ),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[test]
fn broken_auth_configs_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "algorithms = [\"HS256\"]\nsecret_file = \"missing.key\"\n",
            "http_service.auth.secret_file",
            "cannot read",
        ),
        (
            "algorithms = [\"HS257\"]\nsecret_file = \"s.key\"\n",
            "http_service.auth.algorithms[0]",
            "unknown algorithm",
        ),
        (
            "algorithms = [\"ES256\"]\nsecret_file = \"s.key\"\n",
            "http_service.auth.public_key_file",
            "need public_key_file",
        ),
        (
            "algorithms = [\"HS256\"]\nsecret_file = \"short.key\"\n",
            "http_service.auth.secret_file",
            "at least 32",
        ),
        (
            "algorithms = [\"HS256\"]\nsecret_file = \"s.key\"\ntoken_from = [\"body:token\"]\n",
            "http_service.auth.token_from[0]",
            "unknown source",
        ),
        (
            "algorithms = [\"HS256\"]\nsecret_file = \"s.key\"\nleeway = \"600000h\"\n",
            "http_service.auth.leeway",
            "at most 1h",
        ),
        (
            "algorithms = [\"HS256\"]\nsecret_file = \"p384.pem\"\n",
            "http_service.auth.secret_file",
            "holds a PEM key",
        ),
        (
            "algorithms = [\"ES256\"]\npublic_key_file = \"p384.pem\"\n",
            "http_service.auth.public_key_file",
            "not a P-256 public key",
        ),
    ];
    let p384 = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ])
        .output()
        .unwrap()
        .stdout;
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &p384).unwrap();
    let public = child.wait_with_output().unwrap().stdout;
    assert!(public.starts_with(b"-----BEGIN PUBLIC KEY"));
    std::fs::write(dir.path().join("p384.pem"), public).unwrap();
    std::fs::write(dir.path().join("s.key"), SECRET).unwrap();
    std::fs::write(dir.path().join("short.key"), "short").unwrap();
    for (extra, key, says) in cases {
        let f = dir.path().join("app.toml");
        std::fs::write(&f, app(extra)).unwrap();
        let out = Command::new(common::bin())
            .args(["check", "--app"])
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(
            err.contains("app.toml:") && err.contains(key) && err.contains(says),
            "{extra}: {err}"
        );
    }
}
