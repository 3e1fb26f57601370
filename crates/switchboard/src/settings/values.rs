//! Value types of the settings and their serde deserializers.
//!
//! Environment variables and flags arrive as strings, so every value accepts both its native
//! TOML type and a string: durations as integer seconds or `"25s"`, `"500ms"`, `"2m"`, `"1h"`;
//! sizes as integer bytes or `"1MiB"`, `"256KiB"`, `"64KB"`; booleans as `true`/`"true"`; lists
//! as arrays or comma-separated strings. Range checks live here too, so an error carries the
//! key's path (serde_path_to_error) and the layer that set it.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use switchboard_server::rate::RateLimit;

// ---------------------------------------------------------------------------------------------
// Text forms (shared by the deserializers and by the rendering of the effective configuration)

/// `25s`, `500ms`, `2m`, `1h`, `1d`, or bare integer seconds: the auth crate's parser, so a
/// duration means the same in `[auth]` and everywhere else.
pub(crate) use switchboard_auth::parse_duration;

/// The shortest exact text form of a duration (whole milliseconds).
pub(crate) fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms != 0 && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    if ms == 0 {
        "0s".to_owned()
    } else {
        format!("{ms}ms")
    }
}

/// `1MiB`, `256KiB`, `64KB`, `2GB`, `512B`, or bare integer bytes. KB/MB/GB are powers of
/// 1000, KiB/MiB/GiB powers of 1024; units are case-insensitive.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let err =
        || format!("expected a size like \"1MiB\", \"256KiB\", \"64KB\" or bytes, got {text:?}");
    let n: usize = number.parse().map_err(|_| err())?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// `1MiB` for exact binary multiples, else the number of bytes.
pub(crate) fn format_size(bytes: usize) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `MESSAGES/SECONDS[/BURST]` (SECONDS may also be a duration like `500ms`) or `off`.
/// Without BURST the burst is MESSAGES.
pub(crate) fn parse_rate_limit(text: &str) -> Result<Option<RateLimit>, String> {
    let text = text.trim();
    if text == "off" {
        return Ok(None);
    }
    let err = || format!("expected MESSAGES/SECONDS[/BURST] or \"off\", got {text:?}");
    let parts: Vec<&str> = text.split('/').collect();
    let positive = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(err)
    };
    let (messages, per, burst) = match parts[..] {
        [m, s] => (positive(m)?, s, None),
        [m, s, b] => (positive(m)?, s, Some(positive(b)?)),
        _ => return Err(err()),
    };
    let per = parse_duration(per).map_err(|_| err())?;
    if per.is_zero() {
        return Err(err());
    }
    Ok(Some(RateLimit {
        messages,
        per,
        burst: burst.unwrap_or(messages),
    }))
}

/// The canonical text form of a rate limit: `100/10/20` (or `100/500ms/20`), `off`.
pub(crate) fn format_rate_limit(limit: &Option<RateLimit>) -> String {
    match limit {
        None => "off".to_owned(),
        Some(l) => {
            let per = if l.per.subsec_millis() == 0 {
                l.per.as_secs().to_string()
            } else {
                format_duration(l.per)
            };
            format!("{}/{}/{}", l.messages, per, l.burst)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars: one visitor, native integer/bool or a string

/// Accepts an integer, a boolean or a string and converts it with the given functions.
pub(super) struct Scalar<T> {
    pub(super) expecting: &'static str,
    pub(super) int: Option<fn(i64) -> Result<T, String>>,
    pub(super) boolean: Option<fn(bool) -> Result<T, String>>,
    pub(super) text: fn(&str) -> Result<T, String>,
}

impl<'de, T> Visitor<'de> for Scalar<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match self.int {
            Some(int) => int(v).map_err(E::custom),
            None => Err(E::invalid_type(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!("{v} is too large"))),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        match self.boolean {
            Some(boolean) => boolean(v).map_err(E::custom),
            None => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.text)(v).map_err(E::custom)
    }
}

pub(super) fn scalar<'de, D: Deserializer<'de>, T>(
    d: D,
    visitor: Scalar<T>,
) -> Result<T, D::Error> {
    d.deserialize_any(visitor)
}

fn non_negative(v: i64, expecting: &str) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("expected {expecting}, got {v}"))
}

fn at_least_one<T: PartialOrd + From<u8> + fmt::Display>(v: T) -> Result<T, String> {
    if v < T::from(1) {
        Err(format!("must be at least 1, got {v}"))
    } else {
        Ok(v)
    }
}

/// `true`/`false`, native or as a string.
pub(crate) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "true or false",
            int: None,
            boolean: Some(Ok),
            text: |s| match s.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("expected true or false, got {s:?}")),
            },
        },
    )
}

/// `IP:PORT`.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "an address like \"127.0.0.1:8080\" or \"[::]:8080\"",
            int: None,
            boolean: None,
            text: |s| {
                s.trim().parse().map_err(|_| {
                    format!(
                        "expected an address like \"127.0.0.1:8080\" or \"[::]:8080\", got {s:?}"
                    )
                })
            },
        },
    )
}

/// A free-form string (log filter, cookie name, URL).
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a string",
            int: None,
            boolean: None,
            text: |s| Ok(s.to_owned()),
        },
    )
}

fn parse_count(s: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected a non-negative integer, got {s:?}"))
}

fn count_from_int(v: i64) -> Result<usize, String> {
    let v = non_negative(v, "a non-negative integer")?;
    usize::try_from(v).map_err(|_| format!("{v} is too large"))
}

/// A non-negative integer.
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a non-negative integer",
            int: Some(count_from_int),
            boolean: None,
            text: parse_count,
        },
    )
}

/// An integer of at least 1.
pub(crate) fn positive_count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a positive integer",
            int: Some(|v| count_from_int(v).and_then(at_least_one)),
            boolean: None,
            text: |s| {
                parse_count(s)
                    .map_err(|_| format!("expected a positive integer, got {s:?}"))
                    .and_then(at_least_one)
            },
        },
    )
}

/// A positive integer or `"unlimited"` (`None`).
pub(crate) fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a positive integer or \"unlimited\"",
            int: Some(|v| count_from_int(v).and_then(at_least_one).map(Some)),
            boolean: None,
            text: |s| match s.trim() {
                "unlimited" => Ok(None),
                _ => parse_count(s)
                    .map_err(|_| format!("expected a positive integer or \"unlimited\", got {s:?}"))
                    .and_then(at_least_one)
                    .map(Some),
            },
        },
    )
}

/// A positive integer or `"auto"` (`None`).
pub(crate) fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a positive integer or \"auto\"",
            int: Some(|v| count_from_int(v).and_then(at_least_one).map(Some)),
            boolean: None,
            text: |s| match s.trim() {
                "auto" => Ok(None),
                _ => parse_count(s)
                    .map_err(|_| format!("expected a positive integer or \"auto\", got {s:?}"))
                    .and_then(at_least_one)
                    .map(Some),
            },
        },
    )
}

const DURATION: &str = "a duration (integer seconds or a string like \"25s\", \"500ms\", \"2m\")";

fn duration_from_int(v: i64) -> Result<Duration, String> {
    non_negative(v, "a non-negative number of seconds").map(Duration::from_secs)
}

fn positive_duration_check(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(d)
    }
}

/// A duration (zero allowed).
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: DURATION,
            int: Some(duration_from_int),
            boolean: None,
            text: parse_duration,
        },
    )
}

/// A duration greater than zero.
pub(crate) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: DURATION,
            int: Some(|v| duration_from_int(v).and_then(positive_duration_check)),
            boolean: None,
            text: |s| parse_duration(s).and_then(positive_duration_check),
        },
    )
}

/// A size in bytes, where 0 means "not set" (e.g. leave the kernel's default).
pub(crate) fn size_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a size (integer bytes or a string like \"64KiB\"), or 0",
            int: Some(count_from_int),
            boolean: None,
            text: parse_size,
        },
    )
}

/// A size in bytes of at least 1.
pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a size (integer bytes or a string like \"1MiB\", \"256KiB\", \"64KB\")",
            int: Some(|v| count_from_int(v).and_then(at_least_one)),
            boolean: None,
            text: |s| parse_size(s).and_then(at_least_one),
        },
    )
}

/// An optional path (absent: `None`).
pub(crate) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    scalar(
        d,
        Scalar {
            expecting: "a file path",
            int: None,
            boolean: None,
            text: |s| {
                if s.is_empty() {
                    Err("expected a file path, got an empty string".to_owned())
                } else {
                    Ok(Some(PathBuf::from(s)))
                }
            },
        },
    )
}

/// A list of strings: an array, or one comma-separated string (blank items are dropped).
pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of strings or a comma-separated string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(split_list(v).map(str::to_owned).collect())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_any(ListVisitor)
}

/// CORS origins: `*`, or `scheme://host[:port]` with scheme `http` or `https` and nothing
/// after (a browser's `Origin` never has a path or a trailing slash, so such an entry would
/// silently match nothing).
pub(crate) fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = string_list(d)?;
    for origin in &list {
        if origin != "*" && !is_origin(origin) {
            return Err(de::Error::custom(format!(
                "\"{origin}\" is not an origin: expected scheme://host[:port] (http or https, \
                 no path) or *"
            )));
        }
    }
    Ok(list)
}

fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || !port.is_empty() => (host, Some(port)),
        _ => (rest, None),
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Rate limit: "MESSAGES/SECONDS[/BURST]", "off", false, or {messages, per, burst}

/// The rate-limit value (`None`: off).
pub(crate) fn rate_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateLimit>, D::Error> {
    struct RateVisitor;
    impl<'de> Visitor<'de> for RateVisitor {
        type Value = Option<RateLimit>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("MESSAGES/SECONDS[/BURST], \"off\" or a table {messages, per, burst}")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_rate_limit(v).map_err(E::custom)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            if v {
                Err(E::custom(
                    "expected MESSAGES/SECONDS[/BURST] or \"off\", got true",
                ))
            } else {
                Ok(None)
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let t = RateTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(Some(RateLimit {
                messages: t.messages,
                per: t.per,
                burst: t.burst.unwrap_or(t.messages),
            }))
        }
    }
    d.deserialize_any(RateVisitor)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateTable {
    #[serde(deserialize_with = "positive_u32")]
    messages: u32,
    #[serde(deserialize_with = "positive_duration")]
    per: Duration,
    #[serde(default, deserialize_with = "some_positive_u32")]
    burst: Option<u32>,
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = positive_count(d)?;
    u32::try_from(n).map_err(|_| de::Error::custom(format!("{n} is too large")))
}

fn some_positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    positive_u32(d).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Enumerations

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// What a full outbox does (mirror of `switchboard_hub::OverflowPolicy`, with serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Policy {
    /// Drop the message, count it, tell the client it lagged.
    #[default]
    Drop,
    /// Close the connection with 4003.
    Close,
}

impl Policy {
    fn parse(s: &str) -> Result<Policy, String> {
        match s.trim() {
            "drop" => Ok(Policy::Drop),
            "close" => Ok(Policy::Close),
            _ => Err(format!("expected \"drop\" or \"close\", got {s:?}")),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Policy::Drop => "drop",
            Policy::Close => "close",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-room rules: a table, or the flag form "PATTERN=..."

/// History retention of the rooms matching `pattern`; unset limits inherit the default
/// retention (`history.max_messages`, `history.max_age`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryRule {
    #[serde(deserialize_with = "pattern")]
    pub(crate) pattern: String,
    #[serde(default, deserialize_with = "some_count")]
    pub(crate) max_messages: Option<usize>,
    #[serde(default, deserialize_with = "some_duration")]
    pub(crate) max_age: Option<Duration>,
}

/// Overflow policy of the rooms matching `pattern`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverflowRule {
    #[serde(deserialize_with = "pattern")]
    pub(crate) pattern: String,
    pub(crate) policy: Policy,
}

fn pattern<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        Err(de::Error::custom("empty pattern"))
    } else {
        Ok(s)
    }
}

fn some_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    count(d).map(Some)
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A rule with a one-line text form.
pub(crate) trait Rule: Sized + for<'de> Deserialize<'de> {
    /// What the text form looks like, for error messages.
    const FORM: &'static str;
    /// Parse the text form.
    fn parse(text: &str) -> Result<Self, String>;
}

impl Rule for HistoryRule {
    const FORM: &'static str = "PATTERN=COUNT[/AGE]";

    /// `PATTERN=COUNT[/AGE]`, AGE in seconds or a duration (`chat:*=500/1h`).
    fn parse(text: &str) -> Result<Self, String> {
        let err = || format!("expected {}, got {text:?}", Self::FORM);
        let (pattern, limits) = text.trim().rsplit_once('=').ok_or_else(err)?;
        if pattern.is_empty() {
            return Err(format!("empty PATTERN in {text:?}"));
        }
        let (count, age) = match limits.split_once('/') {
            Some((c, a)) => (
                c,
                Some(parse_duration(a).map_err(|e| format!("{e} in {text:?}"))?),
            ),
            None => (limits, None),
        };
        let count = parse_count(count).map_err(|e| format!("{e} in {text:?}"))?;
        Ok(HistoryRule {
            pattern: pattern.to_owned(),
            max_messages: Some(count),
            max_age: age,
        })
    }
}

impl Rule for OverflowRule {
    const FORM: &'static str = "PATTERN=drop|close";

    /// `PATTERN=POLICY` (`orders:*=close`).
    fn parse(text: &str) -> Result<Self, String> {
        let (pattern, policy) = text
            .trim()
            .rsplit_once('=')
            .ok_or_else(|| format!("expected {}, got {text:?}", Self::FORM))?;
        if pattern.is_empty() {
            return Err(format!("empty PATTERN in {text:?}"));
        }
        Ok(OverflowRule {
            pattern: pattern.to_owned(),
            policy: Policy::parse(policy).map_err(|e| format!("{e} in {text:?}"))?,
        })
    }
}

/// One rule: its table form or its text form.
struct OneRule<T>(T);

impl<'de, T: Rule> Deserialize<'de> for OneRule<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RuleVisitor<T>(PhantomData<T>);
        impl<'de, T: Rule> Visitor<'de> for RuleVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a table or a string {}", T::FORM)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
                T::parse(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(RuleVisitor(PhantomData)).map(OneRule)
    }
}

/// A list of rules: an array of tables or strings, or one comma-separated string of rules.
pub(crate) fn rules<'de, D: Deserializer<'de>, T: Rule>(d: D) -> Result<Vec<T>, D::Error> {
    struct RulesVisitor<T>(PhantomData<T>);
    impl<'de, T: Rule> Visitor<'de> for RulesVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "an array of rules (tables or strings {}) or a comma-separated string",
                T::FORM
            )
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            split_list(v)
                .map(|rule| T::parse(rule).map_err(E::custom))
                .collect()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut rules = Vec::new();
            while let Some(OneRule(rule)) = seq.next_element::<OneRule<T>>()? {
                rules.push(rule);
            }
            Ok(rules)
        }
    }
    d.deserialize_any(RulesVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_every_unit_and_format_back() {
        assert_eq!(parse_duration("25"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 3 s "), Ok(Duration::from_secs(3)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        for d in [
            0, 1, 500, 1000, 25_000, 600_000, 3_600_000, 86_400_000, 90_000,
        ] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn sizes_parse_decimal_and_binary_units_and_format_back() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64kb"), Ok(64_000));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("67108864"), Ok(64 << 20));
        assert!(parse_size("1 MiBs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(1536), "1536");
    }

    #[test]
    fn rate_limits_parse_with_and_without_burst() {
        let limit = |m, s, b| {
            Ok(Some(RateLimit {
                messages: m,
                per: Duration::from_secs(s),
                burst: b,
            }))
        };
        assert_eq!(parse_rate_limit("100/10/20"), limit(100, 10, 20));
        assert_eq!(parse_rate_limit("100/10"), limit(100, 10, 100));
        assert_eq!(parse_rate_limit("5/1m"), limit(5, 60, 5));
        assert_eq!(parse_rate_limit("off"), Ok(None));
        for bad in ["abc", "0/10", "10/0", "1/2/3/4", "10/x", "10/10/0", ""] {
            let err = parse_rate_limit(bad).expect_err(bad);
            assert!(err.contains("MESSAGES/SECONDS[/BURST]"), "{err}");
        }
        for text in ["100/10/20", "off", "3/500ms/3"] {
            let parsed = parse_rate_limit(text).expect(text);
            assert_eq!(format_rate_limit(&parsed), text);
        }
    }

    #[test]
    fn rules_parse_from_their_text_form() {
        assert_eq!(
            HistoryRule::parse("chat:*=500/3600"),
            Ok(HistoryRule {
                pattern: "chat:*".into(),
                max_messages: Some(500),
                max_age: Some(Duration::from_secs(3600)),
            })
        );
        assert_eq!(
            HistoryRule::parse("a=b=2"),
            Ok(HistoryRule {
                pattern: "a=b".into(),
                max_messages: Some(2),
                max_age: None,
            })
        );
        assert!(HistoryRule::parse("chat:*").is_err());
        assert!(HistoryRule::parse("=5").is_err());
        assert!(HistoryRule::parse("x=five").is_err());
        assert_eq!(
            OverflowRule::parse("orders:*=close"),
            Ok(OverflowRule {
                pattern: "orders:*".into(),
                policy: Policy::Close,
            })
        );
        assert!(OverflowRule::parse("orders:*=explode").is_err());
    }
}
