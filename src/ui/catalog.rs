//! Fingerprint pages: browse and filter, compare any two, read a comparison, and the
//! similarity map of every compared fingerprint against each reference.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::plots::{heatmap, HeatCell};
use super::report_view::report_view;
use super::{next_href, non_empty, parse_id, render, Session, UiError, PAGE_ROWS};
use crate::app::{compare_fingerprints, AppState};
use crate::compare::Report;
use crate::store::{Cursor, FingerprintFilter, FingerprintRow, Role};

#[derive(Debug, Deserialize)]
pub struct FingerprintQuery {
    #[serde(default)]
    pub model: String,
    /// "", "yes" or "no".
    #[serde(default)]
    pub control: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub cursor: String,
}

#[derive(Debug, Serialize)]
struct FingerprintLine {
    id: String,
    short: String,
    created: String,
    describe: String,
    side: String,
    status: String,
    observations: i32,
    errors: i32,
    control: bool,
    scan_id: Option<String>,
}

fn fingerprint_line(f: &FingerprintRow) -> FingerprintLine {
    FingerprintLine {
        id: f.id.to_string(),
        short: f.id.simple().to_string()[..8].to_string(),
        created: f.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        describe: f.model_describe.clone(),
        side: f.side.as_str().to_string(),
        status: f.status.clone(),
        observations: f.observation_count,
        errors: f.error_count,
        control: f.is_control,
        scan_id: f.scan_id.map(|s| s.to_string()),
    }
}

pub async fn fingerprints(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<FingerprintQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    session.caller().require(Role::Analyst)?;
    let Query(q) = query?;
    let model_id = non_empty(&q.model)
        .map(|m| parse_id("model", &m))
        .transpose()?;
    let is_control = match q.control.as_str() {
        "" => None,
        "yes" => Some(true),
        "no" => Some(false),
        other => {
            return Err(UiError::BadRequest(format!(
                "control must be yes or no, not {other:?}"
            )))
        }
    };
    let status = match q.status.as_str() {
        "" => None,
        s @ ("partial" | "complete") => Some(s.to_string()),
        other => {
            return Err(UiError::BadRequest(format!(
                "status must be partial or complete, not {other:?}"
            )))
        }
    };
    let page = state
        .store
        .list_fingerprints(&FingerprintFilter {
            model_id,
            probe_set_id: None,
            is_control,
            status,
            api_key_id: None,
            cursor: non_empty(&q.cursor)
                .map(|c| Cursor::decode(&c))
                .transpose()?,
            limit: PAGE_ROWS,
            without_document: true,
        })
        .await?;
    let models: Vec<minijinja::Value> = state
        .store
        .list_models(None)
        .await?
        .iter()
        .map(|m| minijinja::context! { id => m.id.to_string(), name => m.name, role => m.role.as_str() })
        .collect();
    let rows: Vec<FingerprintLine> = page.items.iter().map(fingerprint_line).collect();
    Ok(render(
        "fingerprints.html",
        minijinja::context! {
            me => session.view(),
            nav => "fingerprints",
            rows,
            models,
            next_href => next_href(
                "/ui/fingerprints",
                &[("model", &q.model), ("control", &q.control), ("status", &q.status)],
                page.next,
            ),
            model => q.model,
            control => q.control,
            status => q.status,
        },
    )?
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct CompareQuery {
    /// The reference side.
    #[serde(default)]
    pub a: String,
    /// The suspect side.
    #[serde(default)]
    pub b: String,
    #[serde(default)]
    pub csrf: String,
}

async fn compare_page(
    state: &AppState,
    session: &Session,
    q: &CompareQuery,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let mut sides = Vec::new();
    let mut earlier = Vec::new();
    let mut error = error;
    let ids = (non_empty(&q.a), non_empty(&q.b));
    if let (Some(a), Some(b)) = &ids {
        match (Uuid::parse_str(a), Uuid::parse_str(b)) {
            (Ok(a), Ok(b)) => {
                for id in [a, b] {
                    match state.store.get_fingerprint(id).await {
                        Ok(f) => sides.push(fingerprint_line(&f)),
                        Err(crate::store::StoreError::NotFound(_)) => {
                            error.get_or_insert(format!("There is no fingerprint {id}."));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                earlier = state
                    .store
                    .comparisons_between(a, b, 10)
                    .await?
                    .iter()
                    .map(|c| {
                        minijinja::context! {
                            id => c.id.to_string(),
                            verdict => c.verdict,
                            created => c.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        }
                    })
                    .collect();
            }
            _ => {
                error.get_or_insert("Both fingerprint ids must be ids (UUIDs).".into());
            }
        }
    }
    let page = render(
        "compare.html",
        minijinja::context! {
            me => session.view(),
            nav => "fingerprints",
            a => q.a.trim(),
            b => q.b.trim(),
            sides,
            earlier,
            error,
        },
    )?;
    Ok((status, page).into_response())
}

pub async fn compare_form(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<CompareQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    session.caller().require(Role::Analyst)?;
    let Query(q) = query?;
    compare_page(&state, &session, &q, None, StatusCode::OK).await
}

pub async fn compare(
    State(state): State<AppState>,
    session: Session,
    form: Result<Form<CompareQuery>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(q) = form?;
    session.check_csrf(&q.csrf)?;
    let caller = session.caller();
    caller.require(Role::Analyst)?;
    let ids = match (Uuid::parse_str(q.a.trim()), Uuid::parse_str(q.b.trim())) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(UiError::BadRequest(
            "Give two fingerprint ids (pick them in the fingerprint list).".into(),
        )),
    };
    let outcome = match ids {
        Ok((a, b)) if a == b => Err(UiError::BadRequest(
            "Pick two different fingerprints.".into(),
        )),
        Ok((a, b)) => compare_fingerprints(&state, &caller, a, b)
            .await
            .map_err(UiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(row) => Ok(Redirect::to(&format!("/ui/comparisons/{}", row.id)).into_response()),
        Err(e) if e.belongs_on_form() => {
            let status = e.status();
            compare_page(&state, &session, &q, Some(e.message()), status).await
        }
        Err(e) => Err(e),
    }
}

pub async fn comparison(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    session.caller().require(Role::Analyst)?;
    let id = parse_id("comparison", &id)?;
    let row = state.store.get_comparison(id).await?;
    let report = serde_json::from_value::<Report>(row.report.clone()).map_err(|e| {
        UiError::BadRequest(format!("this comparison's report cannot be read: {e}"))
    })?;
    Ok(render(
        "comparison.html",
        minijinja::context! {
            me => session.view(),
            nav => "fingerprints",
            id => id.to_string(),
            reference_id => row.reference_fingerprint_id.to_string(),
            suspect_id => row.suspect_fingerprint_id.to_string(),
            scan_id => row.scan_id.map(|s| s.to_string()),
            created => row.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            report => report_view(&report),
        },
    )?
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct MapQuery {
    #[serde(default)]
    pub cursor: String,
}

pub async fn map(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<MapQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    session.caller().require(Role::Analyst)?;
    let Query(q) = query?;
    let page = state
        .store
        .similarity_map(
            non_empty(&q.cursor)
                .map(|c| Cursor::decode(&c))
                .transpose()?,
            PAGE_ROWS,
        )
        .await?;
    // Columns: the references met on this page, by name.
    let mut columns: BTreeMap<String, usize> = BTreeMap::new();
    for cell in page.items.iter().flatten() {
        columns.entry(cell.reference_name.clone()).or_insert(0);
    }
    for (i, v) in columns.values_mut().enumerate() {
        *v = i;
    }
    let mut labels = Vec::new();
    let mut cells = Vec::new();
    for row in &page.items {
        let first = &row[0];
        // The id first: descriptions (URLs) are long and get clipped.
        labels.push(format!(
            "{} · {}",
            &first.fingerprint_id.simple().to_string()[..8],
            first.model_describe
        ));
        let mut line = vec![HeatCell::default(); columns.len()];
        for cell in row {
            if let Some(&j) = columns.get(&cell.reference_name) {
                line[j] = HeatCell {
                    score: cell.score,
                    verdict: cell.verdict.clone(),
                    href: Some(format!("/ui/comparisons/{}", cell.comparison_id)),
                };
            }
        }
        cells.push(line);
    }
    let names: Vec<String> = columns.keys().cloned().collect();
    let svg = (!labels.is_empty()).then(|| heatmap(&labels, &names, &cells));
    Ok(render(
        "map.html",
        minijinja::context! {
            me => session.view(),
            nav => "map",
            svg,
            rows => labels.len(),
            references => names,
            next_href => next_href("/ui/map", &[], page.next),
        },
    )?
    .into_response())
}
