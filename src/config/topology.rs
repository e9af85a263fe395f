//! Topology files (SPEC §9): regions with coordinates, explicit RTT overrides, and the RTT model
//! (great-circle distance / 200 km/ms × stretch × 2) used by `[simulate]`, `demo` and `sim`.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, ConfigErrors, Source};

/// Speed of light in fibre, km per ms.
const FIBRE_KM_PER_MS: f64 = 200.0;
/// RTT inside one region unless given as `"x-x"`.
const SAME_REGION_MS: f64 = 0.5;
const EARTH_RADIUS_KM: f64 = 6371.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "d_stretch")]
    stretch: f64,
    #[serde(default)]
    region: Vec<RegionEntry>,
    #[serde(default)]
    rtt_ms: HashMap<String, f64>,
    /// Nodes, workload and failures for `petrel sim`; read by `crate::sim::scenario`.
    #[serde(default)]
    #[allow(dead_code)]
    sim: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionEntry {
    code: String,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
}

fn d_stretch() -> f64 {
    1.6
}

/// A validated topology: every pair of its regions has an RTT.
#[derive(Debug, Clone)]
pub struct Topology {
    regions: Vec<String>,
    coords: HashMap<String, (f64, f64)>,
    overrides: HashMap<(String, String), f64>,
    stretch: f64,
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let src = Source::read(path).map_err(|e| ConfigErrors(vec![e]))?;
        Self::from_source(&src)
    }

    /// Parses and validates topology text.
    pub fn from_source(src: &Source) -> Result<Self, ConfigErrors> {
        let f: File = src.parse().map_err(|e| ConfigErrors(vec![e]))?;
        let mut errs: Vec<ConfigError> = Vec::new();
        if !(1.0..=5.0).contains(&f.stretch) {
            errs.push(src.error("stretch", "must be between 1.0 and 5.0"));
        }
        let mut t = Topology {
            regions: Vec::new(),
            coords: HashMap::new(),
            overrides: HashMap::new(),
            stretch: f.stretch,
        };
        for (i, r) in f.region.iter().enumerate() {
            if !super::valid_region(&r.code) || t.regions.contains(&r.code) {
                errs.push(src.error(
                    &format!("region[{i}].code"),
                    format!("invalid or duplicate region code {:?}", r.code),
                ));
                continue;
            }
            match (r.lat, r.lon) {
                (Some(lat), Some(lon))
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                {
                    t.coords.insert(r.code.clone(), (lat, lon));
                }
                (None, None) => {}
                _ => errs.push(src.error(
                    &format!("region[{i}]"),
                    "lat and lon go together: lat in -90..90, lon in -180..180",
                )),
            }
            t.regions.push(r.code.clone());
        }
        for (pair, ms) in &f.rtt_ms {
            let key = format!("rtt_ms.{pair}");
            let Some((a, b)) = pair.split_once('-') else {
                errs.push(src.error(&key, format!("pair {pair:?} must be written \"a-b\"")));
                continue;
            };
            if !t.regions.iter().any(|r| r == a) || !t.regions.iter().any(|r| r == b) {
                errs.push(src.error(
                    &key,
                    format!("pair {pair:?} names a region not listed in [[region]]"),
                ));
                continue;
            }
            if !ms.is_finite() || *ms < 0.0 {
                errs.push(src.error(&key, "must be a number of milliseconds ≥ 0"));
                continue;
            }
            t.overrides.insert(ordered(a, b), *ms);
        }
        for (i, a) in t.regions.iter().enumerate() {
            for b in &t.regions[i..] {
                if t.rtt_ms(a, b).is_none() {
                    errs.push(src.error(
                        "rtt_ms",
                        format!("no RTT for {a}-{b}: give both regions lat/lon or add \"{a}-{b}\" to [rtt_ms]"),
                    ));
                }
            }
        }
        if errs.is_empty() {
            Ok(t)
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// Region codes, in file order.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// Latitude and longitude of a region, when the file gives them.
    pub fn coords(&self, code: &str) -> Option<(f64, f64)> {
        self.coords.get(code).copied()
    }

    /// Round-trip time between two regions in ms, if both are known.
    pub fn rtt_ms(&self, a: &str, b: &str) -> Option<f64> {
        if let Some(ms) = self.overrides.get(&ordered(a, b)) {
            return Some(*ms);
        }
        if a == b {
            return self
                .coords
                .contains_key(a)
                .then_some(SAME_REGION_MS)
                .or_else(|| {
                    self.regions
                        .iter()
                        .any(|r| r == a)
                        .then_some(SAME_REGION_MS)
                });
        }
        let (pa, pb) = (self.coords.get(a)?, self.coords.get(b)?);
        Some(great_circle_km(*pa, *pb) / FIBRE_KM_PER_MS * self.stretch * 2.0)
    }
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn great_circle_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(text: &str) -> Result<Topology, ConfigErrors> {
        Topology::from_source(&Source::from_text(Path::new("t.toml"), text.into()))
    }

    #[test]
    fn computed_and_explicit_rtts() {
        let t = topo(
            "stretch = 1.6\n[[region]]\ncode = \"iad\"\nlat = 38.94\nlon = -77.46\n\
             [[region]]\ncode = \"lhr\"\nlat = 51.47\nlon = -0.45\n[[region]]\ncode = \"xyz\"\n\
             [rtt_ms]\n\"iad-xyz\" = 10\n\"lhr-xyz\" = 20\n",
        )
        .unwrap();
        let iad_lhr = t.rtt_ms("iad", "lhr").unwrap();
        // ~5,900 km great circle → 29.5 ms one way in fibre × 1.6 stretch × 2 ≈ 94 ms.
        assert!((90.0..100.0).contains(&iad_lhr), "{iad_lhr}");
        assert_eq!(t.rtt_ms("lhr", "iad"), Some(iad_lhr));
        assert_eq!(t.rtt_ms("xyz", "iad"), Some(10.0));
        assert_eq!(t.rtt_ms("iad", "iad"), Some(0.5));
        assert_eq!(t.rtt_ms("iad", "nope"), None);
    }

    #[test]
    fn missing_pairs_and_unknown_regions_are_errors() {
        let e =
            topo("[[region]]\ncode = \"aaa\"\n[[region]]\ncode = \"bbb\"\nlat = 1.0\nlon = 1.0\n")
                .unwrap_err();
        assert!(e.to_string().contains("no RTT for aaa-bbb"), "{e}");
        let e = topo("[[region]]\ncode = \"aaa\"\n[rtt_ms]\n\"aaa-zzz\" = 3\n").unwrap_err();
        assert!(e.to_string().contains("t.toml:4: rtt_ms.aaa-zzz"), "{e}");
    }
}
