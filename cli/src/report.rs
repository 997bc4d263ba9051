//! The HTML report of `berth simulate`: one self-contained file (inline CSS and SVG, no
//! scripts, nothing fetched), so it opens anywhere and can be attached to a ticket.
//!
//! Charts: pending and running pods over time; nodes over time, stacked by instance type;
//! $/h over time against the static group's; nodes launched by type, zone and capacity type.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::play::{Outcome, Sample, hms};

const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;
const RIGHT: f64 = 12.0;
/// Series colours (instance types beyond these share the last: "other").
const COLOURS: &[&str] = &[
    "#2f6fb2", "#e07b39", "#3a9a5b", "#b8433f", "#7d5ba6", "#8c6d31", "#5f9ea0", "#999999",
];

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" upper bound for an axis: 1, 2 or 5 × 10^k, at least `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// One chart's frame: axes, grid and labels, and the mapping from data to pixels.
struct Frame {
    t_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (t / self.t_max)
    }

    fn y(&self, v: f64) -> f64 {
        H - BOTTOM - (H - BOTTOM - TOP) * (v / self.y_max)
    }

    fn open(&self, svg: &mut String, title: &str, y_label: fn(f64) -> String) {
        let _ = write!(
            svg,
            r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
            escape(title)
        );
        // NB: five divisions of 1, 2 or 5 × 10^k are whole numbers from 5 up.
        for i in 0..=5 {
            let v = self.y_max * f64::from(i) / 5.0;
            let y = self.y(v);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                y_label(v)
            );
        }
        for i in 0..=6 {
            let t = self.t_max * f64::from(i) / 6.0;
            let x = self.x(t);
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{}" text-anchor="{}" class="tick">{}</text>"#,
                H - 8.0,
                if i == 6 { "end" } else { "middle" },
                &hms(std::time::Duration::from_secs_f64(t))[..5]
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="#888"/>"##,
            H - BOTTOM
        );
    }

    fn line(&self, svg: &mut String, points: &[(f64, f64)], colour: &str, dashed: bool) {
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", self.x(*t), self.y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{} points="{}"/>"#,
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            path.join(" ")
        );
    }
}

fn legend(items: &[(String, &str)]) -> String {
    let mut out = String::from(r#"<p class="legend">"#);
    for (name, colour) in items {
        let _ = write!(
            out,
            r#"<span><i style="background:{colour}"></i>{}</span>"#,
            escape(name)
        );
    }
    out.push_str("</p>");
    out
}

fn t_max(samples: &[Sample]) -> f64 {
    samples
        .last()
        .map(|s| s.t.as_secs_f64())
        .unwrap_or(1.0)
        .max(1.0)
}

fn count_label(v: f64) -> String {
    format!("{v:.0}")
}

fn dollar_label(v: f64) -> String {
    format!("${v:.2}")
}

fn pods_chart(samples: &[Sample]) -> String {
    let frame = Frame {
        t_max: t_max(samples),
        y_max: nice_max(
            samples
                .iter()
                .map(|s| s.pending.max(s.running) as f64)
                .fold(5.0, f64::max),
        ),
    };
    let mut svg = String::new();
    frame.open(&mut svg, "pods over time", count_label);
    let at = |f: fn(&Sample) -> usize| -> Vec<(f64, f64)> {
        samples
            .iter()
            .map(|s| (s.t.as_secs_f64(), f(s) as f64))
            .collect()
    };
    frame.line(&mut svg, &at(|s| s.pending), COLOURS[1], false);
    frame.line(&mut svg, &at(|s| s.running), COLOURS[0], false);
    svg.push_str("</svg>");
    svg + &legend(&[
        ("pending".to_owned(), COLOURS[1]),
        ("running".to_owned(), COLOURS[0]),
    ])
}

/// The instance types to draw apart (most node-time first); the rest are "other".
fn series_types(samples: &[Sample]) -> Vec<String> {
    let mut weight: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        for (t, n) in &s.nodes {
            *weight.entry(t).or_default() += n;
        }
    }
    let mut types: Vec<(&str, usize)> = weight.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    types
        .into_iter()
        .take(COLOURS.len() - 1)
        .map(|(t, _)| t.to_owned())
        .collect()
}

fn nodes_chart(samples: &[Sample]) -> String {
    let types = series_types(samples);
    let frame = Frame {
        t_max: t_max(samples),
        y_max: nice_max(
            samples
                .iter()
                .map(|s| s.node_count() as f64)
                .fold(5.0, f64::max),
        ),
    };
    let mut svg = String::new();
    frame.open(&mut svg, "nodes over time by instance type", count_label);
    // Stacked areas, bottom to top: each band between the running sum below and above it.
    let mut below = vec![0.0; samples.len()];
    let mut items = Vec::new();
    let mut bands: Vec<(String, &str)> = types
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), COLOURS[i]))
        .collect();
    let other = samples
        .iter()
        .any(|s| s.nodes.keys().any(|t| !types.contains(t)));
    if other {
        bands.push(("other".to_owned(), COLOURS[COLOURS.len() - 1]));
    }
    for (name, colour) in &bands {
        let above: Vec<f64> = samples
            .iter()
            .zip(&below)
            .map(|(s, b)| {
                let n: usize = if name == "other" && other {
                    s.nodes
                        .iter()
                        .filter(|(t, _)| !types.contains(t))
                        .map(|(_, n)| n)
                        .sum()
                } else {
                    s.nodes.get(name).copied().unwrap_or_default()
                };
                b + n as f64
            })
            .collect();
        let mut points: Vec<String> = samples
            .iter()
            .zip(&above)
            .map(|(s, v)| format!("{:.1},{:.1}", frame.x(s.t.as_secs_f64()), frame.y(*v)))
            .collect();
        points.extend(
            samples
                .iter()
                .zip(&below)
                .rev()
                .map(|(s, v)| format!("{:.1},{:.1}", frame.x(s.t.as_secs_f64()), frame.y(*v))),
        );
        let _ = write!(
            svg,
            r#"<polygon fill="{colour}" fill-opacity="0.8" stroke="none" points="{}"/>"#,
            points.join(" ")
        );
        items.push((name.clone(), *colour));
        below = above;
    }
    svg.push_str("</svg>");
    svg + &legend(&items)
}

fn cost_chart(outcome: &Outcome) -> String {
    let samples = &outcome.samples;
    let static_per_hour: f64 = outcome.static_groups.iter().map(|g| g.per_hour).sum();
    let frame = Frame {
        t_max: t_max(samples),
        y_max: nice_max(
            samples
                .iter()
                .map(|s| s.per_hour)
                .fold(static_per_hour, f64::max),
        ),
    };
    let mut svg = String::new();
    frame.open(&mut svg, "$ per hour over time", dollar_label);
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.t.as_secs_f64(), s.per_hour))
        .collect();
    frame.line(&mut svg, &points, COLOURS[0], false);
    let mut items = vec![("Berth".to_owned(), COLOURS[0])];
    if static_per_hour > 0.0 {
        frame.line(
            &mut svg,
            &[(0.0, static_per_hour), (frame.t_max, static_per_hour)],
            COLOURS[3],
            true,
        );
        items.push(("static group sized for the peak".to_owned(), COLOURS[3]));
    }
    svg.push_str("</svg>");
    svg + &legend(&items)
}

fn launched_chart(outcome: &Outcome) -> String {
    let rows: Vec<(String, usize)> = outcome
        .launched
        .iter()
        .map(|((t, z, c), n)| (format!("{t} {z} {c}"), *n))
        .collect();
    if rows.is_empty() {
        return "<p>No nodes were launched.</p>".to_owned();
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let row_h = 22.0;
    let label_w = 280.0;
    let height = row_h * rows.len() as f64 + 8.0;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" aria-label="nodes launched">"#
    );
    for (i, (label, n)) in rows.iter().enumerate() {
        let y = 4.0 + row_h * i as f64;
        let w = (W - label_w - 60.0) * (*n as f64 / max);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text><rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" class="tick">{n}</text>"#,
            label_w - 8.0,
            y + 15.0,
            escape(label),
            row_h - 6.0,
            COLOURS[0],
            label_w + w + 6.0,
            y + 15.0,
        );
    }
    svg + "</svg>"
}

/// The whole report for `outcome`; `source` names what was simulated (the files).
pub fn html(outcome: &Outcome, source: &str) -> String {
    let mut rows = vec![
        ("simulated".to_owned(), hms(outcome.simulated)),
        ("arrivals".to_owned(), outcome.arrivals.to_string()),
        (
            "pods".to_owned(),
            format!(
                "{} created, {} ran, {} finished, {} never started",
                outcome.pods_created,
                outcome.pods_started,
                outcome.pods_succeeded,
                outcome.pods_never_started
            ),
        ),
        (
            "wait from pending to running".to_owned(),
            format!(
                "p50 {:.0} s, p95 {:.0} s, max {:.0} s",
                outcome.wait(0.5),
                outcome.wait(0.95),
                outcome.waits.last().copied().unwrap_or_default()
            ),
        ),
        (
            "nodes launched".to_owned(),
            outcome.launched.values().sum::<usize>().to_string(),
        ),
        (
            "nodes removed (why)".to_owned(),
            if outcome.nodes_removed.is_empty() {
                "none".to_owned()
            } else {
                outcome
                    .nodes_removed
                    .iter()
                    .map(|(why, n)| format!("{n} {why}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "pods lost (killed before they finished)".to_owned(),
            outcome.pods_lost.to_string(),
        ),
        ("Berth's cost".to_owned(), format!("${:.2}", outcome.cost)),
    ];
    for g in &outcome.static_groups {
        rows.push((
            format!("static group for {}", g.pool),
            format!(
                "{} at ${:.4}/h for the whole window",
                g.describe(),
                g.per_hour
            ),
        ));
    }
    rows.push((
        "static groups' cost".to_owned(),
        format!("${:.2}", outcome.static_cost),
    ));
    if let Some(ratio) = outcome.ratio() {
        rows.push(("Berth / static".to_owned(), format!("{ratio:.2}")));
    }
    let mut table = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(
            table,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&k),
            escape(&v)
        );
    }
    table.push_str("</table>");
    let interrupted = if outcome.interrupted {
        "<p class=\"warn\">Interrupted: the report covers what ran so far.</p>"
    } else {
        ""
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Berth simulation: {source}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 800px; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.8em; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 3px 12px 3px 0; }}
th {{ font-weight: 600; color: #555; }}
.tick {{ font-size: 11px; fill: #555; }}
.legend span {{ margin-right: 1.2em; }} .legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
.warn {{ color: #b8433f; }} .note {{ color: #666; }}
</style></head><body>
<h1>Berth simulation</h1>
<p>{source}</p>
{interrupted}
{table}
<h2>Pods</h2>
{pods}
<h2>Nodes by instance type</h2>
{nodes}
<h2>Cost per hour</h2>
{cost}
<h2>Nodes launched (type, zone, capacity type)</h2>
{launched}
<p class="note">Each node is paid for from its launch until it is removed (Expired, Drifted, Empty, Underutilized: Berth's disruption; other: e.g. a node that never registered) or the window ends. Prices are the sim cloud's catalog. Time is compressed: service latencies of milliseconds count as seconds of simulated time.</p>
</body></html>
"#,
        source = escape(source),
        pods = pods_chart(&outcome.samples),
        nodes = nodes_chart(&outcome.samples),
        cost = cost_chart(outcome),
        launched = launched_chart(outcome),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(t: u64, pending: usize, running: usize, nodes: &[(&str, usize)]) -> Sample {
        Sample {
            t: Duration::from_secs(t),
            pending,
            running,
            nodes: nodes.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            per_hour: nodes.iter().map(|(_, n)| *n as f64 * 0.1).sum(),
        }
    }

    #[test]
    fn axes_round_up_to_nice_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(0.33), 0.5);
        assert_eq!(nice_max(100.0), 100.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_report_holds_every_chart_and_figure() {
        let outcome = Outcome {
            simulated: Duration::from_secs(3600),
            arrivals: 3,
            pods_created: 10,
            pods_started: 10,
            waits: vec![40.0, 50.0, 60.0],
            launched: [(("m5.large".into(), "us-east-1a".into(), "spot".into()), 2)].into(),
            cost: 0.5,
            static_cost: 1.0,
            static_groups: vec![crate::play::StaticGroup {
                pool: "default".into(),
                nodes: [("m5.large".to_owned(), 2)].into(),
                per_hour: 1.0,
            }],
            samples: vec![
                sample(0, 10, 0, &[]),
                sample(1800, 0, 10, &[("m5.large", 2), ("c5.large", 1)]),
                sample(3600, 0, 0, &[("m5.large", 2)]),
            ],
            ..Outcome::default()
        };
        let html = html(&outcome, "pools.yaml <&>");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), 4, "four charts");
        assert!(html.contains("pools.yaml &lt;&amp;&gt;"));
        assert!(html.contains("<td>0.50</td>"), "the ratio");
        assert!(html.contains("m5.large us-east-1a spot"));
        // Stacked nodes: two bands, the larger type first in the legend.
        let m5 = html.find("</i>m5.large").unwrap();
        let c5 = html.find("</i>c5.large").unwrap();
        assert!(m5 < c5);
        assert!(html.contains("2 × m5.large at $1.0000/h"));
        // The static group's $/h is drawn as a dashed line.
        assert!(html.contains("stroke-dasharray"));
        assert!(!html.contains("<script"), "self-contained, no scripts");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing fetched"
        );
    }
}
