//! Human-friendly values in guest files: sizes, durations, CIDR addresses.
//!
//! Each type deserializes from the TOML value a person would write and
//! serializes back to one canonical form, so that a spec read from a guest
//! file and the same spec read back from the state store compare equal (the
//! planner diffs them). Parse errors are plain strings: serde attaches the
//! span of the offending value, which the diagnostics turn into a label.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A byte count, written as an integer or as `512MiB`, `8G`, `1.5GB`.
///
/// Suffixes follow the convention of systemd, Docker and LXC: `K`, `M`, `G`,
/// `T` and `KiB`..`TiB` are powers of 1024; `KB`, `MB`, `GB`, `TB` are powers
/// of 1000 (SI). A bare number or `B` is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Size, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number = number.replace('_', "");
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "k" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "invalid size `{text}`: unknown unit `{other}` (use B, K/KiB, M/MiB, G/GiB, T/TiB, or KB/MB/GB/TB for powers of 1000)"
                ));
            }
        };
        if number.is_empty() {
            return Err(format!(
                "invalid size `{text}`: expected a number such as `512MiB`"
            ));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid size `{text}`: `{number}` is not a number"))?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("invalid size `{text}`: too large"));
        }
        if bytes.fract() != 0.0 {
            return Err(format!(
                "invalid size `{text}`: not a whole number of bytes"
            ));
        }
        Ok(Size(bytes as u64))
    }
}

impl fmt::Display for Size {
    /// Canonical form: the largest binary unit that divides the value exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (scale, unit) in UNITS {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{}", self.0 / scale, unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        deserializer.deserialize_any(NumberOrText::<Size>::new(
            "a size such as `512MiB` or a byte count",
        ))
    }
}

/// A duration, written as seconds (integer) or `30s`, `500ms`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Span, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("invalid duration `{text}`: expected a number with a unit such as `30s`")
        })?;
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" | "sec" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m or h)"
                ));
            }
        };
        if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
            return Err(format!("invalid duration `{text}`: out of range"));
        }
        Ok(Span(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis.is_multiple_of(1000) {
            write!(f, "{}s", millis / 1000)
        } else {
            write!(f, "{millis}ms")
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
        deserializer.deserialize_any(NumberOrText::<Span>::new(
            "a duration such as `30s` or a number of seconds",
        ))
    }
}

/// An interface address with its prefix length: `10.0.0.2/24`, `fd00::2/64`.
/// A bare address means a host address (/32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpCidr {
    pub fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `other` lies in this address's subnet.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.addr, other) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpCidr {
    type Err = String;

    fn from_str(text: &str) -> Result<IpCidr, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("invalid address `{text}`: `{addr_text}` is not an IPv4 or IPv6 address")
        })?;
        let max = IpCidr::max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "invalid address `{text}`: prefix length must be 0..={max}"
                    ));
                }
            },
        };
        if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
            return Err(format!(
                "invalid address `{text}`: unspecified, loopback and multicast addresses cannot be assigned to a guest"
            ));
        }
        Ok(IpCidr { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpCidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IpCidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Visitor shared by [`Size`] and [`Span`]: accepts an integer (the base unit)
/// or a string with a unit.
struct NumberOrText<T> {
    expecting: &'static str,
    marker: std::marker::PhantomData<T>,
}

impl<T> NumberOrText<T> {
    fn new(expecting: &'static str) -> Self {
        NumberOrText {
            expecting,
            marker: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> de::Visitor<'_> for NumberOrText<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        if value < 0 {
            return Err(E::custom(format!(
                "expected {}, found negative number {value}",
                self.expecting
            )));
        }
        value.to_string().parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        value.to_string().parse().map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_by_table() {
        let table: &[(&str, Option<u64>)] = &[
            ("512MiB", Some(512 << 20)),
            ("512M", Some(512 << 20)),
            ("8G", Some(8 << 30)),
            ("8GiB", Some(8 << 30)),
            ("1.5GB", Some(1_500_000_000)),
            ("1.5G", Some(3 << 29)),
            ("100", Some(100)),
            ("100B", Some(100)),
            ("4KB", Some(4000)),
            ("1_000K", Some(1_024_000)),
            ("0.5B", None),
            ("12 parsecs", None),
            ("G", None),
            ("1.2.3M", None),
            ("", None),
        ];
        for (text, expected) in table {
            assert_eq!(
                text.parse::<Size>().ok().map(Size::bytes),
                *expected,
                "{text}"
            );
        }
    }

    #[test]
    fn sizes_display_canonically_and_round_trip() {
        for (bytes, shown) in [
            (512u64 << 20, "512MiB"),
            (1_500_000_000, "1500000000B"),
            (3 << 29, "1536MiB"),
            (0, "0B"),
        ] {
            assert_eq!(Size(bytes).to_string(), shown);
            assert_eq!(shown.parse::<Size>().unwrap(), Size(bytes));
        }
    }

    #[test]
    fn durations_parse_by_table() {
        let table: &[(&str, Option<u64>)] = &[
            ("30s", Some(30_000)),
            ("30", Some(30_000)),
            ("500ms", Some(500)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("1.5s", Some(1_500)),
            ("3 fortnights", None),
            ("s", None),
        ];
        for (text, expected) in table {
            assert_eq!(
                text.parse::<Span>().ok().map(|s| s.0.as_millis() as u64),
                *expected,
                "{text}"
            );
        }
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let net: IpCidr = "10.1.2.3/24".parse().unwrap();
        assert!(net.contains("10.1.2.254".parse().unwrap()));
        assert!(!net.contains("10.1.3.1".parse().unwrap()));
        assert!(!net.contains("fd00::1".parse().unwrap()));
        let v6: IpCidr = "fd00:10::11/64".parse().unwrap();
        assert!(v6.contains("fd00:10::1".parse().unwrap()));
        assert_eq!("10.0.0.1".parse::<IpCidr>().unwrap().prefix, 32);
        let any: IpCidr = "10.0.0.1/0".parse().unwrap();
        assert!(any.contains("192.0.2.1".parse().unwrap()));
        for bad in [
            "10.0.0.1/33",
            "fd00::1/129",
            "10.0.0",
            "0.0.0.0/0",
            "127.0.0.1/8",
            "224.0.0.1",
            "x/24",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }
}
