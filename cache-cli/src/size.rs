//! Parsing of SIZE and RATE arguments.
//!
//! A number with an optional unit, case-insensitive, spaces allowed:
//! `1048576`, `64KiB`, `1M`, `1MiB`, `2g`, `10MB`, `1.5GiB`. `K`, `M`,
//! `G`, `T` and the `KiB`... forms are powers of 1024; `KB`, `MB`, `GB`,
//! `TB` are powers of 1000 (like bytesize / `ls -h` vs `df -H`). A RATE
//! may end in `/s` (`10MB/s`, `200M/s`): it is bytes per second.

/// Splits `12.5MiB` into the number and the unit (either may be empty).
pub fn split_unit(s: &str) -> (&str, &str) {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    t.split_at(split)
}

/// Parses a SIZE (see the module docs).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = split_unit(s);
    if num.is_empty() {
        return Err(format!(
            "{s:?}: expected a number with an optional unit, e.g. 64KiB or 1M"
        ));
    }
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use K, M, G, KiB, MB, ...)"
            ))
        }
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?}: too large"));
    }
    let f: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: {num:?} is not a number"))?;
    let v = f * mult as f64;
    if !(0.0..1.8e19).contains(&v) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(v.round() as u64)
}

/// Parses a RATE: a SIZE per second, the `/s` being optional.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t);
    let v = parse_size(t)?;
    if v == 0 {
        return Err(format!("{s:?}: a rate must be above zero"));
    }
    Ok(v)
}

/// `1.5 GiB`-style rendering for messages.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size(" 2g "), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10MB/s"), Ok(10_000_000));
        assert_eq!(parse_rate("200M"), Ok(200 << 20));
        assert!(parse_rate("1mbps").is_err(), "bits are not bytes");
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(5), "5 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
