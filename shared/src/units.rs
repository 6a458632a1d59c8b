//! How sizes and counts are written for people, the same in the CLI and the browser.

/// Bytes in decimal units, as model hubs show them ("4.27 GB").
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// Parameter counts the way papers write them ("859.5M").
pub fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_as_hubs_and_papers_write_them() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(4_265_384_543), "4.27 GB");
        assert_eq!(count(859_520_964), "859.5M");
        assert_eq!(count(12_345), "12.3K");
    }
}
