//! The chart of a simulated replay as an SVG: demand and supplied capacity (in units) over time,
//! with scaling actions marked. Long runs are reduced to the maximum of each pixel column.

use super::simulate::Run;
use std::fmt::Write;

const W: f64 = 1200.0;
const H: f64 = 420.0;
const PAD: f64 = 50.0;

pub fn svg(run: &Run, title: &str) -> String {
    let n = run.t_ms.len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{PAD}" y="20" font-size="14">{}</text>"#, escape(title));
    if n < 2 {
        out.push_str("</svg>\n");
        return out;
    }
    let (t0, t1) = (run.t_ms[0] as f64, run.t_ms[n - 1] as f64);
    let top = run.demand_units.iter().chain(&run.provisioned_units).copied().max().unwrap_or(1).max(1) as f64;
    let x = |t: f64| PAD + (t - t0) / (t1 - t0).max(1.0) * (W - 2.0 * PAD);
    let y = |u: f64| H - PAD - u / top * (H - 2.0 * PAD);
    // Axes and a few gridlines.
    for i in 0..=4 {
        let u = top * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{PAD}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="8" y="{:.1}">{u:.0}</text>"##,
            W - PAD,
            y(u) + 4.0,
            y = y(u)
        );
    }
    let hours = (t1 - t0) / 3_600_000.0;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{hours:.1} h; units (demand and supply)</text>"#,
        W - PAD,
        H - 15.0
    );
    let columns = (W - 2.0 * PAD) as usize;
    let line = |values: &[u32], colour: &str, dash: &str| -> String {
        let mut points = String::new();
        let per = (n as f64 / columns as f64).max(1.0);
        let mut i = 0.0;
        while (i as usize) < n {
            let (a, b) = (i as usize, ((i + per) as usize).min(n));
            let max = values[a..b.max(a + 1)].iter().copied().max().unwrap_or(0) as f64;
            let _ = write!(points, "{:.1},{:.1} ", x(run.t_ms[a] as f64), y(max));
            i += per;
        }
        format!(r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" {dash} points="{points}"/>"#)
    };
    let _ = writeln!(out, "{}", line(&run.demand_units, "#888", ""));
    let _ = writeln!(out, "{}", line(&run.provisioned_units, "#9ecae1", r#"stroke-dasharray="4 3""#));
    let _ = writeln!(out, "{}", line(&run.ready_units, "#08519c", ""));
    for (t, from, to) in &run.actions {
        let colour = if to > from { "#2ca02c" } else { "#d62728" };
        let _ = writeln!(
            out,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="{colour}"/>"#,
            x(*t as f64),
            H - PAD + 4.0,
            H - PAD + 12.0
        );
    }
    let legend = [
        ("#888", "demand"),
        ("#08519c", "ready supply"),
        ("#9ecae1", "provisioned"),
        ("#2ca02c", "scale up"),
        ("#d62728", "scale down"),
    ];
    for (i, (colour, label)) in legend.iter().enumerate() {
        let lx = PAD + 10.0 + i as f64 * 130.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="30" width="12" height="4" fill="{colour}"/><text x="{}" y="36">{label}</text>"#,
            lx + 16.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
