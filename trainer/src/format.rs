//! Terminal formatting shared by commands: sizes, counts, bars.

pub use ldmkit_core::units::{bytes, count};

/// A horizontal bar of `width` cells for `fraction` in [0, 1], with eighth-cell resolution.
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if eighths % 8 > 0 {
        s.push(PARTS[eighths % 8]);
    }
    let used = s.chars().count();
    s.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(4_270_000_000), "4.27 GB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(count(859_520_964), "859.5M");
        assert_eq!(bar(0.5, 4).chars().count(), 4);
        assert_eq!(bar(1.0, 3).chars().count(), 3);
        assert_eq!(bar(1.0, 3), "███");
    }
}
