//! `petrel check`: every shipped example passes; broken configs fail with exit 2 and FILE:LINE: KEY messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::bin())
        .arg("check")
        .args(args)
        .output()
        .expect("run petrel check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    toml_files(&root.join("config"), &mut files);
    files.push(root.join("fly.toml"));
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let kind = if text.lines().any(|l| l.trim() == "[node]") {
            "--config"
        } else if text.lines().any(|l| l.trim_start().starts_with("app =")) {
            "--app"
        } else {
            continue; // topologies and other data files have their own commands
        };
        let (code, out, err) = check(&[kind, f.to_str().unwrap()]);
        assert_eq!(code, 0, "{} should pass:\n{err}", f.display());
        assert!(out.starts_with("ok: "), "{out}");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} example configs found");
}

const NODE: &str = r#"[node]
name = "iad-1"
region = "iad"

[edge]
listen = ["127.0.0.1:8080"]

[mesh]
bind = "127.0.0.1:7946"
seeds = ["127.0.0.1:7947"]
cluster_key = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

[backhaul]
listen = "127.0.0.1:7443"

[[instances]]
id = "hello-1"
app = "hello"
address = "127.0.0.1:9001"
"#;

const APP: &str = r#"app = "hello"

[http_service]
hosts = ["hello.example.com"]

  [http_service.concurrency]
  type = "requests"
  soft_limit = 20
  hard_limit = 25

  [http_service.load_balancing]
  strategy = "closest"
  retries = 3
"#;

/// (what is broken, node.toml text, apps/hello.toml text, expected "file:line: key" fragment, message fragment)
fn cases() -> Vec<(&'static str, String, String, &'static str, &'static str)> {
    let n = |from: &str, to: &str| {
        assert!(NODE.contains(from), "{from}");
        NODE.replacen(from, to, 1)
    };
    let a = |from: &str, to: &str| {
        assert!(APP.contains(from), "{from}");
        APP.replacen(from, to, 1)
    };
    vec![
        (
            "bad seed address",
            n(r#"seeds = ["127.0.0.1:7947"]"#, "seeds = [\n  \"127.0.0.1:7947\",\n  \"127.0.0.1:99999\",\n]"),
            APP.into(),
            "node.toml:12: mesh.seeds[1]",
            r#"invalid socket address "127.0.0.1:99999""#,
        ),
        ("unknown key", n("[edge]\n", "[edge]\nlissten = 1\n"), APP.into(), "node.toml:6: edge.lissten", "unknown field"),
        ("missing required key", n("name = \"iad-1\"\n", ""), APP.into(), "node.toml:1: node", "missing field `name`"),
        ("bad region", n(r#"region = "iad""#, r#"region = "IAD!""#), APP.into(), "node.toml:3: node.region", "invalid region"),
        (
            "bad duration",
            n("region = \"iad\"\n", "region = \"iad\"\ndrain_timeout = \"10 minutes\"\n"),
            APP.into(),
            "node.toml:4: node.drain_timeout",
            "invalid duration",
        ),
        (
            "wrong type",
            n("[edge]\n", "[edge]\ndebug_headers = \"yes\"\n"),
            APP.into(),
            "node.toml:6: edge.debug_headers",
            "expected a boolean",
        ),
        (
            "duplicate instance id",
            format!("{NODE}\n[[instances]]\nid = \"hello-1\"\napp = \"hello\"\naddress = \"127.0.0.1:9002\"\n"),
            APP.into(),
            "node.toml:22: instances[1].id",
            "duplicate instance id",
        ),
        ("instance of unknown app", n(r#"app = "hello""#, r#"app = "nope""#), APP.into(), "node.toml:18: instances[0].app", "unknown app"),
        ("bad cluster key", n("cluster_key = \"base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"", "cluster_key = \"hunter2\""), APP.into(), "node.toml:11: mesh.cluster_key", "base64:"),
        (
            "no cluster key",
            n("cluster_key = \"base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n", ""),
            APP.into(),
            "node.toml:8: mesh",
            "a cluster anyone can join is never the default",
        ),
        (
            "open and keyed",
            n("[mesh]\n", "[mesh]\nopen = true\n"),
            APP.into(),
            "node.toml:9: mesh.open",
            "an open cluster has no key",
        ),
        (
            "a rotation key that does not decode",
            n(
                "cluster_key = \"base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"",
                "cluster_keys = [\"base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\", \"base64:AAAA\"]",
            ),
            APP.into(),
            "node.toml:11: mesh.cluster_keys",
            "32 bytes",
        ),
        ("bad mesh profile", n("[mesh]\n", "[mesh]\nprofile = \"moon\"\n"), APP.into(), "node.toml:9: mesh.profile", "unknown variant `moon`"),
        (
            "per-client limit of 0",
            NODE.into(),
            a("hard_limit = 25", "hard_limit = 25\n  per_client = 0"),
            "hello.toml:10: http_service.concurrency.per_client",
            "must be at least 1",
        ),
        (
            "soft above hard",
            NODE.into(),
            a("soft_limit = 20", "soft_limit = 30"),
            "hello.toml:8: http_service.concurrency.soft_limit",
            "above hard_limit",
        ),
        (
            "unknown strategy",
            NODE.into(),
            a(r#"strategy = "closest""#, r#"strategy = "fastest""#),
            "hello.toml:12: http_service.load_balancing.strategy",
            "unknown variant `fastest`",
        ),
        ("TOML syntax error", NODE.into(), a("[http_service]", "[http_service"), "hello.toml:3", "expected `]`"),
        (
            "bad host name",
            NODE.into(),
            a(r#"hosts = ["hello.example.com"]"#, r#"hosts = ["Hello World"]"#),
            "hello.toml:4: http_service.hosts[0]",
            "invalid host name",
        ),
        ("zero hard limit", NODE.into(), a("hard_limit = 25", "hard_limit = 0"), "hello.toml:9: http_service.concurrency.hard_limit", "at least 1"),
        (
            "TLS without certificates",
            n("listen = [\"127.0.0.1:8080\"]\n", "listen = [\"127.0.0.1:8080\"]\ntls_listen = [\"127.0.0.1:8443\"]\ncerts_dir = \"nowhere\"\n"),
            APP.into(),
            "node.toml:8: edge.certs_dir",
            "cannot read certificate directory",
        ),
        (
            "public admin without a token",
            format!("{NODE}\n[admin]\nlisten = \"0.0.0.0:9090\"\n"),
            APP.into(),
            "node.toml:21: admin.token",
            "not a loopback address",
        ),
        (
            "session replay too small",
            NODE.into(),
            format!("{APP}\n  [http_service.sessions]\n  resume = true\n  replay_bytes = 100\n"),
            "hello.toml:17: http_service.sessions.replay_bytes",
            "out of range: 1024",
        ),
        (
            "session ping too fast",
            NODE.into(),
            format!("{APP}\n  [http_service.sessions]\n  resume = true\n  ping_interval = \"10ms\"\n"),
            "hello.toml:17: http_service.sessions.ping_interval",
            "100ms to 1h",
        ),
        (
            "OTLP over https",
            format!("{NODE}\n[tracing]\notlp_endpoint = \"https://collector:4318\"\n"),
            APP.into(),
            "node.toml:22: tracing.otlp_endpoint",
            "only http://",
        ),
    ]
}

#[test]
fn broken_configs_are_rejected_with_file_line_and_key() {
    let cases = cases();
    assert!(cases.len() >= 10);
    for (what, node, app, location, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        std::fs::write(dir.path().join("node.toml"), &node).unwrap();
        std::fs::write(dir.path().join("apps/hello.toml"), &app).unwrap();
        let (code, _, err) = check(&["--config", dir.path().join("node.toml").to_str().unwrap()]);
        assert_eq!(code, 2, "{what}: exit code\n{err}");
        let line = err
            .lines()
            .find(|l| l.contains(location))
            .unwrap_or_else(|| panic!("{what}: expected {location:?} in:\n{err}"));
        assert!(
            line.contains(message),
            "{what}: expected {message:?} in {line:?}"
        );
    }
}

#[test]
fn the_valid_base_configs_pass_and_app_check_works_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("node.toml"), NODE).unwrap();
    std::fs::write(dir.path().join("apps/hello.toml"), APP).unwrap();
    let (code, out, err) = check(&["--config", dir.path().join("node.toml").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 app(s), 1 instance(s)"), "{out}");
    let (code, out, _) = check(&[
        "--app",
        dir.path().join("apps/hello.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("strategy closest"), "{out}");
}

#[test]
fn run_with_a_broken_config_exits_2_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The edge port is free before and must still be free after: the node bound nothing.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let node = NODE
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace(r#"region = "iad""#, r#"region = "x""#);
    std::fs::write(dir.path().join("node.toml"), node).unwrap();
    let out = Command::new(common::bin())
        .args([
            "run",
            "--config",
            dir.path().join("node.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.toml:3: node.region"), "{err}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn h2_backend_is_fly_s_key_and_check_says_which_protocol_instances_get() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grpc.toml");
    std::fs::write(
        &path,
        "app = \"grpc\"\n[http_service]\n  [http_service.http_options]\n  h2_backend = true\n",
    )
    .unwrap();
    let (code, out, err) = check(&["--app", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("instances spoken to in HTTP/2"), "{out}");
    std::fs::write(&path, "app = \"web\"\n").unwrap();
    let (_, out, _) = check(&["--app", path.to_str().unwrap()]);
    assert!(out.contains("instances spoken to in HTTP/1.1"), "{out}");
    std::fs::write(
        &path,
        "app = \"grpc\"\n[http_service]\n  [http_service.http_options]\n  h2_backnd = true\n",
    )
    .unwrap();
    let (code, _, err) = check(&["--app", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("grpc.toml:4") && err.contains("h2_backnd"),
        "names file, line and key: {err}"
    );
}

#[test]
fn fly_toml_files_as_fly_writes_them_pass_and_say_what_petrel_ignores() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fly-examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "a dozen shapes: {files:?}");
    for f in &files {
        let (code, out, err) = check(&["--app", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {err}", f.display());
        let ignored = out
            .lines()
            .find(|l| l.contains("ignored (Fly keys petrel does not use): "))
            .unwrap_or_else(|| panic!("{} lists no ignored key: {out}", f.display()));
        assert_eq!(
            out.matches("ignored (Fly keys").count(),
            1,
            "listed once: {out}"
        );
        assert!(!ignored.ends_with(": "), "{ignored}");
    }
    // Keys that flyctl accepts beyond its docs' examples.
    let tmp = tempfile::tempdir().unwrap();
    let extra = tmp.path().join("fly-extra.toml");
    std::fs::write(
        &extra,
        "app = \"x\"\nhost_dedication_id = \"h\"\n[mount]\nsource = \"d\"\n[[compute]]\nsize = \"s\"\n\
         [[machine_checks]]\nimage = \"i\"\n[http_service.http_options]\nheaders_read_timeout = 5\n",
    )
    .unwrap();
    let (code, out, err) = check(&["--app", extra.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("host_dedication_id") && out.contains("mount"),
        "{out}"
    );
    // Either limit alone, as Fly allows.
    for (text, want) in [
        (
            "[http_service.concurrency]\nsoft_limit = 200\n",
            "soft 200 / hard 250",
        ),
        (
            "[http_service.concurrency]\nhard_limit = 10\n",
            "soft 10 / hard 10",
        ),
    ] {
        std::fs::write(&extra, format!("app = \"x\"\n{text}")).unwrap();
        let (code, out, err) = check(&["--app", extra.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(want), "{out}");
    }
    // The old millisecond durations and Go-style ones are read as Fly means them.
    let (_, out, _) = check(&["--app", dir.join("rails.toml").to_str().unwrap()]);
    assert!(
        out.contains("build") && out.contains("vm") && out.contains("statics"),
        "{out}"
    );
}

#[test]
fn keys_neither_petrel_nor_fly_know_are_errors_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    for (text, line, key, suggestion) in [
        (
            "app = \"a\"\nkill_signal = \"SIGINT\"\n[http_service]\nconcurency = 3\n",
            "typo.toml:4",
            "http_service",
            "did you mean `concurrency`?",
        ),
        (
            "app = \"a\"\n[http_service.concurrency]\nsoft_limit = 5\nhard_limt = 10\n",
            "typo.toml:4",
            "http_service.concurrency",
            "did you mean `hard_limit`?",
        ),
        (
            "app = \"a\"\nkill_timout = 5\n",
            "typo.toml:2",
            "kill_timout",
            "did you mean `kill_timeout`?",
        ),
        (
            "app = \"a\"\n[http_service.http_options.response.headers]\nContent-Length = \"5\"\n",
            "typo.toml:3",
            "Content-Length",
            "petrel sets it",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = check(&["--app", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(line) && err.contains(key) && err.contains(suggestion),
            "{err}"
        );
    }
}

#[test]
fn an_access_log_beside_a_config_named_without_a_directory_passes() {
    // `petrel check --config node.toml` from the config's own directory, with
    // `[log] access = "access.log"`: the log's directory is the current one, not "".
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("apps/hello.toml"), APP).unwrap();
    let check_with_access = |access: &str| {
        let node = format!("{NODE}\n[log]\naccess = \"{access}\"\n");
        std::fs::write(dir.path().join("node.toml"), node).unwrap();
        let out = Command::new(common::bin())
            .args(["check", "--config", "node.toml"])
            .current_dir(dir.path())
            .output()
            .expect("run petrel check");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let (code, err) = check_with_access("access.log");
    assert_eq!(code, Some(0), "{err}");
    // A path that names no file is refused at check, not at run.
    let (code, err) = check_with_access("/");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("names no file"), "{err}");
    // A directory that is really missing is still named.
    let (code, err) = check_with_access("nowhere/access.log");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("log.access") && err.contains("directory nowhere does not exist"),
        "{err}"
    );
}
