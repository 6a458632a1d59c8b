//! The loss curve as an SVG picture (`loss.svg` in the run folder): every step's loss faint,
//! a smoothed curve over it, a log-scaled axis when the loss spans more than a decade, and
//! labelled ticks. SVG needs no font files or drawing crate and opens in any browser.

use std::fmt::Write;

const W: f64 = 800.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;

/// Exponential smoothing as TensorBoard's slider does (weight 0.9, debiased).
fn smooth(values: &[f64]) -> Vec<f64> {
    let (mut acc, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&v| {
            acc = 0.9 * acc + 0.1 * v;
            weight = 0.9 * weight + 0.1;
            acc / weight
        })
        .collect()
}

/// `points` are (step, loss).
pub fn loss_svg(points: &[(u64, f64)], title: &str) -> String {
    let pts: Vec<(u64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite() && *l > 0.0)
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="18" font-size="14">{}</text>
"#,
        escape(title)
    );
    if pts.is_empty() {
        svg.push_str(
            "<text x=\"50%\" y=\"50%\" text-anchor=\"middle\">no steps yet</text>\n</svg>\n",
        );
        return svg;
    }
    let (x0, x1) = (
        pts[0].0 as f64,
        pts[pts.len() - 1].0.max(pts[0].0 + 1) as f64,
    );
    let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(lo * 1.0001);
    let log = hi / lo > 10.0;
    let f = |v: f64| if log { v.ln() } else { v };
    let (y0, y1) = (f(lo), f(hi));
    let px = |s: f64| LEFT + (s - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |v: f64| TOP + (1.0 - (f(v) - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for i in 0..=4 {
        let frac = i as f64 / 4.0;
        let v = if log {
            (y0 + frac * (y1 - y0)).exp()
        } else {
            y0 + frac * (y1 - y0)
        };
        let y = py(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            number(v)
        );
        let s = x0 + frac * (x1 - x0);
        let x = px(s);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 16.0,
            s.round()
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 8.0
    );
    let path = |values: &[f64]| -> String {
        pts.iter()
            .zip(values)
            .map(|((s, _), &v)| format!("{:.1},{:.1}", px(*s as f64), py(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let raw: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#9ecae1" stroke-width="1" points="{}"/>"##,
        path(&raw)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#08519c" stroke-width="2" points="{}"/>"##,
        path(&smooth(&raw))
    );
    svg.push_str("</svg>\n");
    svg
}

fn number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_curves_and_ticks() {
        let pts: Vec<(u64, f64)> = (1..=50).map(|s| (s, 1.0 / s as f64)).collect();
        let svg = loss_svg(&pts, "run <a>");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("run &lt;a&gt;"));
        assert!(svg.contains(">50<"), "last step labelled");
        assert!(loss_svg(&[], "x").contains("no steps yet"));
    }
}
