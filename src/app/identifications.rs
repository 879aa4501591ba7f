//! Identifications: which registered reference, if any, is behind a suspect. One scan per
//! reference, queued together; the workers share the suspect's answers between them, and
//! the ranking is read from their verdicts with the command line's own
//! [`crate::identify::rank_candidates`].

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::suspect::{check_suspect, SuspectFields};
use super::{reference_model, AppError, AppState, Caller};
use crate::compare::{Report, SequentialDecision};
use crate::endpoint::Capabilities;
use crate::identify::{rank_candidates, Candidate};
use crate::store::{
    IdentificationRow, ModelRole, NewIdentification, Role, ScanRow, ScanStatus, SuspectKind,
};

/// Most references one identification may hold a suspect against.
pub const MAX_REFERENCES: usize = 32;

/// An identification request: the suspect (as for a scan) and the references to tell
/// apart.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitIdentification {
    pub suspect_url: Option<String>,
    pub suspect_path: Option<String>,
    /// Model name sent to the suspect endpoint.
    #[serde(default)]
    pub suspect_model: String,
    /// Name of the server-side secret holding the suspect's API key (never the key).
    pub suspect_secret: Option<String>,
    /// References by name or id; every registered reference when absent.
    pub references: Option<Vec<String>>,
    /// Probe set, by name (`name@version`) or id; the service's default when absent.
    pub probe_set: Option<String>,
    /// Ask only the first N probes of each kind (quick identifications).
    pub probes_per_kind: Option<i32>,
    /// At most this many samples per sampling probe.
    pub max_samples: Option<i32>,
}

/// One reference's scan within an identification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberScan {
    pub scan_id: Uuid,
    pub reference: String,
    pub status: ScanStatus,
    pub error: Option<String>,
}

/// An identification as the API and the UI show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IdentificationView {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub suspect_kind: SuspectKind,
    pub suspect_source: String,
    pub suspect_model: String,
    /// `done` once every reference's scan is done; `failed` or `cancelled` when one of
    /// them ended so (the ranking then holds only the finished ones, with no answer).
    pub status: ScanStatus,
    /// The best candidate that is the reference or made from it, once all are done;
    /// `None` then means "none of these".
    pub answer: Option<String>,
    /// The finished references, ranked.
    pub candidates: Vec<Candidate>,
    pub scans: Vec<MemberScan>,
    /// Distinct probes the suspect answered, each counted once across the references.
    pub suspect_queries: i64,
    /// What the suspect's API offered: the access mode the answer was made under.
    #[schema(value_type = Option<Object>)]
    pub suspect_offered: Option<Capabilities>,
}

/// Validates and queues an identification for `caller`; returns it with its scans.
pub async fn submit_identification(
    state: &AppState,
    caller: &Caller,
    req: &SubmitIdentification,
) -> Result<(IdentificationRow, Vec<ScanRow>), AppError> {
    caller.require(Role::Submitter)?;
    let (suspect_kind, suspect_source) = check_suspect(
        state,
        caller,
        &SuspectFields {
            url: req.suspect_url.as_deref(),
            path: req.suspect_path.as_deref(),
            model: &req.suspect_model,
            secret: req.suspect_secret.as_deref(),
        },
    )?;
    let references = match &req.references {
        Some(names) => {
            let mut rows = Vec::with_capacity(names.len());
            let mut seen = HashSet::new();
            for name in names {
                let row = reference_model(state, name.trim()).await?;
                if seen.insert(row.id) {
                    rows.push(row);
                }
            }
            rows
        }
        None => state.store.list_models(Some(ModelRole::Reference)).await?,
    };
    if references.is_empty() {
        return Err(AppError::BadRequest(
            "no reference to identify against: register one, or name some in `references`".into(),
        ));
    }
    if references.len() > MAX_REFERENCES {
        return Err(AppError::BadRequest(format!(
            "at most {MAX_REFERENCES} references per identification, not {}",
            references.len()
        )));
    }
    let probe_set_spec = req
        .probe_set
        .clone()
        .unwrap_or_else(|| state.config.default_probe_set.clone());
    let probe_set = state.store.find_probe_set(&probe_set_spec).await?;
    let (row, scans) = state
        .store
        .create_identification(&NewIdentification {
            api_key_id: Some(caller.key_id),
            suspect_kind,
            suspect_source,
            suspect_model: req.suspect_model.trim().to_string(),
            suspect_secret: req.suspect_secret.clone(),
            probe_set_id: probe_set.id,
            probes_per_kind: req.probes_per_kind.filter(|n| *n > 0),
            max_samples: req.max_samples.filter(|n| *n > 0),
            reference_model_ids: references.iter().map(|r| r.id).collect(),
        })
        .await?;
    state
        .audit(
            caller,
            "identification.submit",
            format!("identification/{}", row.id),
            Some(serde_json::json!({ "scans": scans.len() })),
        )
        .await?;
    Ok((row, scans))
}

/// The identification if the caller may see it; otherwise "not found".
async fn visible_identification(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<IdentificationRow, AppError> {
    caller.require(Role::Submitter)?;
    let row = state.store.get_identification(id).await?;
    if !caller.sees_all() && row.api_key_id != Some(caller.key_id) {
        return Err(AppError::NotFound(format!("identification {id} not found")));
    }
    Ok(row)
}

/// The identification with its ranking, as far as its scans have got.
pub async fn identification_view(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<IdentificationView, AppError> {
    let row = visible_identification(state, caller, id).await?;
    let scans = state.store.identification_scans(id).await?;
    let mut members = Vec::with_capacity(scans.len());
    let mut reports = Vec::new();
    // Scans name their reference by id; the names come from one read of the models.
    let names: std::collections::HashMap<Uuid, String> = state
        .store
        .list_models(Some(ModelRole::Reference))
        .await?
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    for scan in &scans {
        let reference = match names.get(&scan.reference_model_id) {
            Some(name) => name.clone(),
            None => state.store.get_model(scan.reference_model_id).await?.name,
        };
        if let Some(report) = finished_report(scan) {
            reports.push((reference.clone(), report));
        }
        members.push(MemberScan {
            scan_id: scan.id,
            reference,
            status: scan.status,
            error: scan.error.clone(),
        });
    }
    let status = overall_status(&scans);
    let suspect_offered = reports
        .iter()
        .find_map(|(_, r)| r.suspect.capabilities.clone());
    let mut candidates: Vec<Candidate> = reports
        .iter()
        .map(|(name, report)| Candidate::from_report(name, None, report, decided_early(report)))
        .collect();
    let best = rank_candidates(&mut candidates);
    Ok(IdentificationView {
        id: row.id,
        created_at: row.created_at,
        suspect_kind: row.suspect_kind,
        suspect_source: row.suspect_source,
        suspect_model: row.suspect_model,
        status,
        answer: (status == ScanStatus::Done).then_some(best).flatten(),
        candidates,
        scans: members,
        suspect_queries: state.store.identification_queries(id).await?,
        suspect_offered,
    })
}

/// The caller's identifications (everyone's for analysts), newest first.
pub async fn list_identifications(
    state: &AppState,
    caller: &Caller,
    limit: i64,
) -> Result<Vec<IdentificationView>, AppError> {
    caller.require(Role::Submitter)?;
    let rows = state
        .store
        .list_identifications((!caller.sees_all()).then_some(caller.key_id), limit)
        .await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(identification_view(state, caller, row.id).await?);
    }
    Ok(views)
}

/// Cancels the identification's scans that have not finished.
pub async fn cancel_identification(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<IdentificationView, AppError> {
    visible_identification(state, caller, id).await?;
    for scan in state.store.identification_scans(id).await? {
        if !scan.status.is_final() {
            state.store.cancel_scan(scan.id).await?;
        }
    }
    state
        .audit(
            caller,
            "identification.cancel",
            format!("identification/{id}"),
            None,
        )
        .await?;
    identification_view(state, caller, id).await
}

/// The report of a scan that is done.
fn finished_report(scan: &ScanRow) -> Option<Report> {
    if scan.status != ScanStatus::Done {
        return None;
    }
    let json = scan.report.as_ref()?;
    match serde_json::from_value(json.clone()) {
        Ok(report) => Some(report),
        Err(e) => {
            tracing::warn!(scan = %scan.id, error = %e, "stored report does not parse");
            None
        }
    }
}

/// A scan's sequential test said `identical` on the answers the report was judged on:
/// it stopped before the whole set.
fn decided_early(report: &Report) -> bool {
    report
        .sequential
        .as_ref()
        .is_some_and(|s| s.decision == SequentialDecision::Identical)
        && report.queries.sequential == Some(report.queries.suspect)
}

/// One status for the whole: running while any scan is, then failed or cancelled if
/// any ended so, done when all are.
fn overall_status(scans: &[ScanRow]) -> ScanStatus {
    let any = |s: ScanStatus| scans.iter().any(|x| x.status == s);
    if any(ScanStatus::Running)
        || (any(ScanStatus::Queued) && !scans.iter().all(|x| x.status == ScanStatus::Queued))
    {
        ScanStatus::Running
    } else if any(ScanStatus::Queued) {
        ScanStatus::Queued
    } else if any(ScanStatus::Failed) {
        ScanStatus::Failed
    } else if any(ScanStatus::Cancelled) {
        ScanStatus::Cancelled
    } else {
        ScanStatus::Done
    }
}
