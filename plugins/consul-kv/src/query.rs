//! Pure parsing of what a Consul request carries in its URL: the percent-decoded path,
//! the query string (as Go's `url.ParseQuery` reads it, since Consul is written in Go),
//! Go's `time.ParseDuration` for `?wait=` and `strconv.ParseUint` with its error text.

/// A request target split into its decoded path and query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path, percent-decoded (`+` stays `+`). Bytes, since keys need not be UTF-8.
    pub path: Vec<u8>,
    pub query: Query,
}

/// Query parameters in order; a name without `=` has the value "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Whether the parameter is present at all (Consul's `?recurse`, `?raw`: presence
    /// is what counts, `?recurse=false` still recurses).
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`; `plus_is_space` for query components. `Err` names the bad
/// escape as Go does (`invalid URL escape "%zz"`).
fn unescape(s: &str, plus_is_space: bool) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let decoded = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
                    _ => None,
                };
                let Some(b) = decoded else {
                    let end = (i + 3).min(bytes.len());
                    let shown = String::from_utf8_lossy(&bytes[i..end]);
                    return Err(format!("invalid URL escape {shown:?}"));
                };
                out.push(b);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Parses a query string. Pairs with a bad escape or a non-UTF-8 result are dropped,
/// as Go's `URL.Query()` drops them.
pub fn parse_query(raw: &str) -> Query {
    let mut pairs = Vec::new();
    for part in raw.split('&') {
        if part.is_empty() || part.contains(';') {
            continue;
        }
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let (Ok(name), Ok(value)) = (unescape(name, true), unescape(value, true)) else {
            continue;
        };
        let (Ok(name), Ok(value)) = (String::from_utf8(name), String::from_utf8(value)) else {
            continue;
        };
        pairs.push((name, value));
    }
    Query { pairs }
}

/// Splits a request target (origin form, or absolute form `http://host/path`) into its
/// decoded path and query. `Err` is a target no server would route.
pub fn parse_target(target: &str) -> Result<Target, String> {
    let target = target.split('#').next().unwrap_or("");
    let rest = if target.starts_with('/') {
        target
    } else if let Some(after) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        after.find('/').map_or("/", |i| &after[i..])
    } else {
        return Err(format!("unsupported request target {target:?}"));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Ok(Target {
        path: unescape(path, false)?,
        query: parse_query(query),
    })
}

/// Go's `strconv.ParseUint(s, 10, 64)`, with Go's error text.
pub fn parse_uint(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    s.parse()
        .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

/// Go's `time.ParseDuration`: a signed sequence of decimal numbers, each with optional
/// fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `300ms`, `1.5h`,
/// `2h45m`; a bare `0` is allowed. Nanoseconds, `None` if malformed or over `i64`.
pub fn parse_duration(s: &str) -> Option<i128> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after) = rest.strip_prefix('.') {
            let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after[..frac_len];
            rest = &after[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        if int_part.len() > 20 {
            return None;
        }
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = int.checked_mul(unit)?;
        // Fraction digits past nanosecond precision do not matter.
        let mut scale = unit;
        for digit in frac_part.bytes().take(20) {
            scale /= 10;
            value += i128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
    }
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_path_and_query() {
        let t = parse_target("/v1/kv/a%20b/c+d?recurse&separator=%2F&x=1+2&bad=%zz").unwrap();
        assert_eq!(t.path, b"/v1/kv/a b/c+d");
        assert!(t.query.has("recurse"));
        assert_eq!(t.query.get("recurse"), Some(""));
        assert_eq!(t.query.get("separator"), Some("/"));
        assert_eq!(t.query.get("x"), Some("1 2"));
        assert!(!t.query.has("bad"));
        assert!(!t.query.has("keys"));
    }

    #[test]
    fn absolute_form_and_fragment() {
        let t = parse_target("http://localhost:8500/v1/kv/a?raw#frag").unwrap();
        assert_eq!(t.path, b"/v1/kv/a");
        assert!(t.query.has("raw"));
        assert_eq!(parse_target("http://host").unwrap().path, b"/");
    }

    #[test]
    fn bad_targets() {
        assert_eq!(
            parse_target("/v1/kv/%g1"),
            Err("invalid URL escape \"%g1\"".to_string())
        );
        assert!(parse_target("/v1/kv/%4").is_err());
        assert!(parse_target("*").is_err());
    }

    #[test]
    fn first_value_wins() {
        let q = parse_query("index=1&index=2");
        assert_eq!(q.get("index"), Some("1"));
    }

    #[test]
    fn uint_like_go() {
        assert_eq!(parse_uint("42"), Ok(42));
        assert_eq!(parse_uint("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_uint("+1"),
            Err("strconv.ParseUint: parsing \"+1\": invalid syntax".into())
        );
        assert_eq!(
            parse_uint(""),
            Err("strconv.ParseUint: parsing \"\": invalid syntax".into())
        );
        assert_eq!(
            parse_uint("18446744073709551616"),
            Err("strconv.ParseUint: parsing \"18446744073709551616\": value out of range".into())
        );
    }

    #[test]
    fn durations_like_go() {
        const MS: i128 = 1_000_000;
        assert_eq!(parse_duration("10s"), Some(10_000 * MS));
        assert_eq!(parse_duration("5m"), Some(300_000 * MS));
        assert_eq!(parse_duration("100ms"), Some(100 * MS));
        assert_eq!(parse_duration("1h"), Some(3_600_000 * MS));
        assert_eq!(
            parse_duration("2h45m"),
            Some((2 * 3600 + 45 * 60) * 1000 * MS)
        );
        assert_eq!(parse_duration("1.5s"), Some(1500 * MS));
        assert_eq!(parse_duration(".5s"), Some(500 * MS));
        assert_eq!(parse_duration("5.s"), Some(5000 * MS));
        assert_eq!(parse_duration("-1s"), Some(-1000 * MS));
        assert_eq!(parse_duration("1us"), Some(1000));
        assert_eq!(parse_duration("1µs"), Some(1000));
        assert_eq!(parse_duration("7ns"), Some(7));
        assert_eq!(parse_duration("0"), Some(0));
        for bad in ["", "10", "s", ".s", "1x", "1.2.3s", "-", "9999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
