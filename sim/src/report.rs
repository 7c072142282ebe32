//! A self-contained HTML report of one run: a timeline with a lane per node
//! (up, down, cut off, clock jumps, restores), each node's divergence over time,
//! the counters, and the invariant violations.

use crate::world::Mark;
use crate::RunResult;
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as an HTML page (inline SVG, no external resources).
pub fn html(r: &RunResult) -> String {
    let n = r.opts.nodes;
    let end = r.end_ms.max(1) as f64;
    let (left, width, lane, top) = (70.0, 1000.0, 46.0, 30.0);
    let x = |t: u64| left + width * t as f64 / end;
    let mut svg = String::new();
    let height = top + lane * n as f64 + 40.0;
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"##,
        left + width + 20.0
    );
    // Per node: up/down intervals, and intervals with a cut link.
    let mut down_since: Vec<Option<u64>> = vec![None; n];
    let mut cut_count = vec![0i32; n];
    let mut cut_since: Vec<Option<u64>> = vec![None; n];
    let mut bars = String::new();
    let mut ticks = String::new();
    let y = |i: usize| top + lane * i as f64;
    let bar = |out: &mut String,
               i: usize,
               from: u64,
               to: u64,
               color: &str,
               dy: f64,
               h: f64,
               title: &str| {
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h}" fill="{color}"><title>{title}</title></rect>"##,
            x(from),
            y(i) + dy,
            (x(to) - x(from)).max(1.0)
        );
    };
    for (t, m) in &r.marks {
        match *m {
            Mark::Crash(i) => {
                down_since[i] = Some(*t);
                let _ = write!(
                    ticks,
                    r##"<text x="{:.1}" y="{:.1}" fill="#c00" text-anchor="middle">✕<title>crash n{i} at {t} ms</title></text>"##,
                    x(*t),
                    y(i) + 12.0
                );
            }
            Mark::Up(i, backup) => {
                if let Some(from) = down_since[i].take() {
                    bar(
                        &mut bars,
                        i,
                        from,
                        *t,
                        "#bbb",
                        16.0,
                        14.0,
                        &format!("n{i} down {from}–{t} ms"),
                    );
                }
                if let Some(b) = backup {
                    let _ = write!(
                        ticks,
                        r##"<text x="{:.1}" y="{:.1}" fill="#808" text-anchor="middle">⟲<title>n{i} restored at {t} ms from the backup of {b} ms</title></text>"##,
                        x(*t),
                        y(i) + 12.0
                    );
                }
            }
            Mark::Cut(a, b, _) | Mark::Heal(a, b, _) => {
                let delta = if matches!(m, Mark::Cut(..)) { 1 } else { -1 };
                for i in [a, b] {
                    let before = cut_count[i];
                    cut_count[i] = (cut_count[i] + delta).max(0);
                    if before == 0 && cut_count[i] > 0 {
                        cut_since[i] = Some(*t);
                    } else if before > 0 && cut_count[i] == 0 {
                        if let Some(from) = cut_since[i].take() {
                            bar(
                                &mut bars,
                                i,
                                from,
                                *t,
                                "#f4a",
                                32.0,
                                6.0,
                                &format!("n{i} has a cut link {from}–{t} ms"),
                            );
                        }
                    }
                }
            }
            Mark::Jump(i, by) => {
                let _ = write!(
                    ticks,
                    r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#e80" stroke-width="2"><title>n{i} clock {by:+} ms at {t} ms</title></line>"##,
                    x(*t),
                    y(i) + 2.0,
                    y(i) + 40.0
                );
            }
            Mark::Liveness | Mark::Converged => {
                let (color, label) = if *m == Mark::Liveness {
                    ("#06c", "liveness")
                } else {
                    ("#090", "converged")
                };
                let _ = write!(
                    ticks,
                    r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2:.1}" stroke="{color}" stroke-dasharray="4 3"/><text x="{0:.1}" y="{3}" fill="{color}">{label}</text>"##,
                    x(*t),
                    top - 8.0,
                    top + lane * n as f64,
                    top - 12.0
                );
            }
        }
    }
    for i in 0..n {
        if let Some(from) = down_since[i] {
            bar(
                &mut bars,
                i,
                from,
                r.end_ms,
                "#bbb",
                16.0,
                14.0,
                &format!("n{i} down from {from} ms"),
            );
        }
        if let Some(from) = cut_since[i] {
            bar(
                &mut bars,
                i,
                from,
                r.end_ms,
                "#f4a",
                32.0,
                6.0,
                &format!("n{i} has a cut link from {from} ms"),
            );
        }
    }
    for i in 0..n {
        let _ = write!(
            svg,
            r##"<rect x="{left}" y="{:.1}" width="{width}" height="{}" fill="#eef7ee"/><text x="8" y="{:.1}">n{i}</text>"##,
            y(i) + 16.0,
            14.0,
            y(i) + 27.0
        );
    }
    svg.push_str(&bars);
    // Divergence: variables behind the cluster's join, per node.
    let max_behind = r
        .samples
        .iter()
        .flat_map(|s| s.behind.iter().flatten())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    for i in 0..n {
        let pts: Vec<String> = r
            .samples
            .iter()
            .filter_map(|s| {
                s.behind[i].map(|b| {
                    format!(
                        "{:.1},{:.1}",
                        x(s.at),
                        y(i) + 30.0 - 14.0 * b as f64 / max_behind
                    )
                })
            })
            .collect();
        if !pts.is_empty() {
            let _ = write!(
                svg,
                r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="1"><title>n{i}: variables behind the cluster (max {max_behind})</title></polyline>"##,
                pts.join(" ")
            );
        }
    }
    svg.push_str(&ticks);
    let axis_y = top + lane * n as f64 + 14.0;
    for k in 0..=5 {
        let t = (end * k as f64 / 5.0) as u64;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{axis_y}" text-anchor="middle">{}</text>"##,
            x(t),
            human_ms(t)
        );
    }
    svg.push_str("</svg>");

    let mut page = String::new();
    let verdict = if r.passed() { "passed" } else { "FAILED" };
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>atoll-sim seed {seed}</title>\
         <style>body{{font-family:sans-serif;margin:1.5em}}td{{padding:2px 10px}}pre{{background:#f4f4f4;padding:8px;white-space:pre-wrap}}</style></head><body>\
         <h1>atoll-sim seed {seed}: {verdict}</h1>\
         <p>Lanes: green = up, grey = down, pink = some link of the node is cut, ✕ crash, ⟲ restore from backup, orange = clock jump. \
         The black line is how many variables the node lacks against the join of all nodes (sampled every {every} ms).</p>{svg}",
        seed = r.seed,
        every = r.opts.sample_every_ms,
    );
    page.push_str("<h2>Invariant violations</h2>");
    if r.failures.is_empty() {
        page.push_str("<p>None.</p>");
    } else {
        page.push_str("<pre>");
        for f in &r.failures {
            page.push_str(&esc(f));
            page.push('\n');
        }
        page.push_str("</pre>");
    }
    let _ = write!(
        page,
        "<h2>Run</h2><pre>{}</pre><h2>Options</h2><pre>{}</pre></body></html>",
        esc(&format!(
            "trace hash {:016x} over {} events\nconverged at {:?} ms\n{:#?}",
            r.trace_hash, r.trace_events, r.converged_at, r.stats
        )),
        esc(&format!("{:#?}", r.opts))
    );
    page
}

/// `1234` as `1.2s`, `90000000` as `1.0d`, and so on.
pub fn human_ms(t: u64) -> String {
    match t {
        t if t < 1_000 => format!("{t}ms"),
        t if t < 120_000 => format!("{:.1}s", t as f64 / 1e3),
        t if t < 7_200_000 => format!("{:.1}min", t as f64 / 6e4),
        t if t < 172_800_000 => format!("{:.1}h", t as f64 / 3.6e6),
        t => format!("{:.1}d", t as f64 / 8.64e7),
    }
}
