//! The comparison report: verdict, confidence, one score per signal with its interval
//! and p-value, the probes that weighed most side by side, and what it cost. Serialised
//! as JSON for the service, and as Markdown for people.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::calibration::{Level, NullMethod};
use super::sequential::SequentialOutcome;
use super::shift::ShiftTest;
use super::verdict::{IdenticalBand, Verdict};
use crate::fingerprint::ProbeSetRef;
use crate::probes::ProbeKind;

/// One signal's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalScore {
    pub name: String,
    /// Similarity to the reference (higher = closer); `None` when it could not be computed.
    pub score: Option<f64>,
    /// Bootstrap interval over probes.
    pub interval: Option<(f64, f64)>,
    /// The p-value decisions use: how likely a control would be at least this similar.
    pub p_value: Option<f64>,
    /// Add-one smoothed share of controls at least as similar.
    pub p_empirical: Option<f64>,
    pub method: Option<NullMethod>,
    pub control_mean: Option<f64>,
    /// Centre and spread of the null the p-value came from, when it was not the empirical
    /// share (see `calibration::NullTest`).
    #[serde(default)]
    pub null_centre: Option<f64>,
    #[serde(default)]
    pub null_spread: Option<f64>,
    /// Probes (or prompts) compared.
    pub n: usize,
    pub used_in_verdict: bool,
    pub detail: String,
    /// Sub-measures (top-1 agreement, Spearman, permutation p, ...).
    pub extra: BTreeMap<String, f64>,
}

/// A finding reported beside the verdict (not a similarity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub name: String,
    pub value: f64,
    pub detail: String,
    pub probes: Vec<String>,
}

/// One probe shown side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceItem {
    pub probe_id: String,
    pub kind: ProbeKind,
    pub signal: String,
    pub reference_text: String,
    pub suspect_text: String,
    /// How much closer than controls this probe is (positive: closer).
    pub weight: f64,
    pub why: String,
}

/// What the comparison cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queries {
    /// Suspect asks recorded in its fingerprint.
    pub suspect: usize,
    pub suspect_answered: usize,
    /// Requests including retries.
    pub suspect_requests: u64,
    pub reference: usize,
    /// Asks a sequential scan needed to decide (replayed from the fingerprint).
    pub sequential: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub describe: String,
    pub probe_set: ProbeSetRef,
    pub created_at: String,
    /// What the model's endpoint offered (absent in reports stored before it was kept).
    #[serde(default)]
    pub capabilities: Option<crate::endpoint::Capabilities>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub confidence: f64,
    /// The deciding p-value.
    pub p_value: Option<f64>,
    pub alpha: f64,
    pub reasons: Vec<String>,
    pub signals: Vec<SignalScore>,
    pub findings: Vec<Finding>,
    pub evidence: Vec<EvidenceItem>,
    pub queries: Queries,
    /// `none`, `few` or `ok`: how much the controls can tell (see `compare::calibration`).
    pub calibration: Level,
    pub controls: usize,
    /// How many independent models the controls are (`compare::lineage`); the p-values
    /// count every control.
    #[serde(default)]
    pub control_lineages: usize,
    pub known_same: usize,
    pub calibration_note: String,
    /// Where the controls came from (built-in, a directory, the store), when known.
    #[serde(default)]
    pub controls_origin: Option<String>,
    /// What the reference as given could not provide (a reference behind an endpoint has
    /// no weights for quantized forms or the read-back).
    #[serde(default)]
    pub reference_limits: Vec<String>,
    pub identical_band: IdenticalBand,
    /// Whether log-probability differences repeat token by token across probes (changed
    /// weights) rather than change sign from probe to probe (rounding); `compare::shift`.
    pub weight_shift: Option<ShiftTest>,
    pub sequential: Option<SequentialOutcome>,
    pub reference: ModelRef,
    pub suspect: ModelRef,
}

impl Report {
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn signal(&self, name: &str) -> Option<&SignalScore> {
        self.signals.iter().find(|s| s.name == name)
    }
}

/// A table cell: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn num(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) if v != 0.0 && v.abs() < 1e-3 => format!("{v:.1e}"),
        Some(v) => format!("{v:.digits$}"),
        None => "–".to_string(),
    }
}

/// The report for people.
pub fn to_markdown(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("# Provenance report\n\n");
    out.push_str(&format!(
        "**Verdict: {}** (confidence {:.3}, alpha {})\n\n",
        report.verdict.as_str(),
        report.confidence,
        report.alpha
    ));
    out.push_str(&format!(
        "- Reference: {} (probe set {} {}, {})\n",
        cell(&report.reference.describe),
        report.reference.probe_set.name,
        report.reference.probe_set.version,
        report.reference.created_at
    ));
    out.push_str(&format!(
        "- Suspect: {} (probe set {} {}, {})\n",
        cell(&report.suspect.describe),
        report.suspect.probe_set.name,
        report.suspect.probe_set.version,
        report.suspect.created_at
    ));
    if let Some(caps) = &report.suspect.capabilities {
        out.push_str(&format!("- Suspect offered: {}\n", caps.summary()));
        for limit in caps.limits() {
            out.push_str(&format!("  - {limit}\n"));
        }
    }
    out.push_str(&format!(
        "- Calibration: {} ({} controls, {} known-same pairs). {}\n",
        report.calibration.as_str(),
        report.controls,
        report.known_same,
        report.calibration_note
    ));
    if let Some(origin) = &report.controls_origin {
        out.push_str(&format!("- Controls: {}\n", cell(origin)));
    }
    if !report.reference_limits.is_empty() {
        out.push_str("- The reference could not provide:\n");
        for limit in &report.reference_limits {
            out.push_str(&format!("  - {}\n", cell(limit)));
        }
    }
    out.push('\n');

    out.push_str("## Why\n\n");
    for reason in &report.reasons {
        out.push_str(&format!("- {}\n", cell(reason)));
    }

    out.push_str("\n## Signals\n\n");
    out.push_str("| signal | score | 95% interval | p vs controls | controls mean | null tested | n | in verdict | detail |\n");
    out.push_str("| --- | ---: | --- | ---: | ---: | --- | ---: | --- | --- |\n");
    for s in &report.signals {
        let interval = s
            .interval
            .map(|(lo, hi)| format!("{lo:.3} – {hi:.3}"))
            .unwrap_or_else(|| "–".to_string());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.name,
            num(s.score, 3),
            interval,
            num(s.p_value, 3),
            num(s.control_mean, 3),
            match (s.p_value, s.null_centre, s.null_spread) {
                (None, _, _) => "–".to_string(),
                (Some(_), Some(c), Some(sd)) => format!("{c:.3} ± {sd:.3}"),
                _ => "empirical".to_string(),
            },
            s.n,
            if s.used_in_verdict { "yes" } else { "no" },
            cell(&s.detail)
        ));
    }

    if !report.findings.is_empty() {
        out.push_str("\n## Findings\n\n");
        for f in &report.findings {
            out.push_str(&format!(
                "- **{}**: {:.2}. {}\n",
                f.name,
                f.value,
                cell(&f.detail)
            ));
        }
    }

    if !report.evidence.is_empty() {
        out.push_str("\n## Evidence\n\n");
        out.push_str("| probe | signal | reference | suspect | why |\n");
        out.push_str("| --- | --- | --- | --- | --- |\n");
        for e in &report.evidence {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(&e.probe_id),
                e.signal,
                cell(&e.reference_text),
                cell(&e.suspect_text),
                cell(&e.why)
            ));
        }
    }

    out.push_str("\n## Queries\n\n");
    let q = &report.queries;
    out.push_str(&format!(
        "- Suspect: {} asks, {} answered, {} requests with retries\n- Reference: {} asks\n",
        q.suspect, q.suspect_answered, q.suspect_requests, q.reference
    ));
    if let Some(seq) = &report.sequential {
        out.push_str(&format!(
            "- Sequential test: {:?} after {} queries (e-values {:.1} against unrelated, {:.1} against identical)\n",
            seq.decision, seq.queries, seq.e_against_unrelated, seq.e_against_identical
        ));
    }
    out
}
