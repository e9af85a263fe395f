//! Fly's fly.toml as `fly launch` writes it: the keys Fly defines that petrel reads past (listed
//! by `petrel check`, never an error), and a "did you mean" for keys that are neither petrel's nor
//! Fly's. Source: <https://fly.io/docs/reference/configuration/>.

use toml::de::{DeTable, DeValue};

/// Keys of Fly's app configuration that petrel accepts and does not use, as dotted paths; `[]`
/// stands for any item of an array of tables. A listed table is skipped whole, whatever it holds.
pub const FLY_IGNORED: &[&str] = &[
    "host_dedication_id",
    "machine_checks",
    "mount",
    "compute",
    "kill_signal",
    "kill_timeout",
    "swap_size_mb",
    "console_command",
    "build",
    "deploy",
    "env",
    "experimental",
    "services",
    "checks",
    "mounts",
    "processes",
    "statics",
    "vm",
    "metrics",
    "restart",
    "files",
    "http_service.auto_stop_machines",
    "http_service.auto_start_machines",
    "http_service.min_machines_running",
    "http_service.processes",
    "http_service.tls_options",
    "http_service.machine_checks",
    "http_service.http_options.compress",
    "http_service.http_options.idle_timeout",
    "http_service.http_options.headers_read_timeout",
    "http_service.http_options.replay_cache",
    "http_service.checks[].protocol",
    "http_service.checks[].tls_server_name",
    "http_service.checks[].tls_skip_verify",
    "http_service.checks[].headers",
];

/// Removes every key of `ignored` from `table` (paths as in [`FLY_IGNORED`]), and returns the
/// paths removed, each once, sorted.
pub fn strip_ignored(table: &mut DeTable<'_>, ignored: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    strip_in(table, "", ignored, &mut found);
    found.sort();
    found
}

fn strip_in(table: &mut DeTable<'_>, prefix: &str, ignored: &[&str], found: &mut Vec<String>) {
    let mut doomed = Vec::new();
    for (k, v) in table.iter_mut() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        if ignored.contains(&path.as_str()) {
            doomed.push(k.get_ref().to_string());
            if !found.contains(&path) {
                found.push(path);
            }
            continue;
        }
        match v.get_mut() {
            DeValue::Table(t) => strip_in(t, &path, ignored, found),
            DeValue::Array(items) => {
                let inner = format!("{path}[]");
                for item in items.iter_mut() {
                    if let DeValue::Table(t) = item.get_mut() {
                        strip_in(t, &inner, ignored, found);
                    }
                }
            }
            _ => {}
        }
    }
    if !doomed.is_empty() {
        for (k, v) in std::mem::take(table) {
            if !doomed.iter().any(|d| d == k.get_ref()) {
                table.insert(k, v);
            }
        }
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" message about the table at `path`
/// (dotted, empty for the top): the expected name, or Fly's key at that level, closest to `x`, if
/// one is within a typo's reach (Levenshtein distance ≤ 2, or ≤ a third of its length).
pub fn did_you_mean(message: &str, path: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    // The path may end with the unknown key itself (serde names it at the top level).
    let path = path
        .strip_suffix(unknown)
        .map_or(path, |p| p.strip_suffix('.').unwrap_or(p));
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}.")
    };
    let fly = FLY_IGNORED.iter().filter_map(|k| {
        let k = k.strip_prefix(prefix.as_str())?;
        (!k.contains('.') && !k.contains('[')).then_some(k)
    });
    let mut best: Option<(usize, &str)> = None;
    for name in expected.split('`').skip(1).step_by(2).chain(fly) {
        let d = levenshtein(unknown, name);
        if d <= 2.max(name.len() / 3) && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, name));
        }
    }
    best.map(|(_, name)| name.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_expected_name() {
        let m =
            "unknown field `concurency`, expected one of `internal_port`, `hosts`, `concurrency`";
        assert_eq!(
            did_you_mean(m, "http_service").as_deref(),
            Some("concurrency")
        );
        let m = "unknown field `hard_limt`, expected one of `type`, `soft_limit`, `hard_limit`";
        assert_eq!(did_you_mean(m, "").as_deref(), Some("hard_limit"));
        let m = "unknown field `zzz`, expected one of `type`, `soft_limit`, `hard_limit`";
        assert_eq!(did_you_mean(m, ""), None);
        assert_eq!(did_you_mean("invalid type: string", ""), None);
        // Fly's own keys count too, at their level.
        let m = "unknown field `kill_timout`, expected one of `app`, `http_service`";
        assert_eq!(did_you_mean(m, "").as_deref(), Some("kill_timeout"));
        let m = "unknown field `auto_stop_machine`, expected one of `hosts`";
        assert_eq!(
            did_you_mean(m, "http_service").as_deref(),
            Some("auto_stop_machines")
        );
    }

    #[test]
    fn fly_keys_are_removed_and_listed_once() {
        let text = "app = \"a\"\nkill_signal = \"SIGINT\"\n[build]\nimage = \"x\"\n\
                    [http_service]\nauto_stop_machines = true\n\
                    [[http_service.checks]]\nprotocol = \"http\"\npath = \"/\"\n\
                    [[http_service.checks]]\nprotocol = \"http\"\n";
        let mut t = DeTable::parse(text).unwrap().into_inner();
        let found = strip_ignored(&mut t, FLY_IGNORED);
        assert_eq!(
            found,
            [
                "build",
                "http_service.auto_stop_machines",
                "http_service.checks[].protocol",
                "kill_signal",
            ]
        );
        assert!(t.get("build").is_none() && t.get("app").is_some());
    }
}
