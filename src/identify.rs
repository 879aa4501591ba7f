//! Which model is behind an endpoint: one suspect held against every reference of a
//! library of stored fingerprints, with no reference model loaded.
//!
//! The suspect's answers are kept in one cache shared by every reference, so a probe is
//! asked once whichever reference wants it. First each reference's sequential test runs
//! (the scan's own `early_stop`) on the answers; when one says `identical`, the
//! others are judged on the answers asked so far and no more are asked. Otherwise the
//! suspect answers the whole probe set and every reference gets the full comparison.
//! Open set: when no reference comes out identical, derived or distilled, the answer is
//! "none of these", with the controls' null behind each p-value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compare::{CompareOptions, QuantizedForm, Report, Verdict};
use crate::endpoint::{Capabilities, EndpointError, ModelEndpoint};
use crate::fingerprint::{
    self, Fingerprint, FingerprintError, ModelDescription, Observation, ProbeSetRef, RunOptions,
};
use crate::probes::{Probe, ProbeSet};
use crate::scan::{early_stop, judge, Against, AnswerSource};

#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error("library {dir}: {message}")]
    Library { dir: PathBuf, message: String },
    #[error("library: {0}")]
    Fingerprint(#[from] FingerprintError),
    #[error("the suspect: {0}")]
    Suspect(#[from] EndpointError),
}

/// The references to tell apart (each a stored fingerprint, named by its file), each
/// one's quantized forms, and the controls known unrelated to all of them.
pub struct Library {
    pub references: Vec<(String, Fingerprint)>,
    /// `forms[i]` belongs to `references[i]`; a copy served quantized by another tool is
    /// the reference only through them, as in `scan`.
    pub forms: Vec<Vec<QuantizedForm>>,
    pub controls: Vec<Fingerprint>,
}

impl Library {
    /// `dir/*.json` are the references (made with `provenance fingerprint`),
    /// `dir/forms/<reference>/<type>.json` their quantized forms (as `scan --forms` caches
    /// them), `dir/controls/` the controls; every print must come from one probe set.
    pub fn load(dir: &Path) -> Result<Self, IdentifyError> {
        let bad = |message: String| IdentifyError::Library {
            dir: dir.to_path_buf(),
            message,
        };
        let files = json_files(dir).map_err(|e| bad(e.to_string()))?;
        let mut references = Vec::with_capacity(files.len());
        for (name, path) in files {
            references.push((name, fingerprint::load(&path)?));
        }
        if references.is_empty() {
            return Err(bad("no reference fingerprints (*.json)".into()));
        }
        let controls_dir = dir.join("controls");
        let controls = if controls_dir.is_dir() {
            fingerprint::load_dir(&controls_dir)?
        } else {
            Vec::new()
        };
        let hash = &references[0].1.probe_set.hash;
        if let Some((name, _)) = references.iter().find(|(_, p)| &p.probe_set.hash != hash) {
            return Err(bad(format!(
                "{name} was made from another probe set than {}",
                references[0].0
            )));
        }
        if controls.iter().any(|c| &c.probe_set.hash != hash) {
            return Err(bad("a control was made from another probe set".into()));
        }
        let mut forms = Vec::with_capacity(references.len());
        for (name, _) in &references {
            let found = load_forms(&dir.join("forms").join(name))?;
            if let Some(f) = found.iter().find(|f| &f.fingerprint.probe_set.hash != hash) {
                return Err(bad(format!(
                    "the form {} of {name} was made from another probe set",
                    f.dtype
                )));
            }
            forms.push(found);
        }
        Ok(Self {
            references,
            forms,
            controls,
        })
    }

    pub fn probe_set(&self) -> &ProbeSetRef {
        &self.references[0].1.probe_set
    }
}

/// Every `*.json` in `dir` as a quantized form named by its file; none when `dir` is
/// missing.
fn load_forms(dir: &Path) -> Result<Vec<QuantizedForm>, IdentifyError> {
    let Ok(files) = json_files(dir) else {
        return Ok(Vec::new());
    };
    files
        .into_iter()
        .map(|(dtype, path)| {
            Ok(QuantizedForm {
                dtype,
                fingerprint: fingerprint::load(&path)?,
            })
        })
        .collect()
}

/// The `*.json` files directly in `dir`, each with its name less the extension, sorted.
fn json_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, path)
        })
        .collect())
}

/// One reference's place in the answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    pub reference: String,
    #[schema(value_type = String)]
    pub verdict: Verdict,
    pub p_value: Option<f64>,
    pub confidence: f64,
    /// Quantized forms of this reference the suspect was also held against (`None` where
    /// the report does not say: the service's workers choose them).
    pub forms: Option<usize>,
    /// Suspect answers this reference's comparison was judged on.
    pub queries: usize,
    /// Its sequential test decided `identical` before the whole set was asked.
    pub decided_early: bool,
    pub reasons: Vec<String>,
}

impl Candidate {
    pub fn from_report(
        reference: &str,
        forms: Option<usize>,
        report: &Report,
        decided_early: bool,
    ) -> Self {
        Self {
            reference: reference.to_string(),
            verdict: report.verdict,
            p_value: report.p_value,
            confidence: report.confidence,
            forms,
            queries: report.queries.suspect,
            decided_early,
            reasons: report.reasons.clone(),
        }
    }
}

/// Orders `candidates` best first (identical, derived, distilled, inconclusive,
/// unrelated; the smaller p-value first within a class) and gives the open-set answer:
/// the first one that is the reference or made from it, or `None` for "none of these".
/// The command line and the service both rank with this.
pub fn rank_candidates(candidates: &mut [Candidate]) -> Option<String> {
    candidates.sort_by(|a, b| {
        rank(a.verdict).cmp(&rank(b.verdict)).then(
            a.p_value
                .unwrap_or(1.0)
                .total_cmp(&b.p_value.unwrap_or(1.0)),
        )
    });
    candidates
        .first()
        .filter(|c| rank(c.verdict) <= rank(Verdict::Distilled))
        .map(|c| c.reference.clone())
}

#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    pub suspect: String,
    /// What the suspect's API offered (the access mode the answer was made under).
    pub suspect_offered: Capabilities,
    /// Ranked: identical, derived, distilled, inconclusive, unrelated; smaller p first.
    pub candidates: Vec<Candidate>,
    /// The best candidate that is the reference or made from it; `None`: none of these.
    pub answer: Option<String>,
    /// Distinct probes the suspect was asked.
    pub suspect_queries: usize,
    pub controls: usize,
}

/// Where the suspect's answers come from: its endpoint, or a print made before (the
/// zoo's evaluation replays stored prints as a live suspect would have answered).
#[async_trait::async_trait]
trait Sampler: Send + Sync {
    async fn sample(&self, probe: &Probe, index: usize) -> Result<Observation, IdentifyError>;
}

struct FromEndpoint<'a> {
    suspect: &'a dyn ModelEndpoint,
    caps: Capabilities,
    run: &'a RunOptions,
}

#[async_trait::async_trait]
impl Sampler for FromEndpoint<'_> {
    async fn sample(&self, probe: &Probe, index: usize) -> Result<Observation, IdentifyError> {
        Ok(fingerprint::observe(self.suspect, &self.caps, probe, index, self.run).await)
    }
}

struct FromPrint<'a>(&'a Fingerprint);

#[async_trait::async_trait]
impl Sampler for FromPrint<'_> {
    async fn sample(&self, probe: &Probe, index: usize) -> Result<Observation, IdentifyError> {
        self.0
            .observations
            .iter()
            .find(|o| o.probe_id == probe.id && o.sample_index == index)
            .cloned()
            .ok_or_else(|| IdentifyError::Library {
                dir: PathBuf::new(),
                message: format!("the suspect's print has no answer to {}", probe.id),
            })
    }
}

/// The suspect's answers, asked once each whichever reference wants them.
struct Answers<'a> {
    source: &'a dyn Sampler,
    kept: HashMap<(String, usize), Observation>,
}

#[async_trait::async_trait]
impl AnswerSource for Answers<'_> {
    type Error = IdentifyError;

    async fn answer(&mut self, probe: &Probe, sample: usize) -> Result<Observation, IdentifyError> {
        self.sample(probe, sample).await
    }
}

impl Answers<'_> {
    async fn sample(&mut self, probe: &Probe, index: usize) -> Result<Observation, IdentifyError> {
        let key = (probe.id.clone(), index);
        if let Some(obs) = self.kept.get(&key) {
            return Ok(obs.clone());
        }
        let obs = self.source.sample(probe, index).await?;
        self.kept.insert(key, obs.clone());
        Ok(obs)
    }

    /// The suspect's print over what it has answered, in probe-set order.
    fn print(&self, set: &ProbeSet, description: &ModelDescription) -> Fingerprint {
        let observations = fingerprint::plan(set)
            .iter()
            .filter_map(|job| {
                self.kept
                    .get(&(job.probe.id.clone(), job.sample_index))
                    .cloned()
            })
            .collect();
        Fingerprint::new(description.clone(), ProbeSetRef::of(set), observations)
    }
}

fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Identical => 0,
        Verdict::Derived => 1,
        Verdict::Distilled => 2,
        Verdict::Inconclusive => 3,
        Verdict::Unrelated => 4,
    }
}

/// Sets `suspect` against every reference of `library` on `set` (the probe set the
/// library's prints were made from).
pub async fn identify(
    library: &Library,
    set: &ProbeSet,
    suspect: &dyn ModelEndpoint,
    run: &RunOptions,
    opts: &CompareOptions,
) -> Result<Identification, IdentifyError> {
    let caps = suspect.capabilities().await?;
    let description = ModelDescription {
        describe: suspect.describe(),
        capabilities: caps.clone(),
    };
    let source = FromEndpoint { suspect, caps, run };
    identify_from(library, set, description, &source, opts).await
}

/// [`identify`] with the suspect's answers taken from `print` as it would have given them:
/// the zoo's evaluation of identification over stored prints.
pub async fn identify_print(
    library: &Library,
    set: &ProbeSet,
    print: &Fingerprint,
    opts: &CompareOptions,
) -> Result<Identification, IdentifyError> {
    identify_from(library, set, print.model.clone(), &FromPrint(print), opts).await
}

async fn identify_from(
    library: &Library,
    set: &ProbeSet,
    description: ModelDescription,
    source: &dyn Sampler,
    opts: &CompareOptions,
) -> Result<Identification, IdentifyError> {
    if ProbeSetRef::of(set).hash != library.probe_set().hash {
        return Err(IdentifyError::Library {
            dir: PathBuf::new(),
            message: "its fingerprints were made from another probe set than the one given".into(),
        });
    }
    let caps = description.capabilities.clone();
    let mut answers = Answers {
        source,
        kept: HashMap::new(),
    };
    let against = |i: usize| Against {
        reference: &library.references[i].1,
        controls: &library.controls,
        forms: &library.forms[i],
    };
    let mut decided: Option<(usize, Report)> = None;
    for i in 0..library.references.len() {
        let early = early_stop(
            against(i),
            set,
            description.clone(),
            opts,
            &mut answers,
            None,
        )
        .await?;
        if let Some((_, report)) = early.stopped {
            decided = Some((i, report));
            break;
        }
    }
    if decided.is_none() {
        for job in fingerprint::plan(set) {
            answers.sample(job.probe, job.sample_index).await?;
        }
    }
    let print = answers.print(set, &description);
    let mut candidates = Vec::with_capacity(library.references.len());
    for (i, (name, _)) in library.references.iter().enumerate() {
        let forms = library.forms[i].len();
        match &decided {
            Some((j, report)) if *j == i => {
                candidates.push(Candidate::from_report(name, Some(forms), report, true))
            }
            _ => {
                let report = judge(against(i), &print, None, opts).await;
                candidates.push(Candidate::from_report(name, Some(forms), &report, false));
            }
        }
    }
    let answer = rank_candidates(&mut candidates);
    Ok(Identification {
        suspect: description.describe,
        suspect_offered: caps,
        candidates,
        answer,
        suspect_queries: answers.kept.len(),
        controls: library.controls.len(),
    })
}

/// The answer for people.
pub fn to_markdown(id: &Identification) -> String {
    let mut out = String::from("# Identification\n\n");
    out.push_str(&format!(
        "**Answer: {}** after {} suspect queries\n\n",
        id.answer.as_deref().unwrap_or("none of these"),
        id.suspect_queries
    ));
    out.push_str(&format!("- Suspect: {}\n", id.suspect));
    out.push_str(&format!(
        "- Suspect offered: {}\n",
        id.suspect_offered.summary()
    ));
    out.push_str(&format!(
        "- Controls: {} (p-values against {})\n\n",
        id.controls,
        if id.controls == 0 {
            "the default nulls"
        } else {
            "the controls"
        }
    ));
    out.push_str(
        "| rank | reference | forms | verdict | p | confidence | queries | decided early |\n",
    );
    out.push_str("|---:|---|---:|---|---:|---:|---:|---|\n");
    for (i, c) in id.candidates.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} | {} | {} |\n",
            i + 1,
            c.reference.replace('|', "\\|"),
            c.forms.map(|n| n.to_string()).unwrap_or_else(|| "–".into()),
            c.verdict.as_str(),
            c.p_value
                .map(|p| format!("{p:.2e}"))
                .unwrap_or_else(|| "–".into()),
            c.confidence,
            c.queries,
            if c.decided_early { "yes" } else { "no" }
        ));
    }
    out
}
