//! `provenance eval --zoo DIR`: every (reference, member) pair scanned and judged, with the
//! confusion matrix over the five verdicts.
//!
//! Each reference (a base member) is fingerprinted in-process; each member is served over
//! the OpenAI-compatible API on loopback (with its system prompt) and fingerprinted as a
//! suspect would be. Fingerprints are cached under `DIR/prints`, so a second evaluation
//! only compares. Calibration is cross-validated: a pair's controls are the zoo members
//! unrelated to its reference, and its known-same pairs the members identical to it, in
//! both cases without the member being judged, so no pair is judged against itself.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::build::resolve;
use super::score::{score, ClassScore};
use super::{truth, Class, Engine, Manifest, Member, Recipe, ZooError};
use crate::compare::likelihood::AnswerScore;
use crate::compare::{
    compare_calibrated, Calibration, CompareOptions, Likelihoods, QuantizedForm, Report, Verdict,
};
use crate::endpoint::{AccessMode, ModelEndpoint};
use crate::fingerprint::{self, Fingerprint, Observation, RunOptions};
use crate::model::local_endpoint::LocalEndpoint;
use crate::model::{LoadOptions, ModelHandle};
use crate::probes::ProbeSet;
use crate::scan::{Against, AnswerSource, TextEarlyStop};
use crate::suspect::{HttpModel, HttpModelConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairResult {
    pub reference: String,
    pub member: String,
    /// What served the member, and what made its file.
    #[serde(default)]
    pub engine: Engine,
    #[serde(default)]
    pub tool: String,
    pub class: Class,
    pub verdict: Verdict,
    pub confidence: f64,
    /// Suspect queries the scan needed: the sequential test's when it decided identical,
    /// else every probe asked.
    pub queries: usize,
    pub reasons: Vec<String>,
    /// Each signal's p-value against the controls (`None`: not computed), so a miss can
    /// be traced to the signal that failed to see it.
    #[serde(default)]
    pub p_values: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Share of pairs given their true verdict, 0–1.
    pub accuracy: f64,
    pub false_accusation_rate: Option<f64>,
    /// confusion[true class][verdict] = pairs.
    pub confusion: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
    pub per_class: std::collections::BTreeMap<String, ClassScore>,
    pub pairs: Vec<PairResult>,
    pub probe_set: String,
    pub probes_asked_per_model: usize,
    /// Wall time of the evaluation, fingerprints included (cached ones cost nothing).
    pub seconds: f64,
    pub mean_queries: f64,
    /// What of the members' API the evaluation used.
    #[serde(default)]
    pub access: AccessMode,
    #[serde(default)]
    pub calibration: EvalCalibration,
    /// With `--identify`: each member identified among the references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identification: Option<super::identify_eval::IdentifyScore>,
}

pub struct EvalOptions {
    pub run: RunOptions,
    pub compare: CompareOptions,
    /// Weight types each reference is quantized to by the engine (`crate::quantized_forms`).
    pub forms: Vec<String>,
    /// What of their API the members may be asked through (`AccessMode`): every member,
    /// controls included, is fingerprinted under it, as a scan of a suspect behind such an
    /// API compares only what that API gives.
    pub access: AccessMode,
    /// Whose controls judge each pair.
    pub calibration: EvalCalibration,
    /// Also identify every member against libraries of the references
    /// (`super::identify_eval`).
    pub identify: bool,
}

/// Whose controls judge each pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalCalibration {
    /// The zoo's other members: those unrelated to the reference as controls, those
    /// identical to it as known-same pairs, the judged member left out of both.
    #[default]
    Zoo,
    /// What a newcomer's `scan` has: the built-in controls of the reference
    /// (`crate::controls`) and no known-same pairs.
    Builtin,
}

impl EvalCalibration {
    pub fn parse(s: &str) -> Option<EvalCalibration> {
        match s {
            "zoo" => Some(EvalCalibration::Zoo),
            "builtin" => Some(EvalCalibration::Builtin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EvalCalibration::Zoo => "zoo",
            EvalCalibration::Builtin => "builtin",
        }
    }
}

/// Where the members' prints (and their read-backs) under `access` are kept; references
/// and forms are fingerprinted in-process and shared by every mode.
fn member_prints_dir(prints: &Path, access: AccessMode) -> PathBuf {
    match access {
        AccessMode::Full => prints.to_path_buf(),
        other => prints.join(format!("access-{other}")),
    }
}

/// Per arithmetic revision of the runner, which serves every member.
fn prints_dir(dir: &Path) -> PathBuf {
    dir.join(format!("prints-r{}", crate::model::ARITHMETIC_REVISION))
}

/// A cached fingerprint when it answered every ask of this probe set, else a new one.
async fn fingerprint_cached(
    set: &ProbeSet,
    endpoint: &dyn ModelEndpoint,
    out: &Path,
    opts: &RunOptions,
    member: &str,
) -> Result<Fingerprint, ZooError> {
    if let Ok(fp) = fingerprint::load(out) {
        if fp.covers(set) {
            return Ok(fp.restricted_to(set));
        }
    }
    let fresh = match crate::scan::fingerprint_to(set, endpoint, out, opts).await {
        // Members are served on a new ephemeral port each run, so the log of an interrupted
        // evaluation names another endpoint: its answers are the same model's, but the log
        // cannot prove it, so it is dropped and the member asked again.
        Err(fingerprint::FingerprintError::LogMismatch { path, what }) => {
            tracing::warn!(member, log = %path.display(), %what, "dropping the log of an earlier run");
            std::fs::remove_file(&path).map_err(|source| ZooError::Io { path, source })?;
            crate::scan::fingerprint_to(set, endpoint, out, opts).await
        }
        other => other,
    };
    fresh.map_err(|source| ZooError::Fingerprint {
        member: member.to_string(),
        source,
    })
}

async fn load(dir: &Path, member: &Member) -> Result<ModelHandle, ZooError> {
    let path = resolve(dir, &member.path).to_string_lossy().into_owned();
    let handle =
        tokio::task::spawn_blocking(move || ModelHandle::spawn(&path, &LoadOptions::default(), 64))
            .await
            .map_err(|e| ZooError::Serve {
                member: member.id.clone(),
                message: e.to_string(),
            })??;
    Ok(handle)
}

/// What serves a member while it is asked; dropping it stops the server.
enum Serving {
    Ours(tokio::task::JoinHandle<()>),
    /// Held for its `Drop`, which stops the server.
    LlamaCpp {
        _server: super::llama_cpp::LlamaServer,
    },
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Serving::Ours(task) = self {
            task.abort();
        }
    }
}

fn client(member: &Member, base_url: String, access: AccessMode) -> Result<HttpModel, ZooError> {
    let mut cfg = HttpModelConfig::new(base_url, &member.id);
    cfg.allow_private_targets = true;
    cfg.access = access;
    HttpModel::new(cfg).map_err(|e| ZooError::Serve {
        member: member.id.clone(),
        message: e.to_string(),
    })
}

/// Serves `member` on a free loopback port (by its engine) for as long as the returned
/// `Serving` lives.
async fn serve(
    dir: &Path,
    member: &Member,
    access: AccessMode,
) -> Result<(HttpModel, Serving), ZooError> {
    let failed = |e: String| ZooError::Serve {
        member: member.id.clone(),
        message: e,
    };
    if member.engine == Engine::LlamaCpp {
        let bin = super::llama_cpp::find().ok_or_else(|| {
            failed(
                "it is served by llama.cpp, which is not built here (scripts/build-llama-cpp.sh)"
                    .into(),
            )
        })?;
        let cache = match &member.recipe {
            Recipe::KvCache { cache_type } => {
                vec!["-ctk", cache_type.as_str(), "-ctv", cache_type.as_str()]
            }
            _ => Vec::new(),
        };
        // A quantized value cache needs llama.cpp's flash attention.
        let flash = if cache.is_empty() {
            &[][..]
        } else {
            &["-fa", "on"][..]
        };
        let extra: Vec<&str> = cache.iter().chain(flash).copied().collect();
        let server = super::llama_cpp::LlamaServer::start_with(
            &bin,
            &resolve(dir, &member.path),
            &member.id,
            member.system_prompt.as_deref(),
            &extra,
        )
        .await?;
        let client = client(member, server.base_url.clone(), access)?;
        return Ok((client, Serving::LlamaCpp { _server: server }));
    }
    let handle = load(dir, member).await?;
    let app = crate::serve::router(
        handle,
        crate::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: member.id.clone(),
            system_prompt: member.system_prompt.clone(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| failed(e.to_string()))?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = client(member, format!("http://{addr}/v1"), access)?;
    Ok((client, Serving::Ours(task)))
}

pub async fn run(
    dir: &Path,
    manifest: &Manifest,
    set: &ProbeSet,
    opts: &EvalOptions,
) -> Result<EvalReport, ZooError> {
    let started = Instant::now();
    let prints = prints_dir(dir);
    std::fs::create_dir_all(&prints).map_err(|source| ZooError::Io {
        path: prints.clone(),
        source,
    })?;

    let mut references: Vec<(&Member, Fingerprint)> = Vec::new();
    for r in manifest.references() {
        tracing::info!(reference = %r.id, "fingerprinting the reference in-process");
        let local = LocalEndpoint::new(load(dir, r).await?);
        let out = prints.join(format!("reference-{}.json", r.id));
        references.push((
            r,
            fingerprint_cached(set, &local, &out, &opts.run, &r.id).await?,
        ));
    }
    let mut forms: HashMap<String, Vec<QuantizedForm>> = HashMap::new();
    for (r, _) in &references {
        let path = resolve(dir, &r.path);
        let made = crate::quantized_forms::fingerprint_forms(
            &path,
            &opts.forms,
            set,
            &opts.run,
            &prints.join("forms"),
        )
        .await?;
        forms.insert(r.id.clone(), made);
    }
    let member_prints = member_prints_dir(&prints, opts.access);
    std::fs::create_dir_all(&member_prints).map_err(|source| ZooError::Io {
        path: member_prints.clone(),
        source,
    })?;
    let mut members: Vec<(&Member, Fingerprint)> = Vec::new();
    for m in &manifest.members {
        tracing::info!(member = %m.id, access = %opts.access, "fingerprinting over the OpenAI-compatible API");
        let out = member_prints.join(format!("{}.json", m.id));
        if let Ok(fp) = fingerprint::load(&out) {
            if fp.covers(set) {
                members.push((m, fp.restricted_to(set)));
                continue;
            }
        }
        let (client, serving) = serve(dir, m, opts.access).await?;
        let fp = fingerprint_cached(set, &client, &out, &opts.run, &m.id).await;
        drop(serving);
        members.push((m, fp?));
    }

    if opts.access == AccessMode::Full {
        write_controls(dir, &references, &members)?;
    }
    let read_back = read_back_all(dir, &references, &members, &member_prints).await?;
    let builtin = match opts.calibration {
        EvalCalibration::Zoo => HashMap::new(),
        EvalCalibration::Builtin => builtin_controls(dir, &references, set, &opts.run).await?,
    };

    let mut pairs = Vec::new();
    for (r, ref_print) in &references {
        // A suspect without log-probabilities, or with chat only, stops early on text,
        // read back by the reference model as each answer arrives.
        let text_stop = match members.iter().any(|(_, p)| {
            p.model.capabilities.max_top_logprobs == 0 || !p.model.capabilities.raw_completion
        }) {
            true => Some(load(dir, r).await?),
            false => None,
        };
        for (m, print) in &members {
            let class = truth(&r.base, m);
            let others = |want: Class| -> Vec<(&Member, Fingerprint)> {
                members
                    .iter()
                    .filter(|(o, _)| o.id != m.id && truth(&r.base, o) == want)
                    .map(|(o, fp)| (*o, fp.clone()))
                    .collect()
            };
            let (control_members, controls): (Vec<&Member>, Vec<Fingerprint>) =
                others(Class::Unrelated).into_iter().unzip();
            let known_same: Vec<Fingerprint> = others(Class::Identical)
                .into_iter()
                .map(|(_, fp)| fp)
                .collect();
            let scores_of = |member: &Member| {
                read_back
                    .get(&(r.id.clone(), member.id.clone()))
                    .cloned()
                    .unwrap_or_default()
            };
            let mut control_scores: Vec<Vec<AnswerScore>> =
                control_members.iter().map(|c| scores_of(c)).collect();
            let suspect_scores = scores_of(m);
            let (controls, known_same) = match builtin.get(&r.id) {
                Some((prints, scores)) => {
                    control_scores = scores.clone();
                    (prints.clone(), Vec::new())
                }
                None => (controls, known_same),
            };
            let report = compare_calibrated(
                ref_print,
                print,
                &Calibration {
                    controls: &controls,
                    known_same: &known_same,
                    forms: &forms[&r.id],
                    likelihood: Some(Likelihoods {
                        suspect: &suspect_scores,
                        controls: &control_scores,
                    }),
                },
                &opts.compare,
            );
            // What a live scan of the member would have answered: its early stop replayed
            // from the print (the same code; text-read for a member without
            // log-probabilities or raw completions), and where that did not stop, the
            // comparison of the whole set. An early answer the whole set disagrees with
            // says so.
            let text = text_stop
                .as_ref()
                .filter(|_| {
                    print.model.capabilities.max_top_logprobs == 0
                        || !print.model.capabilities.raw_completion
                })
                .map(|handle| TextEarlyStop {
                    reference: handle,
                    controls: &control_scores,
                });
            let against = Against {
                reference: ref_print,
                controls: &controls,
                forms: &forms[&r.id],
            };
            let (report, queries) =
                match replay_early_stop(against, set, print, text, &opts.compare).await {
                    Some(mut early) => {
                        if early.verdict != report.verdict {
                            early.reasons.push(format!(
                                "the whole probe set reads `{}` ({})",
                                report.verdict.as_str(),
                                report.reasons.last().map(String::as_str).unwrap_or("")
                            ));
                        }
                        let queries = early.queries.sequential.unwrap_or(early.queries.suspect);
                        (early, queries)
                    }
                    None => {
                        let queries = report.queries.suspect;
                        (report, queries)
                    }
                };
            pairs.push(PairResult {
                reference: r.id.clone(),
                member: m.id.clone(),
                engine: m.engine,
                tool: m.tool.clone(),
                class,
                verdict: report.verdict,
                confidence: report.confidence,
                queries,
                reasons: report.reasons.clone(),
                p_values: report
                    .signals
                    .iter()
                    .map(|s| (s.name.clone(), s.p_value))
                    .collect(),
            });
        }
    }
    let identification = if opts.identify {
        Some(super::identify_eval::run(&references, &forms, &members, set, &opts.compare).await?)
    } else {
        None
    };
    let results: Vec<(Class, Verdict)> = pairs.iter().map(|p| (p.class, p.verdict)).collect();
    let s = score(&results);
    let mean_queries = if pairs.is_empty() {
        0.0
    } else {
        pairs.iter().map(|p| p.queries as f64).sum::<f64>() / pairs.len() as f64
    };
    Ok(EvalReport {
        accuracy: s.accuracy,
        false_accusation_rate: s.false_accusation_rate,
        confusion: s.confusion,
        per_class: s.per_class,
        pairs,
        probe_set: format!(
            "{} {} ({})",
            set.name,
            set.version,
            &set.hash[..12.min(set.hash.len())]
        ),
        probes_asked_per_model: fingerprint::plan(set).len(),
        seconds: started.elapsed().as_secs_f64(),
        mean_queries,
        access: opts.access,
        calibration: opts.calibration,
        identification,
    })
}

/// The report a live scan of `print`'s model would have stopped early with
/// (`crate::scan::early_stop`, the same code, answered from the print instead of the
/// network); `None` where it would have asked the whole set.
async fn replay_early_stop(
    against: Against<'_>,
    set: &ProbeSet,
    print: &Fingerprint,
    text: Option<TextEarlyStop<'_>>,
    opts: &CompareOptions,
) -> Option<Report> {
    let mut source = PrintSource { print };
    let early = crate::scan::early_stop(against, set, print.model.clone(), opts, &mut source, text)
        .await
        .ok()?
        .stopped?;
    Some(early.1)
}

/// Answers from a print already made, as a live scan would have got them.
struct PrintSource<'a> {
    print: &'a Fingerprint,
}

/// The print lacks an answer the replay asks for (made with another probe set).
#[derive(Debug)]
struct NotInPrint;

#[async_trait::async_trait]
impl AnswerSource for PrintSource<'_> {
    type Error = NotInPrint;

    async fn answer(
        &mut self,
        probe: &crate::probes::Probe,
        sample: usize,
    ) -> Result<Observation, NotInPrint> {
        self.print
            .observations
            .iter()
            .find(|o| o.probe_id == probe.id && o.sample_index == sample)
            .cloned()
            .ok_or(NotInPrint)
    }
}

/// Each reference's built-in controls (`crate::controls`, cached beside the fetched models)
/// with their answers read back by it.
async fn builtin_controls(
    dir: &Path,
    references: &[(&Member, Fingerprint)],
    set: &ProbeSet,
    run: &RunOptions,
) -> Result<HashMap<String, (Vec<Fingerprint>, Vec<Vec<AnswerScore>>)>, ZooError> {
    let mut out = HashMap::new();
    for (r, _) in references {
        let path = resolve(dir, &r.path);
        let made = crate::controls::ensure(&path, set, run, &crate::controls::default_cache())
            .await
            .map_err(|e| ZooError::Serve {
                member: r.id.clone(),
                message: e.to_string(),
            })?;
        let Some(made) = made else {
            out.insert(r.id.clone(), (Vec::new(), Vec::new()));
            continue;
        };
        let handle = load(dir, r).await?;
        let mut scores = Vec::with_capacity(made.prints.len());
        for (spec, print) in made.specs.iter().zip(&made.prints) {
            let cache = prints_dir(dir).join("likelihood").join(format!(
                "{}--builtin-{}.json",
                r.id,
                spec.id()
            ));
            scores.push(
                crate::read_back::read_back(&handle, print, Some(&cache))
                    .await
                    .map_err(|e| ZooError::ReadBack {
                        reference: r.id.clone(),
                        member: spec.id(),
                        message: e.to_string(),
                    })?,
            );
        }
        out.insert(r.id.clone(), (made.prints, scores));
    }
    Ok(out)
}

/// Every member's answers read back by every reference (`crate::read_back`), cached under
/// `prints-r<revision>/likelihood` and redone when the member's print was remade.
async fn read_back_all(
    dir: &Path,
    references: &[(&Member, Fingerprint)],
    members: &[(&Member, Fingerprint)],
    prints: &Path,
) -> Result<HashMap<(String, String), Vec<AnswerScore>>, ZooError> {
    let mut out = HashMap::new();
    for (r, _) in references {
        let handle = load(dir, r).await?;
        for (m, print) in members {
            tracing::info!(reference = %r.id, member = %m.id, "reading answers back");
            let cache = prints
                .join("likelihood")
                .join(format!("{}--{}.json", r.id, m.id));
            let scores = crate::read_back::read_back(&handle, print, Some(&cache))
                .await
                .map_err(|e| ZooError::ReadBack {
                    reference: r.id.clone(),
                    member: m.id.clone(),
                    message: e.to_string(),
                })?;
            out.insert((r.id.clone(), m.id.clone()), scores);
        }
    }
    Ok(out)
}

/// Where `eval` leaves, for each reference, the fingerprints of the members unrelated to
/// it: ready for `provenance scan --controls` and `compare --controls`.
pub fn controls_dir(dir: &Path, reference: &str) -> PathBuf {
    dir.join("controls").join(reference)
}

fn write_controls(
    dir: &Path,
    references: &[(&Member, Fingerprint)],
    members: &[(&Member, Fingerprint)],
) -> Result<(), ZooError> {
    for (r, _) in references {
        let out = controls_dir(dir, &r.id);
        let io = |source| ZooError::Io {
            path: out.clone(),
            source,
        };
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(io)?;
        }
        std::fs::create_dir_all(&out).map_err(io)?;
        for (m, print) in members {
            if truth(&r.base, m) == Class::Unrelated {
                print
                    .save(&out.join(format!("{}.json", m.id)))
                    .map_err(|source| ZooError::Fingerprint {
                        member: m.id.clone(),
                        source,
                    })?;
            }
        }
    }
    Ok(())
}

/// The report as a readable table.
pub fn to_table(report: &EvalReport) -> String {
    let mut out = format!(
        "Access mode: {}; controls: {}\n\n",
        report.access,
        report.calibration.as_str()
    );
    out.push_str("| true \\ verdict |");
    for v in super::score::VERDICTS {
        out.push_str(&format!(" {} |", v.as_str()));
    }
    out.push_str(" recall |\n|---|---|---|---|---|---|---|\n");
    for class in Class::ALL {
        let row = &report.confusion[class.as_str()];
        out.push_str(&format!("| {} |", class.as_str()));
        for v in super::score::VERDICTS {
            out.push_str(&format!(" {} |", row[v.as_str()]));
        }
        let recall = report.per_class[class.as_str()]
            .recall
            .map(|r| format!("{:.0}%", r * 100.0))
            .unwrap_or_else(|| "n/a".into());
        out.push_str(&format!(" {recall} |\n"));
    }
    out.push_str(&format!(
        "\naccuracy {:.1}% over {} pairs; false accusations {}; mean suspect queries {:.1}; {:.0} s\n",
        report.accuracy * 100.0,
        report.pairs.len(),
        report
            .false_accusation_rate
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "n/a (no unrelated pairs)".into()),
        report.mean_queries,
        report.seconds
    ));
    out.push_str("\n| reference | member | served by | file by | truth | verdict | confidence | queries |\n|---|---|---|---|---|---|---|---|\n");
    for p in &report.pairs {
        let mark = if p.class.verdict() == p.verdict {
            ""
        } else {
            " ✗"
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {}{mark} | {:.4} | {} |\n",
            p.reference,
            p.member,
            p.engine.as_str(),
            p.tool,
            p.class.as_str(),
            p.verdict.as_str(),
            p.confidence,
            p.queries
        ));
    }
    if let Some(id) = &report.identification {
        let pct = |x: Option<f64>| {
            x.map(|v| format!("{:.0}%", v * 100.0))
                .unwrap_or_else(|| "n/a".into())
        };
        out.push_str(&format!(
            "\nIdentification: top-1 {} (closed set), \"none of these\" {} (open set), \
             {} false identifications, queries median {} / p95 {}\n\n\
             | member | library | expected | answer | queries |\n|---|---|---|---|---|\n",
            pct(id.top1_accuracy),
            pct(id.none_rate),
            id.false_identifications,
            id.median_queries,
            id.p95_queries
        ));
        for r in &id.results {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.member,
                r.library,
                r.expected.as_deref().unwrap_or("none of these"),
                r.answer.as_deref().unwrap_or("none of these"),
                r.queries
            ));
        }
    }
    out
}
