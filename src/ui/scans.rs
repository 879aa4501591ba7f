//! Scan pages: the list, the submission form, one scan with its verdict and evidence.

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::report_view::report_view;
use super::{
    next_href, non_empty, parse_id, parse_optional_int, render, Session, UiError, PAGE_ROWS,
};
use crate::app::{cancel_scan, submit_scan, visible_scan, AppState, SubmitScan};
use crate::compare::Report;
use crate::store::{random_token, Cursor, ModelRole, ScanFilter, ScanRow, ScanStatus};

type FormResult<T> = Result<Form<T>, axum::extract::rejection::FormRejection>;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub verdict: String,
    #[serde(default)]
    pub cursor: String,
}

/// A scan as a row of the list.
#[derive(Debug, Serialize)]
struct ScanLine {
    id: String,
    created: String,
    suspect: String,
    status: String,
    done: i32,
    total: i32,
    percent: i64,
    verdict: Option<String>,
    confidence: Option<String>,
    active: bool,
}

fn scan_line(s: &ScanRow) -> ScanLine {
    let percent = if s.progress_total > 0 {
        (100 * s.progress_done as i64 / s.progress_total as i64).clamp(0, 100)
    } else {
        0
    };
    ScanLine {
        id: s.id.to_string(),
        created: s.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        suspect: if s.suspect_model.is_empty() {
            s.suspect_source.clone()
        } else {
            format!("{} @ {}", s.suspect_model, s.suspect_source)
        },
        status: s.status.as_str().to_string(),
        done: s.progress_done,
        total: s.progress_total,
        percent,
        verdict: s.verdict.clone(),
        confidence: s
            .report
            .as_ref()
            .and_then(|r| r.get("confidence"))
            .and_then(|c| c.as_f64())
            .map(|c| format!("{c:.3}")),
        active: !s.status.is_final(),
    }
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = query?;
    let status = match non_empty(&q.status) {
        Some(s) => Some(
            ScanStatus::parse(&s)
                .ok_or_else(|| UiError::BadRequest(format!("unknown status {s:?}")))?,
        ),
        None => None,
    };
    let cursor = non_empty(&q.cursor)
        .map(|c| Cursor::decode(&c))
        .transpose()?;
    let caller = session.caller();
    let page = state
        .store
        .list_scans(&ScanFilter {
            api_key_id: (!caller.sees_all()).then_some(caller.key_id),
            status,
            verdict: non_empty(&q.verdict),
            reference_model_id: None,
            since: None,
            until: None,
            cursor,
            limit: PAGE_ROWS,
        })
        .await?;
    let scans: Vec<ScanLine> = page.items.iter().map(scan_line).collect();
    let refresh = scans.iter().any(|s| s.active);
    Ok(render(
        "scans.html",
        minijinja::context! {
            me => session.view(),
            nav => "scans",
            scans,
            refresh,
            next_href => next_href("/ui/scans", &[("status", &q.status), ("verdict", &q.verdict)], page.next),
            status => q.status,
            verdict => q.verdict,
        },
    )?
    .into_response())
}

/// What the submission form holds (kept to refill it after an error).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ScanForm {
    #[serde(default)]
    pub csrf: String,
    /// Makes a double-clicked submit one scan (used as the Idempotency-Key).
    #[serde(default)]
    pub form_token: String,
    #[serde(default)]
    pub suspect_url: String,
    #[serde(default)]
    pub suspect_model: String,
    #[serde(default)]
    pub suspect_secret: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub probe_set: String,
    #[serde(default)]
    pub probes_per_kind: String,
    /// A checkbox: present ("on") when ticked.
    pub early_stop: Option<String>,
}

async fn form_page(
    state: &AppState,
    session: &Session,
    form: &ScanForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let references: Vec<String> = state
        .store
        .list_models(Some(ModelRole::Reference))
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let probe_sets: Vec<String> = state
        .store
        .list_probe_sets()
        .await?
        .into_iter()
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    let page = render(
        "scan_new.html",
        minijinja::context! {
            me => session.view(),
            nav => "new",
            form,
            references,
            probe_sets,
            default_probe_set => state.config.default_probe_set,
            error,
        },
    )?;
    Ok((status, page).into_response())
}

pub async fn new_form(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, UiError> {
    let form = ScanForm {
        form_token: random_token(),
        suspect_model: String::new(),
        early_stop: Some("on".into()),
        ..ScanForm::default()
    };
    form_page(&state, &session, &form, None, StatusCode::OK).await
}

/// Checks the form and turns it into the API's request.
fn to_request(form: &ScanForm) -> Result<SubmitScan, UiError> {
    let url = non_empty(&form.suspect_url)
        .ok_or_else(|| UiError::BadRequest("Enter the suspect's base URL.".into()))?;
    let reference = non_empty(&form.reference)
        .ok_or_else(|| UiError::BadRequest("Choose a reference model.".into()))?;
    Ok(SubmitScan {
        suspect_url: Some(url),
        suspect_path: None,
        suspect_model: form.suspect_model.trim().to_string(),
        suspect_secret: non_empty(&form.suspect_secret),
        reference,
        probe_set: non_empty(&form.probe_set),
        probes_per_kind: parse_optional_int("Probes per kind", &form.probes_per_kind)?,
        max_samples: None,
        early_stop: Some(form.early_stop.is_some()),
    })
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    form: FormResult<ScanForm>,
) -> Result<Response, UiError> {
    let Form(mut form) = form?;
    session.check_csrf(&form.csrf)?;
    let outcome = match to_request(&form) {
        Ok(req) => submit_scan(&state, &session.caller(), &req, non_empty(&form.form_token))
            .await
            .map_err(UiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((scan, _)) => Ok(Redirect::to(&format!("/ui/scans/{}", scan.id)).into_response()),
        // Input problems go back to the form, filled in as it was, with the reason.
        Err(e) if e.belongs_on_form() => {
            let status = e.status();
            if form.form_token.is_empty() {
                form.form_token = random_token();
            }
            form_page(&state, &session, &form, Some(e.message()), status).await
        }
        Err(e) => Err(e),
    }
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let id = parse_id("scan", &id)?;
    let scan = visible_scan(&state, &session.caller(), id).await?;
    let reference = state.store.get_model(scan.reference_model_id).await?;
    let fingerprints: Vec<minijinja::Value> = state
        .store
        .scan_fingerprints(id)
        .await?
        .iter()
        .map(|f| {
            minijinja::context! {
                id => f.id.to_string(),
                side => f.side.as_str(),
                status => f.status,
                observations => f.observation_count,
                errors => f.error_count,
            }
        })
        .collect();
    let report = match &scan.report {
        Some(json) => match serde_json::from_value::<Report>(json.clone()) {
            Ok(r) => Some(report_view(&r)),
            Err(e) => {
                tracing::warn!(scan = %id, error = %e, "stored report does not parse");
                None
            }
        },
        None => None,
    };
    let line = scan_line(&scan);
    Ok(render(
        "scan.html",
        minijinja::context! {
            me => session.view(),
            nav => "scans",
            scan => line,
            reference => reference.name,
            error => scan.error,
            attempts => scan.attempts,
            early_stop => scan.early_stop,
            schedule_id => scan.schedule_id.map(|s| s.to_string()),
            report,
            fingerprints,
            refresh => !scan.status.is_final(),
        },
    )?
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: FormResult<CsrfOnly>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    session.check_csrf(&form.csrf)?;
    let id = parse_id("scan", &id)?;
    cancel_scan(&state, &session.caller(), id).await?;
    Ok(Redirect::to(&format!("/ui/scans/{id}")).into_response())
}
