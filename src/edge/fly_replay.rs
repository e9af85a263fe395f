//! App-directed routing, Fly's `fly-replay` (<https://fly.io/docs/networking/dynamic-request-routing/>):
//! an instance answers with a `fly-replay` (or `petrel-replay`) response header, and the edge sends
//! the original request elsewhere instead of passing that answer on. The client never sees it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::balance::Hints;

/// Replays one request may take; one more is a loop (`508 Loop Detected`).
pub const MAX_REPLAYS: usize = 10;

/// Where a replayed request goes when its target cannot take it (Fly's `fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// No fallback: the replay fails with an error.
    #[default]
    None,
    /// Back to the instance that asked for the replay, or else an error.
    ForceSelf,
    /// Back to the instance that asked, or else any instance of the app.
    PreferSelf,
}

/// One parsed `fly-replay` value: `;`-separated `key=value` fields; a value may be quoted
/// (Fly quotes region lists: `region="sjc,any"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replay {
    /// `region=iad` or an ordered list `region=iad,ord`, tried in that order.
    pub regions: Vec<String>,
    /// `any` in the list (or no region at all): anywhere else after the regions named.
    pub any: bool,
    /// `app=<name>`: accepted when it names the request's own app.
    pub app: Option<String>,
    /// `instance=<id>`: only that instance.
    pub instance: Option<String>,
    /// `prefer_instance=<id>`: that instance if it can take the request.
    pub prefer_instance: Option<String>,
    /// `elsewhere=true`: not the instance that asked.
    pub elsewhere: bool,
    /// `state=<s>`: echoed to the target in `fly-replay-src`.
    pub state: Option<String>,
    /// `timeout=<duration>`: how long to try to reach the target.
    pub timeout: Option<Duration>,
    /// `fallback=prefer_self|force_self`.
    pub fallback: Fallback,
}

/// Longest `fly-replay` value read.
const MAX_LEN: usize = 1024;

impl Replay {
    /// The replay an instance's response asks for, if any: `fly-replay` first, then
    /// `petrel-replay`. `Err` names what is malformed (`app=` is refused: petrel replays within
    /// the app).
    pub fn from_headers(h: &HeaderMap) -> Option<Result<Replay, String>> {
        // Asked of every response: constant names spare parsing the strings each time.
        const FLY: HeaderName = HeaderName::from_static("fly-replay");
        const PETREL: HeaderName = HeaderName::from_static("petrel-replay");
        // One pass over the names, without hashing them: nearly every response has neither.
        let (mut fly, mut petrel) = (false, false);
        for n in h.keys() {
            fly |= *n == FLY;
            petrel |= *n == PETREL;
        }
        let v = match (fly, petrel) {
            (true, _) => h.get(FLY)?,
            (false, true) => h.get(PETREL)?,
            (false, false) => return None,
        };
        Some(
            v.to_str()
                .map_err(|_| "not text".to_string())
                .and_then(Self::parse),
        )
    }

    /// Parses one value, e.g. `region=ord;state=captured-write;timeout=2s`.
    pub fn parse(v: &str) -> Result<Replay, String> {
        if v.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} bytes"));
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let mut r = Replay::default();
        let mut named_region = false;
        for field in v.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            let (k, val) = field
                .split_once('=')
                .ok_or_else(|| format!("field {field:?} has no '='"))?;
            let k = k.trim().to_ascii_lowercase();
            let val = val.trim();
            let val = val
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(val)
                .trim();
            match k.as_str() {
                "region" => {
                    named_region = true;
                    for reg in val.split(',').map(|s| s.trim().to_ascii_lowercase()) {
                        if reg == "any" {
                            r.any = true;
                        } else if token(&reg) {
                            r.regions.push(reg);
                        } else {
                            return Err(format!("bad region {reg:?}"));
                        }
                    }
                }
                "app" if token(val) => r.app = Some(val.to_string()),
                "instance" if token(val) => r.instance = Some(val.to_string()),
                "prefer_instance" if token(val) => r.prefer_instance = Some(val.to_string()),
                "elsewhere" => r.elsewhere = val.eq_ignore_ascii_case("true"),
                "state" => r.state = Some(val.to_string()),
                "timeout" => {
                    let d: crate::config::Dur = val.parse()?;
                    r.timeout = Some(d.get());
                }
                "fallback" => {
                    r.fallback = match val {
                        "prefer_self" => Fallback::PreferSelf,
                        "force_self" => Fallback::ForceSelf,
                        _ => return Err(format!("unknown fallback {val:?}")),
                    }
                }
                _ => return Err(format!("unknown or malformed field {field:?}")),
            }
        }
        if !named_region {
            r.any = true;
        }
        Ok(r)
    }

    /// Where the replay points, for error messages: `instance X`, `in iad, ord`, `anywhere`.
    pub fn target(&self) -> String {
        match (&self.instance, self.regions.is_empty()) {
            (Some(i), _) => format!("instance {i}"),
            (None, true) => "anywhere".into(),
            (None, false) if self.any => format!("in {} or anywhere", self.regions.join(", ")),
            (None, false) => format!("in {}", self.regions.join(", ")),
        }
    }

    /// The routing hints of the replayed request: the forced or preferred instance, the regions
    /// in order.
    pub fn hints(&self) -> Hints {
        Hints {
            force: self.instance.clone(),
            prefer_instance: self.prefer_instance.clone(),
            prefer_regions: self.regions.clone(),
        }
    }

    /// May the replayed request go to an instance in `region` with id `id`, having been replayed
    /// by `from`? Regions named without `any` are a requirement; with `any`, a preference.
    pub fn allows(&self, id: &str, region: &str, from: &str) -> bool {
        (self.any || self.regions.iter().any(|r| r == region)) && !(self.elsewhere && id == from)
    }

    /// `fly-replay-src` for the target: who replayed, from where, when (µs since the epoch), and
    /// the state it passed on.
    pub fn src_header(&self, instance: &str, region: &str) -> Option<HeaderValue> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut v = format!("instance={instance};region={region};t={t}");
        if let Some(s) = &self.state {
            v.push_str(";state=");
            v.push_str(s);
        }
        HeaderValue::from_str(&v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_as_fly_documents_them() {
        let r =
            Replay::parse("region=ord,IAD;state=w1;timeout=800ms;fallback=prefer_self").unwrap();
        assert_eq!(r.regions, ["ord", "iad"]);
        assert_eq!(r.state.as_deref(), Some("w1"));
        assert_eq!(r.timeout, Some(Duration::from_millis(800)));
        assert_eq!(r.fallback, Fallback::PreferSelf);
        assert!(r.allows("x", "iad", "y") && !r.allows("x", "fra", "y"));
        let r = Replay::parse("elsewhere=true").unwrap();
        assert!(r.elsewhere && !r.allows("a", "iad", "a") && r.allows("b", "iad", "a"));
        let r = Replay::parse("region=any;instance=ord-1").unwrap();
        assert!(r.regions.is_empty() && r.any);
        assert_eq!(r.hints().force.as_deref(), Some("ord-1"));
        // Fly quotes lists; `any` after regions is "these first, then anywhere".
        let r = Replay::parse("region=\"sjc,any\"").unwrap();
        assert_eq!(
            (r.regions.as_slice(), r.any),
            (&["sjc".to_string()][..], true)
        );
        assert!(r.allows("x", "fra", "y"));
        assert_eq!(r.hints().prefer_regions, ["sjc"]);
        assert_eq!(
            Replay::parse("app=web").unwrap().app.as_deref(),
            Some("web")
        );
        for bad in ["region", "fallback=maybe", "instance=a b", "colour=red"] {
            assert!(Replay::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_source_header_carries_the_state() {
        let r = Replay::parse("region=iad;state=abc").unwrap();
        let v = r.src_header("lhr-1", "lhr").unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with("instance=lhr-1;region=lhr;t="), "{v}");
        assert!(v.ends_with(";state=abc"), "{v}");
    }
}
