//! Plots drawn server-side as SVG: pure functions from numbers to markup, no I/O.
//!
//! Hand-written rather than `plotters`: plotters lays text out with a font backend (system
//! fonts or a bundled TTF), which an offline service cannot count on, and these three
//! plots are a few rectangles, lines and labels. Every plot is readable without colour:
//! values are printed, verdicts are spelled out or drawn as distinct marker shapes.

use std::fmt::Write;

/// Escapes text for SVG/XML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Cuts `text` to at most `max` characters, marking the cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

fn clamp01(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// One signal of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    /// Similarity in [0, 1] (else see `logistic`); `None` when the signal could not be
    /// computed.
    pub score: Option<f64>,
    pub interval: Option<(f64, f64)>,
    /// Mean score of the controls (unrelated models), drawn as a tick.
    pub control: Option<f64>,
    pub used_in_verdict: bool,
    /// The score lies on an open scale (a log-ratio, a z-like score) rather than in
    /// [0, 1]: it is drawn at 1/(1+e^-score), so 0 sits mid-axis and sign shows, where
    /// clamping would flatten every negative score to nothing.
    pub logistic: bool,
}

/// Horizontal bars of signal scores on a 0–1 axis, with bootstrap intervals as whiskers and
/// the controls' mean as a diamond.
pub fn signal_bars(bars: &[Bar]) -> String {
    const LEFT: f64 = 110.0;
    const PLOT: f64 = 360.0;
    const ROW: f64 = 30.0;
    let width = LEFT + PLOT + 190.0;
    let height = 30.0 + ROW * bars.len() as f64 + 24.0;
    let x = |v: f64| LEFT + PLOT * clamp01(v);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><title>Signal scores with 95% intervals</title>"#
    );
    // Axis ticks.
    for t in 0..=4 {
        let v = t as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{0}" y1="22" x2="{0}" y2="{1}" stroke="#ccc"/><text x="{0}" y="16" text-anchor="middle" fill="#333">{2}</text>"##,
            x(v),
            height - 24.0,
            v
        );
    }
    for (i, bar) in bars.iter().enumerate() {
        let x = |v: f64| {
            if bar.logistic {
                x(1.0 / (1.0 + (-v).exp()))
            } else {
                x(v)
            }
        };
        let top = 30.0 + ROW * i as f64;
        let mid = top + 10.0;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#111">{}</text>"##,
            LEFT - 8.0,
            mid + 4.0,
            esc(&clip(&bar.label, 16))
        );
        let Some(score) = bar.score else {
            let _ = write!(
                s,
                r##"<text x="{LEFT}" y="{}" fill="#555" font-style="italic">not computed</text>"##,
                mid + 4.0
            );
            continue;
        };
        // Signals left out of the verdict are drawn hollow.
        let (fill, stroke) = if bar.used_in_verdict {
            ("#3b6ea5", "#1d3d63")
        } else {
            ("#fff", "#3b6ea5")
        };
        let _ = write!(
            s,
            r#"<rect class="bar" data-signal="{}" x="{LEFT}" y="{top}" width="{:.1}" height="20" fill="{fill}" stroke="{stroke}"/>"#,
            esc(&bar.label),
            (x(score) - LEFT).max(0.5)
        );
        let mut label = format!("{score:.3}");
        if let Some((lo, hi)) = bar.interval {
            let _ = write!(
                s,
                r##"<line x1="{0:.1}" y1="{1}" x2="{2:.1}" y2="{1}" stroke="#000" stroke-width="1.5"/><line x1="{0:.1}" y1="{3}" x2="{0:.1}" y2="{4}" stroke="#000"/><line x1="{2:.1}" y1="{3}" x2="{2:.1}" y2="{4}" stroke="#000"/>"##,
                x(lo),
                mid,
                x(hi),
                mid - 6.0,
                mid + 6.0
            );
            let _ = write!(label, " [{lo:.2}, {hi:.2}]");
        }
        if let Some(c) = bar.control {
            let cx = x(c);
            let _ = write!(
                s,
                r##"<path d="M{cx:.1} {0} l5 5 l-5 5 l-5 -5 z" fill="#e8a33d" stroke="#000"><title>controls' mean {c:.3}</title></path>"##,
                mid - 5.0
            );
        }
        if bar.logistic {
            label.push_str(" ‡");
        }
        if !bar.used_in_verdict {
            label.push_str(" (not in verdict)");
        }
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" fill="#111">{}</text>"##,
            LEFT + PLOT + 8.0,
            mid + 4.0,
            esc(&label)
        );
    }
    let open_scale = if bars.iter().any(|b| b.logistic) {
        "; ‡ open scale, drawn at 1/(1+e^-score)"
    } else {
        ""
    };
    let _ = write!(
        s,
        r##"<path d="M{0} {1} l5 5 l-5 5 l-5 -5 z" fill="#e8a33d" stroke="#000"/><text x="{2}" y="{3}" fill="#333">controls' mean; whiskers: 95% bootstrap interval; hollow: not used in the verdict{open_scale}</text></svg>"##,
        LEFT,
        height - 16.0,
        LEFT + 10.0,
        height - 7.0
    );
    s
}

/// One cell of the similarity map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeatCell {
    pub score: Option<f64>,
    pub verdict: Option<String>,
    /// Where a click on the cell leads (the comparison).
    pub href: Option<String>,
}

/// Short verdict names printed in cells, so colour is never the only cue.
fn verdict_abbrev(verdict: &str) -> &'static str {
    match verdict {
        "identical" => "IDENT",
        "derived" => "DERIV",
        "distilled" => "DISTIL",
        "unrelated" => "UNREL",
        _ => "?",
    }
}

/// Light to dark blue as similarity grows.
fn heat_colour(score: f64) -> String {
    let t = clamp01(score);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(247.0, 8.0),
        lerp(251.0, 48.0),
        lerp(255.0, 107.0)
    )
}

/// A grid of fingerprints (rows) against references (columns), each cell shaded by the
/// logit similarity and labelled with its value and verdict.
pub fn heatmap(rows: &[String], cols: &[String], cells: &[Vec<HeatCell>]) -> String {
    const LEFT: f64 = 300.0;
    const TOP: f64 = 60.0;
    const CW: f64 = 120.0;
    const CH: f64 = 34.0;
    // Wide enough for the colour legend even with one reference.
    let width = (LEFT + CW * cols.len().max(1) as f64).max(LEFT + 24.0 * 11.0) + 20.0;
    let height = TOP + CH * rows.len() as f64 + 70.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot heatmap" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><title>Similarity of stored fingerprints to each reference</title>"#
    );
    for (j, col) in cols.iter().enumerate() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" font-weight="bold" fill="#111">{}</text>"##,
            LEFT + CW * j as f64 + CW / 2.0,
            TOP - 12.0,
            esc(&clip(col, 18))
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let top = TOP + CH * i as f64;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#111">{}</text>"##,
            LEFT - 8.0,
            top + CH / 2.0 + 4.0,
            esc(&clip(row, 44))
        );
        for (j, cell) in cells
            .get(i)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let left = LEFT + CW * j as f64;
            let (fill, text, ink) = match cell.score {
                Some(v) => (
                    heat_colour(v),
                    format!(
                        "{v:.2} {}",
                        cell.verdict.as_deref().map(verdict_abbrev).unwrap_or("")
                    ),
                    if v > 0.55 { "#fff" } else { "#000" },
                ),
                None if cell.verdict.is_some() => (
                    "#eee".to_string(),
                    format!(
                        "– {}",
                        cell.verdict.as_deref().map(verdict_abbrev).unwrap_or("")
                    ),
                    "#000",
                ),
                None => ("#fff".to_string(), String::new(), "#000"),
            };
            let title = match (&cell.score, &cell.verdict) {
                (Some(v), Some(verdict)) => format!("{row}: logit similarity {v:.3}, {verdict}"),
                (Some(v), None) => format!("{row}: logit similarity {v:.3}"),
                (None, Some(verdict)) => format!("{row}: {verdict} (no logit score)"),
                (None, None) => format!("{row}: not compared"),
            };
            let rect = format!(
                r##"<rect class="cell" x="{left}" y="{top}" width="{CW}" height="{CH}" fill="{fill}" stroke="#999"><title>{}</title></rect><text x="{}" y="{}" text-anchor="middle" fill="{ink}">{}</text>"##,
                esc(&title),
                left + CW / 2.0,
                top + CH / 2.0 + 4.0,
                esc(text.trim())
            );
            match &cell.href {
                Some(href) => {
                    let _ = write!(s, r#"<a href="{}">{rect}</a>"#, esc(href));
                }
                None => s.push_str(&rect),
            }
        }
    }
    // Legend: the colour scale with its values.
    let ly = TOP + CH * rows.len() as f64 + 24.0;
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        let _ = write!(
            s,
            r##"<rect x="{}" y="{ly}" width="24" height="14" fill="{}" stroke="#999"/>"##,
            LEFT + 24.0 * k as f64,
            heat_colour(v)
        );
        if k % 5 == 0 {
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#333">{v:.1}</text>"##,
                LEFT + 24.0 * k as f64 + 12.0,
                ly + 28.0
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="end" fill="#333">logit similarity (1 − JSD/ln 2)</text></svg>"##,
        LEFT - 8.0,
        ly + 11.0
    );
    s
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    /// Shown under the x axis (a date).
    pub label: String,
    pub score: Option<f64>,
    pub verdict: Option<String>,
}

/// A marker whose shape tells the verdict.
fn marker(verdict: Option<&str>, x: f64, y: f64) -> String {
    match verdict {
        Some("identical") => {
            format!(r##"<circle cx="{x:.1}" cy="{y:.1}" r="5" fill="#1d3d63"/>"##)
        }
        Some("derived") => format!(
            r##"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="#3b6ea5"/>"##,
            x - 5.0,
            y - 5.0
        ),
        Some("distilled") => format!(
            r##"<path d="M{x:.1} {:.1} l6 10 h-12 z" fill="#6a51a3"/>"##,
            y - 6.0
        ),
        Some("unrelated") => format!(
            r##"<path d="M{:.1} {:.1} l10 10 M{:.1} {:.1} l-10 10" stroke="#b2182b" stroke-width="2.5"/>"##,
            x - 5.0,
            y - 5.0,
            x + 5.0,
            y - 5.0
        ),
        _ => format!(
            r##"<path d="M{x:.1} {:.1} l6 6 l-6 6 l-6 -6 z" fill="#fff" stroke="#000"/>"##,
            y - 6.0
        ),
    }
}

/// The similarity of a schedule's runs over time: a line through the logit scores, each
/// run's verdict as a marker shape, and a labelled dashed rule wherever the verdict changed.
pub fn history(points: &[HistoryPoint]) -> String {
    const LEFT: f64 = 50.0;
    const TOP: f64 = 30.0;
    const PW: f64 = 560.0;
    const PH: f64 = 200.0;
    let width = LEFT + PW + 30.0;
    let height = TOP + PH + 90.0;
    let n = points.len();
    let x = |i: usize| {
        if n <= 1 {
            LEFT + PW / 2.0
        } else {
            LEFT + PW * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| TOP + PH * (1.0 - clamp01(v));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot history" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><title>Similarity to the reference over the schedule's runs</title>"#
    );
    for t in 0..=4 {
        let v = t as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end" fill="#333">{v:.2}</text>"##,
            y(v),
            LEFT + PW,
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    if n == 0 {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">no runs yet</text>"##,
            LEFT + PW / 2.0,
            TOP + PH / 2.0
        );
    }
    // The line joins consecutive runs that have a score.
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.score.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
        .collect();
    if path.len() > 1 {
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#3b6ea5" stroke-width="2"/>"##,
            path.join(" ")
        );
    }
    let mut previous: Option<&str> = None;
    for (i, p) in points.iter().enumerate() {
        let verdict = p.verdict.as_deref();
        if let (Some(prev), Some(now)) = (previous, verdict) {
            if prev != now {
                let _ = write!(
                    s,
                    r##"<line class="verdict-change" x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#b2182b" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2}" text-anchor="middle" fill="#b2182b">{3}</text>"##,
                    x(i),
                    TOP + PH,
                    TOP - 8.0,
                    esc(&format!("{prev} → {now}"))
                );
            }
        }
        if verdict.is_some() {
            previous = verdict;
        }
        let py = p.score.map(y).unwrap_or(TOP + PH);
        s.push_str(&marker(verdict, x(i), py));
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="end" transform="rotate(-35 {:.1} {})" fill="#333">{}</text>"##,
            x(i),
            TOP + PH + 16.0,
            x(i),
            TOP + PH + 16.0,
            esc(&p.label)
        );
    }
    // Legend of marker shapes.
    let ly = height - 12.0;
    for (k, v) in [
        "identical",
        "derived",
        "distilled",
        "unrelated",
        "inconclusive",
    ]
    .iter()
    .enumerate()
    {
        let lx = LEFT + 115.0 * k as f64;
        s.push_str(&marker(Some(v), lx, ly - 4.0));
        let _ = write!(
            s,
            r##"<text x="{}" y="{ly}" fill="#333">{v}</text>"##,
            lx + 10.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let svg = signal_bars(&[Bar {
            label: "<script>".into(),
            score: Some(0.5),
            interval: Some((0.4, 0.6)),
            control: Some(0.2),
            used_in_verdict: true,
            logistic: false,
        }]);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("0.500 [0.40, 0.60]"));
    }

    #[test]
    fn bars_scale_with_the_score_and_missing_scores_say_so() {
        let bar = |score| Bar {
            label: "logits".into(),
            score,
            interval: None,
            control: None,
            used_in_verdict: true,
            logistic: false,
        };
        let full = signal_bars(&[bar(Some(1.0))]);
        assert!(full.contains(r#"width="360.0""#), "{full}");
        let half = signal_bars(&[bar(Some(0.5))]);
        assert!(half.contains(r#"width="180.0""#), "{half}");
        assert!(signal_bars(&[bar(None)]).contains("not computed"));
        // An open-scale score: 0 mid-axis, a negative one short of it but still drawn.
        let open = |score| Bar {
            logistic: true,
            ..bar(Some(score))
        };
        let zero = signal_bars(&[open(0.0)]);
        assert!(zero.contains(r#"width="180.0""#), "{zero}");
        assert!(zero.contains("open scale"), "{zero}");
        let below = signal_bars(&[open(-1.0)]);
        // 360 / (1 + e) = 96.8
        assert!(below.contains(r#"width="96.8""#), "{below}");
        assert!(!full.contains("open scale"));
    }

    #[test]
    fn heatmap_cells_print_value_and_verdict_and_link() {
        let svg = heatmap(
            &["suspect A".into()],
            &["smollm2".into(), "gemma".into()],
            &[vec![
                HeatCell {
                    score: Some(0.97),
                    verdict: Some("identical".into()),
                    href: Some("/ui/comparisons/1".into()),
                },
                HeatCell::default(),
            ]],
        );
        assert!(svg.contains("0.97 IDENT"));
        assert!(svg.contains(r#"<a href="/ui/comparisons/1">"#));
        assert!(svg.contains("not compared"));
        assert_eq!(heat_colour(0.0), "#f7fbff");
        assert_eq!(heat_colour(1.0), "#08306b");
    }

    #[test]
    fn history_marks_each_verdict_change_once() {
        let pt = |v: &str, s: f64| HistoryPoint {
            label: "d".into(),
            score: Some(s),
            verdict: Some(v.into()),
        };
        let svg = history(&[
            pt("identical", 0.99),
            pt("identical", 0.98),
            pt("unrelated", 0.5),
            pt("unrelated", 0.52),
        ]);
        assert_eq!(svg.matches(r#"class="verdict-change""#).count(), 1);
        assert!(svg.contains("identical → unrelated"));
        assert!(history(&[]).contains("no runs yet"));
    }
}
