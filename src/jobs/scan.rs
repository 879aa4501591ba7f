//! One scan in the service: the pipeline (`crate::scan`) over PostgreSQL, every answer
//! stored as it arrives under the scan's lease, then the verdict stored and the scan finished.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use uuid::Uuid;

use super::reference_cache::{http_endpoint, ReferenceCache};
use super::{JobError, WorkerConfig};
use crate::compare::likelihood::AnswerScore;
use crate::compare::CompareOptions;
use crate::endpoint::{Capabilities, ModelEndpoint};
use crate::fingerprint::{
    self, Fingerprint, ModelDescription, Observation, ProbeSetRef, RunOptions,
};
use crate::probes::{Probe, ProbeSet};
use crate::scan::{AnswerSource, ScanStore, SuspectCaps, Whose};
use crate::store::{
    Claimed, FingerprintRow, ModelKind, NewVerdict, ScanRow, Side, Store, SuspectKind,
};

pub(super) async fn run(
    store: &Store,
    config: &WorkerConfig,
    references: &ReferenceCache,
    claimed: &Claimed,
    lost: &AtomicBool,
) -> Result<(), JobError> {
    let scan = &claimed.scan;
    let owner = claimed.owner.as_str();
    let reference_model = store.get_model(scan.reference_model_id).await?;
    // A reference its owner serves has no weights here: no quantized forms, no read-back.
    let local = reference_model.kind == ModelKind::Local;
    let full_set = store.probe_set_content(scan.probe_set_id).await?;
    let set = match scan.probes_per_kind {
        Some(n) => fingerprint::subset(
            &full_set,
            n.max(1) as usize,
            scan.max_samples.unwrap_or(i32::MAX).max(1) as usize,
        ),
        None => full_set,
    };

    let reference = if local {
        references.endpoint(&reference_model.source).await?
    } else {
        http_endpoint(
            &reference_model.source,
            &reference_model.served_model,
            reference_model.secret.as_deref(),
            config.allow_private_targets,
        )?
    };
    let suspect = suspect_endpoint(scan, config, references).await?;

    let ref_fp = store
        .scan_fingerprint(
            scan.id,
            Side::Reference,
            Some(reference_model.id),
            &reference.describe(),
            scan.probe_set_id,
        )
        .await?;
    let sus_fp = store
        .scan_fingerprint(
            scan.id,
            Side::Suspect,
            None,
            &suspect.describe(),
            scan.probe_set_id,
        )
        .await?;

    let (controls, control_ids, controls_origin) = scan_controls(
        store,
        config,
        references,
        &reference_model,
        scan.probe_set_id,
        &set,
    )
    .await?;
    let spec = &reference_model.source;
    let (reference_handle, forms, reference_limits) = if local {
        // Made (or loaded) before the sequential phase, which matches a copy served
        // quantized against its form.
        let forms = references.forms(spec, &set, config).await?;
        (Some(references.get(spec).await?), forms, Vec::new())
    } else {
        let caps = reference
            .capabilities()
            .await
            .map_err(|e| JobError::endpoint(reference.as_ref(), e))?;
        (
            None,
            Arc::new(Vec::new()),
            crate::scan::endpoint_reference_limits(&caps),
        )
    };
    let opts = CompareOptions::default();
    let mut rows = StoreScan {
        store,
        claimed,
        set: &set,
        config,
        references,
        spec,
        reference: reference.as_ref(),
        suspect: suspect.as_ref(),
        ref_fp: &ref_fp,
        sus_fp: &sus_fp,
        control_ids: &control_ids,
        lost,
        progress: Progress {
            store,
            scan_id: scan.id,
            owner,
            done: 0,
            total: 2 * fingerprint::plan(&set).len() as i32,
        },
        caps: SuspectCaps::default(),
        counted: 0,
    };
    let outcome = crate::scan::pipeline(
        &mut rows,
        &crate::scan::Scan {
            probes: &set,
            controls: &controls,
            controls_origin,
            forms: &forms,
            read_back: reference_handle.as_ref(),
            compare: &opts,
            early_stop: scan.early_stop,
            reference_limits,
        },
    )
    .await?;
    if outcome.stopped_early {
        tracing::info!(scan = %scan.id, queries = outcome.report.queries.suspect, "stopped early");
    }
    let (suspect_print, report) = (outcome.suspect, outcome.report);
    let report_json = serde_json::to_value(&report).map_err(crate::store::StoreError::from)?;
    let verdict = report.verdict.as_str();
    store
        .add_comparison(
            ref_fp.id,
            sus_fp.id,
            Some(scan.id),
            &report_json,
            Some(&NewVerdict {
                verdict: verdict.to_string(),
                confidence: Some(report.confidence),
                p_value: report.p_value,
            }),
        )
        .await?;
    if lost.load(Ordering::SeqCst)
        || !store
            .finish_scan(scan.id, owner, Some(verdict), &report_json)
            .await?
    {
        return Err(JobError::LeaseLost);
    }
    if let Some(schedule_id) = scan.schedule_id {
        let finished = store.get_scan(scan.id).await?;
        super::schedule::after_scheduled_run(store, schedule_id, &finished, &suspect_print, config)
            .await;
    }
    Ok(())
}

/// The controls a scan of `reference` on `set` is judged against: the stored ones that
/// hold for it and, where the worker makes built-in controls and the reference is a
/// fetched model, those (made or brought up to the scan's probes first, then stored).
/// Returns the prints, their ids (for cached read-backs) and where they came from.
async fn scan_controls(
    store: &Store,
    config: &WorkerConfig,
    references: &ReferenceCache,
    reference: &crate::store::ModelRow,
    probe_set_id: Uuid,
    set: &ProbeSet,
) -> Result<(Vec<Fingerprint>, Vec<Uuid>, Option<String>), JobError> {
    let mut rows = store
        .control_fingerprints(probe_set_id, Some(reference.id))
        .await?;
    let specs = match &config.builtin_controls {
        Some(_) => crate::controls::specs_for(std::path::Path::new(&reference.source)),
        None => Vec::new(),
    };
    if let (Some(cache), false) = (&config.builtin_controls, specs.is_empty()) {
        // One maker per reference and probe set: two scans starting together wait for
        // the first to store them.
        let turn = references
            .fingerprint_lock(&format!("builtin-controls|{}|{probe_set_id}", reference.id))
            .await;
        let _turn = turn.lock().await;
        rows = store
            .control_fingerprints(probe_set_id, Some(reference.id))
            .await?;
        let wanted: HashSet<(String, i32)> = fingerprint::plan(set)
            .iter()
            .map(|j| (j.probe.id.clone(), j.sample_index as i32))
            .collect();
        let mut stale = false;
        for spec in &specs {
            let id = spec.id();
            let row = rows
                .iter()
                .find(|r| r.builtin_control.as_deref() == Some(id.as_str()));
            let covered = match row {
                Some(r) => {
                    let have: HashSet<(String, i32)> =
                        store.observed_keys(r.id).await?.into_iter().collect();
                    wanted.is_subset(&have)
                }
                None => false,
            };
            stale |= !covered;
        }
        if stale {
            let made = crate::controls::ensure(
                std::path::Path::new(&reference.source),
                set,
                &RunOptions {
                    progress: false,
                    ..RunOptions::default()
                },
                cache,
            )
            .await
            .map_err(|e| {
                tracing::warn!(reference = %reference.name, error = %e, "built-in controls");
                JobError::Transient("making the built-in controls failed".into())
            })?;
            if let Some(made) = made {
                for (spec, print) in made.specs.iter().zip(&made.prints) {
                    let observations = print
                        .observations
                        .iter()
                        .map(|o| {
                            serde_json::to_value(o)
                                .map(|data| {
                                    (
                                        o.probe_id.clone(),
                                        o.kind.as_str().to_string(),
                                        o.sample_index as i32,
                                        o.is_ok(),
                                        data,
                                    )
                                })
                                .map_err(crate::store::StoreError::from)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    store
                        .put_builtin_control(&crate::store::NewBuiltinControl {
                            probe_set_id,
                            reference_model_id: reference.id,
                            name: &spec.id(),
                            describe: &print.model.describe,
                            document: &document(print)?,
                            observations,
                        })
                        .await?;
                }
                tracing::info!(reference = %reference.name, controls = made.prints.len(), "built-in controls stored");
            }
            rows = store
                .control_fingerprints(probe_set_id, Some(reference.id))
                .await?;
        }
    }
    let mut prints = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        prints.push(store.load_fingerprint(row).await?);
        ids.push(row.id);
    }
    let builtin: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.builtin_control.as_deref())
        .collect();
    let origin = (!rows.is_empty()).then(|| {
        let marked = rows.len() - builtin.len();
        if builtin.is_empty() {
            format!("{marked} fingerprints marked as controls in this service")
        } else {
            format!(
                "{marked} fingerprints marked as controls, and {} built-in controls ({}): \
                 variants of another real model, made once by this service; they resemble \
                 each other more than unrelated models do, so mark your own as well",
                builtin.len(),
                builtin.join(", ")
            )
        }
    });
    Ok((prints, ids, origin))
}

async fn suspect_endpoint(
    scan: &ScanRow,
    config: &WorkerConfig,
    references: &ReferenceCache,
) -> Result<Arc<dyn ModelEndpoint>, JobError> {
    match scan.suspect_kind {
        SuspectKind::Http => http_endpoint(
            &scan.suspect_source,
            &scan.suspect_model,
            scan.suspect_secret.as_deref(),
            config.allow_private_targets,
        ),
        SuspectKind::Local => {
            let spec = config
                .models
                .resolve(&scan.suspect_source)
                .map_err(|e| JobError::Permanent(e.to_string()))?;
            references.endpoint(&spec).await
        }
    }
}

struct Progress<'a> {
    store: &'a Store,
    scan_id: Uuid,
    owner: &'a str,
    done: i32,
    total: i32,
}

impl Progress<'_> {
    async fn add(&mut self, n: i32) -> Result<(), JobError> {
        self.done += n;
        if !self
            .store
            .set_scan_progress(self.scan_id, self.owner, self.done, self.total)
            .await?
        {
            return Err(JobError::LeaseLost);
        }
        Ok(())
    }
}

/// Fills the scan's reference fingerprint from an earlier scan's answers of the same
/// reference to the same probe set, so only what is missing is asked. The local reference
/// answers deterministically (greedy and seeded sampling, batch-invariant runner), so the
/// copy is what asking again would give, minus half a minute of model time per scan.
async fn reuse_reference_answers(
    store: &Store,
    claimed: &Claimed,
    set: &ProbeSet,
    ref_fp: &FingerprintRow,
) -> Result<(), JobError> {
    let Some(model_id) = ref_fp.model_id else {
        return Ok(());
    };
    let Some(donor) = store
        .reusable_reference(
            model_id,
            &ref_fp.model_describe,
            ref_fp.probe_set_id,
            ref_fp.id,
        )
        .await?
    else {
        return Ok(());
    };
    let keys: Vec<(String, i32)> = fingerprint::plan(set)
        .iter()
        .map(|j| (j.probe.id.clone(), j.sample_index as i32))
        .collect();
    let copied = store
        .copy_observations(claimed.scan.id, &claimed.owner, donor, ref_fp.id, &keys)
        .await?;
    if copied > 0 {
        tracing::info!(scan = %claimed.scan.id, %donor, copied, "reference answers reused");
    }
    Ok(())
}

/// Asks one model every probe it has not answered yet, storing each answer at once.
/// Returns the endpoint's capabilities.
#[allow(clippy::too_many_arguments)]
async fn observe_side(
    store: &Store,
    claimed: &Claimed,
    set: &ProbeSet,
    endpoint: &dyn ModelEndpoint,
    fp: &FingerprintRow,
    config: &WorkerConfig,
    lost: &AtomicBool,
    progress: &mut Progress<'_>,
) -> Result<crate::endpoint::Capabilities, JobError> {
    let caps = endpoint
        .capabilities()
        .await
        .map_err(|e| JobError::endpoint(endpoint, e))?;
    let stored: HashSet<(String, i32)> = store.observed_keys(fp.id).await?.into_iter().collect();
    let jobs = fingerprint::plan(set);
    let todo: Vec<_> = jobs
        .iter()
        .filter(|j| !stored.contains(&(j.probe.id.clone(), j.sample_index as i32)))
        .collect();
    progress.add((jobs.len() - todo.len()) as i32).await?;
    if todo.is_empty() {
        return Ok(caps);
    }
    let opts = RunOptions {
        concurrency: config.concurrency.max(1),
        progress: false,
        ..RunOptions::default()
    };
    // A window of `concurrency` asks in flight; pushed by hand rather than through a
    // stream combinator, whose closure trips the compiler's Send check in spawned tasks.
    let mut pending = todo.into_iter();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < opts.concurrency {
            let Some(job) = pending.next() else { break };
            in_flight.push(fingerprint::observe(
                endpoint,
                &caps,
                job.probe,
                job.sample_index,
                &opts,
            ));
        }
        let Some(obs) = in_flight.next().await else {
            break;
        };
        keep(store, claimed, fp, &obs, lost).await?;
        progress.add(1).await?;
    }
    drop(in_flight);
    Ok(caps)
}

/// Stores one answer, as long as this worker still holds the scan.
async fn keep(
    store: &Store,
    claimed: &Claimed,
    fp: &FingerprintRow,
    obs: &Observation,
    lost: &AtomicBool,
) -> Result<(), JobError> {
    if lost.load(Ordering::SeqCst) {
        return Err(JobError::LeaseLost);
    }
    let data = serde_json::to_value(obs).map_err(crate::store::StoreError::from)?;
    let held = store
        .add_observation(
            claimed.scan.id,
            &claimed.owner,
            fp.id,
            &obs.probe_id,
            obs.kind.as_str(),
            obs.sample_index as i32,
            obs.is_ok(),
            &data,
        )
        .await?;
    if !held {
        return Err(JobError::LeaseLost);
    }
    Ok(())
}

/// The service's [`ScanStore`]: every answer stored as it arrives (under the scan's lease),
/// progress counted, read-backs of stored controls cached by the reference cache.
struct StoreScan<'a> {
    store: &'a Store,
    claimed: &'a Claimed,
    set: &'a ProbeSet,
    config: &'a WorkerConfig,
    references: &'a ReferenceCache,
    /// The reference model's source, as the reference cache knows it.
    spec: &'a str,
    reference: &'a dyn ModelEndpoint,
    suspect: &'a dyn ModelEndpoint,
    ref_fp: &'a FingerprintRow,
    sus_fp: &'a FingerprintRow,
    /// The stored controls' ids, in the order the scan judges them.
    control_ids: &'a [Uuid],
    lost: &'a AtomicBool,
    progress: Progress<'a>,
    caps: SuspectCaps,
    /// Answers of the sequential phase counted in the progress (stored ones included).
    counted: i32,
}

impl StoreScan<'_> {
    /// An identification's scans ask one suspect: what another of them already got for
    /// `keys` is copied rather than asked again.
    async fn reuse_sibling_answers(&self, keys: &[(String, i32)]) -> Result<(), JobError> {
        let Some(group) = self.claimed.scan.identification_id else {
            return Ok(());
        };
        let copied = self
            .store
            .copy_sibling_answers(
                self.claimed.scan.id,
                &self.claimed.owner,
                group,
                self.sus_fp.id,
                keys,
            )
            .await?;
        if copied > 0 {
            tracing::debug!(scan = %self.claimed.scan.id, copied, "answers reused from the identification");
        }
        Ok(())
    }

    async fn caps(&mut self) -> Result<Capabilities, JobError> {
        let suspect = self.suspect;
        self.caps
            .of(suspect)
            .await
            .map_err(|e| JobError::endpoint(suspect, e))
    }
}

#[async_trait::async_trait]
impl AnswerSource for StoreScan<'_> {
    type Error = JobError;

    async fn answer(&mut self, probe: &Probe, sample: usize) -> Result<Observation, JobError> {
        let caps = self.caps().await?;
        self.progress.add(1).await?;
        self.counted += 1;
        // Sample indices are a probe's `samples` (a few dozen at most).
        let index = i32::try_from(sample).unwrap_or(i32::MAX);
        self.reuse_sibling_answers(&[(probe.id.clone(), index)])
            .await?;
        let stored = self
            .store
            .observation(self.sus_fp.id, &probe.id, index)
            .await?;
        if let Some(row) = stored {
            return serde_json::from_value(row.data)
                .map_err(|e| crate::store::StoreError::from(e).into());
        }
        let opts = RunOptions {
            progress: false,
            ..RunOptions::default()
        };
        let obs = fingerprint::observe(self.suspect, &caps, probe, sample, &opts).await;
        keep(self.store, self.claimed, self.sus_fp, &obs, self.lost).await?;
        Ok(obs)
    }
}

#[async_trait::async_trait]
impl ScanStore for StoreScan<'_> {
    async fn reference_print(&mut self) -> Result<Fingerprint, JobError> {
        // One scan at a time asks a reference a probe set: a second one waits and reuses.
        let turn = self
            .references
            .fingerprint_lock(&format!(
                "{}|{}",
                self.ref_fp.model_describe, self.ref_fp.probe_set_id
            ))
            .await;
        let _turn = turn.lock().await;
        reuse_reference_answers(self.store, self.claimed, self.set, self.ref_fp).await?;
        let caps = observe_side(
            self.store,
            self.claimed,
            self.set,
            self.reference,
            self.ref_fp,
            self.config,
            self.lost,
            &mut self.progress,
        )
        .await?;
        let print = assemble(self.store, self.set, self.ref_fp, caps).await?;
        self.store
            .complete_fingerprint(self.ref_fp.id, &document(&print)?)
            .await?;
        Ok(print)
    }

    async fn suspect_description(&mut self) -> Result<ModelDescription, JobError> {
        Ok(ModelDescription {
            describe: self.sus_fp.model_describe.clone(),
            capabilities: self.caps().await?,
        })
    }

    async fn suspect_print(&mut self) -> Result<Fingerprint, JobError> {
        // The side's pass counts every stored answer, those of the sequential phase too.
        self.progress.done -= self.counted;
        self.counted = 0;
        let keys: Vec<(String, i32)> = fingerprint::plan(self.set)
            .iter()
            .map(|j| (j.probe.id.clone(), j.sample_index as i32))
            .collect();
        self.reuse_sibling_answers(&keys).await?;
        observe_side(
            self.store,
            self.claimed,
            self.set,
            self.suspect,
            self.sus_fp,
            self.config,
            self.lost,
            &mut self.progress,
        )
        .await?;
        let caps = self.caps().await?;
        assemble(self.store, self.set, self.sus_fp, caps).await
    }

    async fn read_back(
        &mut self,
        whose: Whose,
        print: &Fingerprint,
    ) -> Result<Vec<AnswerScore>, JobError> {
        let id = match whose {
            Whose::Suspect => None,
            Whose::Control(i) => self.control_ids.get(i).copied(),
        };
        let scores = self.references.read_back(self.spec, id, print).await?;
        Ok(scores.as_ref().clone())
    }

    async fn suspect_done(&mut self, print: &Fingerprint, early: bool) -> Result<(), JobError> {
        if early {
            // The rest of the set will not be asked: the scan is complete at this point.
            self.progress.total = self.progress.done;
            self.progress.add(0).await?;
        }
        self.store
            .complete_fingerprint(self.sus_fp.id, &document(print)?)
            .await?;
        Ok(())
    }
}

/// A fingerprint from its stored observations, in probe-set order.
async fn assemble(
    store: &Store,
    set: &ProbeSet,
    fp: &FingerprintRow,
    caps: crate::endpoint::Capabilities,
) -> Result<Fingerprint, JobError> {
    let order: HashMap<(String, usize), usize> = fingerprint::plan(set)
        .iter()
        .enumerate()
        .map(|(i, j)| ((j.probe.id.clone(), j.sample_index), i))
        .collect();
    let mut observations = store.decoded_observations(fp.id).await?;
    observations.retain(|o| order.contains_key(&(o.probe_id.clone(), o.sample_index)));
    observations.sort_by_key(|o| order[&(o.probe_id.clone(), o.sample_index)]);
    Ok(Fingerprint::new(
        ModelDescription {
            describe: fp.model_describe.clone(),
            capabilities: caps,
        },
        ProbeSetRef::of(set),
        observations,
    ))
}

/// The stored document: the fingerprint without its observations (those live in their
/// own table, one row each).
fn document(print: &Fingerprint) -> Result<serde_json::Value, JobError> {
    let mut doc = serde_json::to_value(print).map_err(crate::store::StoreError::from)?;
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("observations".into(), serde_json::Value::Array(Vec::new()));
    }
    Ok(doc)
}
