//! Small config value types with friendly parse errors: durations ("250ms", "30h") and socket addresses.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// A duration written as `"250ms"`, `"5s"`, `"10m"` or `"30h"`.
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
            || format!("invalid duration {s:?} (write e.g. \"250ms\", \"5s\", \"10m\", \"30h\")");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        n.checked_mul(ms_per).map(Dur::ms).ok_or_else(bad)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0s"),
            _ if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            _ if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            _ if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
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
        for bad in [
            "",
            "5",
            "s",
            "5 sec",
            "-1s",
            "1.5s",
            "99999999999999999999h",
        ] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn addresses_quote_the_input() {
        let e = "127.0.0.1:99999".parse::<Addr>().unwrap_err();
        assert!(e.contains("\"127.0.0.1:99999\""), "{e}");
        assert_eq!("[::1]:80".parse::<Addr>().unwrap().get().port(), 80);
    }
}
