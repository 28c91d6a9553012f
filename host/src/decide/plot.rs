//! Charts of simulated replays as SVG: one replay (demand and supplied capacity in units over
//! time, with scaling actions marked; long runs reduced to the maximum of each pixel column), and
//! the frontier of several (average units against the time under-provisioned).

use super::simulate::Run;
use std::fmt::Write;

const W: f64 = 1200.0;
const H: f64 = 420.0;
const PAD: f64 = 50.0;

pub fn svg(run: &Run, title: &str) -> String {
    let n = run.t_ms.len();
    let mut out = open(title);
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

const FAMILY_COLOURS: [&str; 6] = ["#08519c", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// The policy family of a group named `family-setting` (the whole name without a `-`).
fn family(name: &str) -> &str {
    name.rsplit_once('-').map_or(name, |(f, _)| f)
}

/// `points`: (group, average units, fraction of time under-provisioned). Cheaper is left, safer
/// is lower; each family's settings are joined in order of cost, so a family below another at
/// the same cost buys more safety for the money.
pub fn frontier(points: &[(String, f64, f64)], title: &str) -> String {
    let mut out = open(title);
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let top = points.iter().map(|p| p.2 * 100.0).fold(0.0f64, f64::max).max(0.1) * 1.1;
    let (lo, hi) = (lo - 0.05, hi.max(lo + 0.1) + 0.05);
    let x = |u: f64| PAD + (u - lo) / (hi - lo) * (W - 2.0 * PAD);
    let y = |pct: f64| H - PAD - pct / top * (H - 2.0 * PAD);
    for i in 0..=4 {
        let (u, pct) = (lo + (hi - lo) * i as f64 / 4.0, top * i as f64 / 4.0);
        let _ = writeln!(
            out,
            r##"<line x1="{PAD}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="8" y="{:.1}">{pct:.1} %</text><text x="{:.1}" y="{}" text-anchor="middle">{u:.2}</text>"##,
            W - PAD,
            y(pct) + 4.0,
            x(u),
            H - PAD + 16.0,
            y = y(pct)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">average units (cost) → ; time under-provisioned ↑</text>"#,
        W - PAD,
        H - 10.0
    );
    let mut families: Vec<&str> = Vec::new();
    for (name, ..) in points {
        if !families.contains(&family(name)) {
            families.push(family(name));
        }
    }
    for (i, f) in families.iter().enumerate() {
        let colour = FAMILY_COLOURS[i % FAMILY_COLOURS.len()];
        let mut mine: Vec<&(String, f64, f64)> = points.iter().filter(|p| family(&p.0) == *f).collect();
        mine.sort_by(|a, b| a.1.total_cmp(&b.1));
        let line: String = mine.iter().map(|p| format!("{:.1},{:.1} ", x(p.1), y(p.2 * 100.0))).collect();
        let _ =
            writeln!(out, r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>"#);
        for p in &mine {
            let (px, py) = (x(p.1), y(p.2 * 100.0));
            let _ = writeln!(
                out,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{colour}"/><text x="{:.1}" y="{:.1}" fill="{colour}">{}</text>"#,
                px + 5.0,
                py - 5.0,
                escape(&p.0)
            );
        }
        let lx = PAD + 10.0 + i as f64 * 130.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="30" width="12" height="4" fill="{colour}"/><text x="{}" y="36">{}</text>"#,
            lx + 16.0,
            escape(f)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The start of a chart: the SVG element, a white background, the title.
fn open(title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{PAD}" y="20" font-size="14">{}</text>"#, escape(title));
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_joins_each_family_in_order_of_cost() {
        let points = [
            ("tt-80".to_string(), 1.82, 0.0155),
            ("q-95".to_string(), 1.82, 0.0092),
            ("tt-60".to_string(), 2.40, 0.0017),
            ("q-90".to_string(), 1.70, 0.016),
        ];
        let svg = frontier(&points, "nasa <&>");
        assert_eq!(svg.matches("<polyline").count(), 2, "one line per family");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("nasa &lt;&amp;&gt;") && svg.contains(">tt<") && svg.contains(">q<"));
        assert_eq!(family("tt-80"), "tt");
        assert_eq!(family("plain"), "plain");
    }
}
