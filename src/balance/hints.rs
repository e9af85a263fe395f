//! Routing hints from request headers (SPEC §5): force instance, prefer instance, prefer regions.

use http::HeaderMap;

/// The client's routing wishes for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// Only this instance, never another.
    pub force: Option<String>,
    /// This instance first if it can take the request.
    pub prefer_instance: Option<String>,
    /// Instances in these regions first, in this order.
    pub prefer_regions: Vec<String>,
}

/// Header names petrel reads for routing, both spellings; they are removed before forwarding.
pub const ROUTING_HEADERS: [&str; 6] = [
    "petrel-force-instance-id",
    "fly-force-instance-id",
    "petrel-prefer-instance-id",
    "fly-prefer-instance-id",
    "petrel-prefer-region",
    "fly-prefer-region",
];

const MAX_REGIONS: usize = 16;

fn first<'a>(h: &'a HeaderMap, names: [&str; 2]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| h.get(*n))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl Hints {
    /// Reads the routing headers; values that are not plain tokens are ignored rather than trusted.
    pub fn from_headers(h: &HeaderMap) -> Self {
        // The usual request names no hint: one pass over its keys instead of six lookups.
        let routing = |n: &http::HeaderName| ROUTING_HEADERS.contains(&n.as_str());
        if !h.keys().any(routing) {
            return Self::default();
        }
        let token = |s: &str| {
            s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let force =
            first(h, ["petrel-force-instance-id", "fly-force-instance-id"]).map(str::to_string);
        let prefer_instance = first(h, ["petrel-prefer-instance-id", "fly-prefer-instance-id"])
            .filter(|s| token(s))
            .map(str::to_string);
        let prefer_regions = first(h, ["petrel-prefer-region", "fly-prefer-region"])
            .map(|s| {
                s.split(',')
                    .map(|r| r.trim().to_ascii_lowercase())
                    .filter(|r| !r.is_empty() && token(r))
                    .take(MAX_REGIONS)
                    .collect()
            })
            .unwrap_or_default();
        Hints {
            force,
            prefer_instance,
            prefer_regions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_and_region_lists() {
        let mut h = HeaderMap::new();
        h.insert("fly-force-instance-id", "abc".parse().unwrap());
        h.insert(
            "petrel-prefer-region",
            " IAD, lhr ,,bad region".parse().unwrap(),
        );
        let hints = Hints::from_headers(&h);
        assert_eq!(hints.force.as_deref(), Some("abc"));
        assert_eq!(hints.prefer_regions, ["iad", "lhr"]);
        assert_eq!(hints.prefer_instance, None);
    }

    #[test]
    fn empty_headers_mean_no_hints() {
        assert_eq!(Hints::from_headers(&HeaderMap::new()), Hints::default());
    }
}
