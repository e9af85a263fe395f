//! Small config value types with friendly parse errors: durations ("250ms", "1m30s", Fly's bare
//! milliseconds) and socket addresses.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// A duration: a string of one or more number-and-unit parts as Go's `time.ParseDuration` and
/// Fly's fly.toml write them (`"250ms"`, `"5s"`, `"1m30s"`, `"1.5s"`; units `ns`, `us`/`µs`,
/// `ms`, `s`, `m`, `h`), or a bare integer of milliseconds (older fly.toml files:
/// `interval = 10000`). Negative durations are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole milliseconds.
    pub const fn ms(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    /// Whole seconds.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    /// The std duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid duration {s:?} (write e.g. \"250ms\", \"5s\", \"1m30s\", \"30h\")");
        let mut rest = s.trim();
        if rest == "0" {
            return Ok(Dur::ms(0));
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (num, tail) = rest.split_at(num_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let per: u128 = match unit {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(bad()),
            };
            let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
            if whole.is_empty() && frac.is_empty() {
                return Err(bad());
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let mut part = whole.checked_mul(per).ok_or_else(bad)?;
            if !frac.is_empty() {
                if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let scale = 10u128.pow(frac.len() as u32);
                part += frac.parse::<u128>().map_err(|_| bad())? * per / scale;
            }
            nanos = nanos.checked_add(part).ok_or_else(bad)?;
            rest = tail;
        }
        let nanos = u64::try_from(nanos).map_err(|_| bad())?;
        Ok(Dur(Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0s"),
            _ if ms.is_multiple_of(3_600_000) => write!(f, "{}h", ms / 3_600_000),
            _ if ms.is_multiple_of(60_000) => write!(f, "{}m", ms / 60_000),
            _ if ms.is_multiple_of(1_000) => write!(f, "{}s", ms / 1_000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl de::Visitor<'_> for Visit {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"5s\" or \"1m30s\", or whole milliseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur::ms(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(Dur::ms)
                    .map_err(|_| E::custom(format!("invalid duration {v} (must not be negative)")))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A socket address `ip:port`; the error quotes what the user wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr(pub SocketAddr);

impl Addr {
    /// The std address.
    pub fn get(self) -> SocketAddr {
        self.0
    }
}

impl FromStr for Addr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Addr).map_err(|_| {
            format!("invalid socket address {s:?} (write ip:port, e.g. \"127.0.0.1:8080\")")
        })
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, ms) in [
            ("250ms", 250),
            ("5s", 5_000),
            ("10m", 600_000),
            ("30h", 108_000_000),
        ] {
            let d: Dur = s.parse().unwrap();
            assert_eq!(d.get().as_millis() as u64, ms);
            assert_eq!(d.to_string(), s);
        }
        // Go's and Fly's forms.
        for (s, ms) in [
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("1h2m3s", 3_723_000),
            ("2500us", 2),
            ("0", 0),
            (".5s", 500),
        ] {
            assert_eq!(
                s.parse::<Dur>().unwrap().get().as_millis() as u64,
                ms,
                "{s}"
            );
        }
        for bad in [
            "",
            "5",
            "s",
            "5 sec",
            "-1s",
            "1.s.",
            "1x",
            "99999999999999999999h",
        ] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn bare_integers_are_milliseconds_as_older_fly_toml_files_write_them() {
        #[derive(serde::Deserialize)]
        struct T {
            a: Dur,
            b: Dur,
        }
        let t: T = toml::from_str("a = 10000\nb = \"1m30s\"\n").unwrap();
        assert_eq!((t.a.get().as_millis(), t.b.get().as_secs()), (10_000, 90));
        assert!(toml::from_str::<T>("a = -1\nb = \"1s\"\n").is_err());
    }

    #[test]
    fn addresses_quote_the_input() {
        let e = "127.0.0.1:99999".parse::<Addr>().unwrap_err();
        assert!(e.contains("\"127.0.0.1:99999\""), "{e}");
        assert_eq!("[::1]:80".parse::<Addr>().unwrap().get().port(), 80);
    }
}
