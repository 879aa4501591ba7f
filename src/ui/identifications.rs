//! Identification pages: the list with its submission form, and one identification with
//! its ranking and each reference's scan.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::scans::CsrfOnly;
use super::{non_empty, parse_id, parse_optional_int, render, Session, UiError, PAGE_ROWS};
use crate::app::{
    cancel_identification, identification_view, list_identifications, submit_identification,
    AppState, IdentificationView, SubmitIdentification,
};
use crate::store::ModelRole;

type FormResult<T> = Result<Form<T>, axum::extract::rejection::FormRejection>;

/// What the form holds (kept to refill it after an error).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct IdentificationForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub suspect_url: String,
    #[serde(default)]
    pub suspect_model: String,
    #[serde(default)]
    pub suspect_secret: String,
    #[serde(default)]
    pub probes_per_kind: String,
}

/// An identification as a row of the list or the head of its page.
#[derive(Debug, Serialize)]
struct Line {
    id: String,
    created: String,
    suspect: String,
    status: String,
    answer: String,
    decided: bool,
    queries: i64,
    active: bool,
}

fn line(v: &IdentificationView) -> Line {
    let done = v.status == crate::store::ScanStatus::Done;
    Line {
        id: v.id.to_string(),
        created: v.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        suspect: if v.suspect_model.is_empty() {
            v.suspect_source.clone()
        } else {
            format!("{} @ {}", v.suspect_model, v.suspect_source)
        },
        status: v.status.as_str().to_string(),
        answer: match (&v.answer, done) {
            (Some(name), _) => name.clone(),
            (None, true) => "none of these".into(),
            (None, false) => "—".into(),
        },
        decided: done,
        queries: v.suspect_queries,
        active: !v.status.is_final(),
    }
}

async fn list_page(
    state: &AppState,
    session: &Session,
    form: &IdentificationForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let views = list_identifications(state, &session.caller(), PAGE_ROWS).await?;
    let rows: Vec<Line> = views.iter().map(line).collect();
    let references: Vec<String> = state
        .store
        .list_models(Some(ModelRole::Reference))
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let page = render(
        "identifications.html",
        minijinja::context! {
            me => session.view(),
            nav => "identify",
            refresh => rows.iter().any(|r| r.active) && error.is_none(),
            rows,
            references,
            form,
            error,
        },
    )?;
    Ok((status, page).into_response())
}

pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, UiError> {
    list_page(
        &state,
        &session,
        &IdentificationForm::default(),
        None,
        StatusCode::OK,
    )
    .await
}

fn to_request(form: &IdentificationForm) -> Result<SubmitIdentification, UiError> {
    let url = non_empty(&form.suspect_url)
        .ok_or_else(|| UiError::BadRequest("Enter the suspect's base URL.".into()))?;
    Ok(SubmitIdentification {
        suspect_url: Some(url),
        suspect_model: form.suspect_model.trim().to_string(),
        suspect_secret: non_empty(&form.suspect_secret),
        probes_per_kind: parse_optional_int("Probes per kind", &form.probes_per_kind)?,
        ..SubmitIdentification::default()
    })
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    form: FormResult<IdentificationForm>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    session.check_csrf(&form.csrf)?;
    let outcome = match to_request(&form) {
        Ok(req) => submit_identification(&state, &session.caller(), &req)
            .await
            .map_err(UiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((row, _)) => {
            Ok(Redirect::to(&format!("/ui/identifications/{}", row.id)).into_response())
        }
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
    let id = parse_id("identification", &id)?;
    let view = identification_view(&state, &session.caller(), id).await?;
    let head = line(&view);
    let candidates: Vec<minijinja::Value> = view
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let scan = view
                .scans
                .iter()
                .find(|s| s.reference == c.reference)
                .map(|s| s.scan_id.to_string());
            minijinja::context! {
                rank => i + 1,
                reference => c.reference,
                verdict => c.verdict.as_str(),
                p_value => c.p_value.map(|p| format!("{p:.2e}")),
                confidence => format!("{:.3}", c.confidence),
                queries => c.queries,
                decided_early => c.decided_early,
                reason => c.reasons.first(),
                scan,
            }
        })
        .collect();
    let scans: Vec<minijinja::Value> = view
        .scans
        .iter()
        .map(|s| {
            minijinja::context! {
                id => s.scan_id.to_string(),
                reference => s.reference,
                status => s.status.as_str(),
                error => s.error,
            }
        })
        .collect();
    Ok(render(
        "identification.html",
        minijinja::context! {
            me => session.view(),
            nav => "identify",
            ident => head,
            offered => view.suspect_offered.as_ref().map(|c| c.summary()),
            candidates,
            scans,
            refresh => !view.status.is_final(),
        },
    )?
    .into_response())
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: FormResult<CsrfOnly>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    session.check_csrf(&form.csrf)?;
    let id = parse_id("identification", &id)?;
    cancel_identification(&state, &session.caller(), id).await?;
    Ok(Redirect::to(&format!("/ui/identifications/{id}")).into_response())
}
