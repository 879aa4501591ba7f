//! Schedule pages (admins): the list with a form to add one, and a schedule's history
//! of similarity over its runs.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::plots::{history, HistoryPoint};
use super::{non_empty, parse_id, parse_optional_int, render, Session, UiError};
use crate::app::{create_schedule, AppState, CreateSchedule};
use crate::store::{ModelRole, Role};

/// Runs shown in a schedule's history.
const HISTORY_RUNS: i64 = 200;

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ScheduleForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cron: String,
    #[serde(default)]
    pub suspect_url: String,
    #[serde(default)]
    pub suspect_model: String,
    #[serde(default)]
    pub suspect_secret: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub probes_per_kind: String,
    #[serde(default)]
    pub webhook_url: String,
    #[serde(default)]
    pub webhook_secret: String,
}

async fn list_page(
    state: &AppState,
    session: &Session,
    form: &ScheduleForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let schedules: Vec<minijinja::Value> = state
        .store
        .list_schedules()
        .await?
        .iter()
        .map(|s| {
            minijinja::context! {
                id => s.id.to_string(),
                name => s.name,
                cron => s.cron,
                suspect => format!("{} @ {}", s.suspect_model, s.suspect_source),
                enabled => s.enabled,
                next_run => s.next_run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                last_run => s.last_run_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            }
        })
        .collect();
    let references: Vec<String> = state
        .store
        .list_models(Some(ModelRole::Reference))
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let page = render(
        "schedules.html",
        minijinja::context! {
            me => session.view(),
            nav => "schedules",
            schedules,
            references,
            form,
            error,
        },
    )?;
    Ok((status, page).into_response())
}

pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, UiError> {
    session.caller().require(Role::Admin)?;
    let form = ScheduleForm {
        cron: "0 0 3 * * *".into(),
        ..ScheduleForm::default()
    };
    list_page(&state, &session, &form, None, StatusCode::OK).await
}

fn to_request(form: &ScheduleForm) -> Result<CreateSchedule, UiError> {
    let name = non_empty(&form.name)
        .ok_or_else(|| UiError::BadRequest("Give the schedule a name.".into()))?;
    let url = non_empty(&form.suspect_url)
        .ok_or_else(|| UiError::BadRequest("Enter the suspect's base URL.".into()))?;
    let reference = non_empty(&form.reference)
        .ok_or_else(|| UiError::BadRequest("Choose a reference model.".into()))?;
    Ok(CreateSchedule {
        name,
        cron: form.cron.trim().to_string(),
        suspect_url: Some(url),
        suspect_path: None,
        suspect_model: form.suspect_model.trim().to_string(),
        suspect_secret: non_empty(&form.suspect_secret),
        reference,
        probe_set: None,
        probes_per_kind: parse_optional_int("Probes per kind", &form.probes_per_kind)?,
        max_samples: None,
        webhook_url: non_empty(&form.webhook_url),
        webhook_secret: non_empty(&form.webhook_secret),
        drift_threshold: None,
    })
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    form: Result<Form<ScheduleForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    session.check_csrf(&form.csrf)?;
    let outcome = match to_request(&form) {
        Ok(req) => create_schedule(&state, &session.caller(), req)
            .await
            .map_err(UiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(row) => Ok(Redirect::to(&format!("/ui/schedules/{}", row.id)).into_response()),
        Err(e) if e.belongs_on_form() => {
            let status = e.status();
            list_page(&state, &session, &form, Some(e.message()), status).await
        }
        Err(e) => Err(e),
    }
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    session.caller().require(Role::Admin)?;
    let id = parse_id("schedule", &id)?;
    let schedule = state.store.get_schedule(id).await?;
    let runs = state.store.schedule_history(id, HISTORY_RUNS).await?;
    let points: Vec<HistoryPoint> = runs
        .iter()
        .map(|r| HistoryPoint {
            label: r.created_at.format("%m-%d %H:%M").to_string(),
            score: r.score,
            verdict: r.verdict.clone(),
        })
        .collect();
    let rows: Vec<minijinja::Value> = runs
        .iter()
        .rev()
        .map(|r| {
            minijinja::context! {
                scan_id => r.scan_id.to_string(),
                created => r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                status => r.status,
                verdict => r.verdict,
                score => r.score.map(|s| format!("{s:.3}")),
                confidence => r.confidence.map(|c| format!("{c:.3}")),
            }
        })
        .collect();
    Ok(render(
        "schedule.html",
        minijinja::context! {
            me => session.view(),
            nav => "schedules",
            name => schedule.name,
            cron => schedule.cron,
            suspect => format!("{} @ {}", schedule.suspect_model, schedule.suspect_source),
            next_run => schedule.next_run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            webhook => schedule.webhook_url,
            svg => history(&points),
            rows,
        },
    )?
    .into_response())
}
