//! A comparison report laid out for a page: the verdict with its error rate, one bar per
//! signal, the evidence probes side by side with their differences marked, the queries.

use serde::Serialize;

use super::diff::{side_by_side, Segment};
use super::plots::{signal_bars, Bar};
use crate::compare::{self, Report};

#[derive(Debug, Serialize)]
pub struct EvidenceView {
    pub probe_id: String,
    pub kind: String,
    pub signal: String,
    pub why: String,
    pub reference: Vec<Segment>,
    pub suspect: Vec<Segment>,
    pub same: bool,
}

#[derive(Debug, Serialize)]
pub struct ReportView {
    pub verdict: String,
    pub confidence: String,
    pub p_value: Option<String>,
    pub alpha: String,
    pub calibration: String,
    pub calibration_note: String,
    pub reasons: Vec<String>,
    /// Server-drawn SVG (escaped inside).
    pub bars_svg: String,
    pub signals: Vec<SignalRow>,
    pub findings: Vec<String>,
    pub evidence: Vec<EvidenceView>,
    pub suspect_asks: usize,
    pub suspect_answered: usize,
    pub suspect_requests: u64,
    pub reference_asks: usize,
    pub sequential: Option<String>,
    pub reference: String,
    pub suspect: String,
}

/// The table beside the bars, for those who read numbers rather than pictures.
#[derive(Debug, Serialize)]
pub struct SignalRow {
    pub name: String,
    pub score: String,
    pub interval: String,
    pub p_value: String,
    pub used: bool,
    pub detail: String,
}

fn num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => {
            if v != 0.0 && v.abs() < 10f64.powi(-(digits as i32)) {
                format!("{v:.2e}")
            } else {
                format!("{v:.digits$}")
            }
        }
        _ => "—".into(),
    }
}

pub fn report_view(report: &Report) -> ReportView {
    let bars: Vec<Bar> = report
        .signals
        .iter()
        .map(|s| Bar {
            label: s.name.clone(),
            score: s.score,
            interval: s.interval,
            control: s.control_mean,
            used_in_verdict: s.used_in_verdict,
            logistic: matches!(s.name.as_str(), compare::LIKELIHOOD | compare::CONTRAST),
        })
        .collect();
    let signals = report
        .signals
        .iter()
        .map(|s| SignalRow {
            name: s.name.clone(),
            score: num(s.score, 3),
            interval: s
                .interval
                .map(|(lo, hi)| format!("[{lo:.3}, {hi:.3}]"))
                .unwrap_or_else(|| "—".into()),
            p_value: num(s.p_value, 3),
            used: s.used_in_verdict,
            detail: s.detail.clone(),
        })
        .collect();
    let evidence = report
        .evidence
        .iter()
        .map(|e| {
            let (reference, suspect) = side_by_side(&e.reference_text, &e.suspect_text);
            EvidenceView {
                probe_id: e.probe_id.clone(),
                kind: serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                signal: e.signal.clone(),
                why: e.why.clone(),
                same: e.reference_text == e.suspect_text,
                reference,
                suspect,
            }
        })
        .collect();
    ReportView {
        verdict: report.verdict.as_str().to_string(),
        confidence: format!("{:.3}", report.confidence),
        p_value: report.p_value.map(|p| num(Some(p), 4)),
        alpha: format!("{}", report.alpha),
        calibration: format!("{:?}", report.calibration).to_lowercase(),
        calibration_note: report.calibration_note.clone(),
        reasons: report.reasons.clone(),
        bars_svg: signal_bars(&bars),
        signals,
        findings: report
            .findings
            .iter()
            .map(|f| format!("{}: {}", f.name, f.detail))
            .collect(),
        evidence,
        suspect_asks: report.queries.suspect,
        suspect_answered: report.queries.suspect_answered,
        suspect_requests: report.queries.suspect_requests,
        reference_asks: report.queries.reference,
        sequential: report.sequential.as_ref().map(|s| {
            format!(
                "{:?} after {} suspect queries (e-value {:.1} against unrelated, {:.1} against identical)",
                s.decision, s.queries, s.e_against_unrelated, s.e_against_identical
            )
        }),
        reference: report.reference.describe.clone(),
        suspect: report.suspect.describe.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::num;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(Some(0.98765), 3), "0.988");
        assert_eq!(num(Some(0.00001), 3), "1.00e-5");
        assert_eq!(num(None, 3), "—");
        assert_eq!(num(Some(f64::NAN), 3), "—");
    }
}
