//! The models page (analysts): registered references, suspects and controls, and a form
//! to register one, a local file or a reference its owner serves behind a URL.

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{non_empty, render, Session, UiError};
use crate::app::{register_model, AppState};
use crate::store::{ModelKind, ModelRole, NewModel, Role};

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ModelForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub served_model: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub description: String,
}

async fn page(
    state: &AppState,
    session: &Session,
    form: &ModelForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let models: Vec<minijinja::Value> = state
        .store
        .list_models(None)
        .await?
        .into_iter()
        .map(|m| {
            let source = match m.kind {
                ModelKind::Local => crate::model::public_source(&m.source),
                ModelKind::Http => m.source.clone(),
            };
            minijinja::context! {
                name => m.name,
                role => m.role.as_str(),
                kind => m.kind.as_str(),
                source,
                served_model => m.served_model,
                description => m.description,
            }
        })
        .collect();
    let page = render(
        "models.html",
        minijinja::context! {
            me => session.view(),
            nav => "models",
            models,
            form,
            error,
        },
    )?;
    Ok((status, page).into_response())
}

pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, UiError> {
    session.caller().require(Role::Analyst)?;
    let form = ModelForm {
        role: "reference".into(),
        kind: "http".into(),
        ..ModelForm::default()
    };
    page(&state, &session, &form, None, StatusCode::OK).await
}

fn to_request(form: &ModelForm) -> Result<NewModel, UiError> {
    let role = match form.role.as_str() {
        "reference" => ModelRole::Reference,
        "suspect" => ModelRole::Suspect,
        "control" => ModelRole::Control,
        _ => return Err(UiError::BadRequest("Choose a role.".into())),
    };
    let kind = match form.kind.as_str() {
        "http" => ModelKind::Http,
        "local" => ModelKind::Local,
        _ => return Err(UiError::BadRequest("Choose where the model lives.".into())),
    };
    Ok(NewModel {
        name: form.name.trim().to_string(),
        role,
        kind,
        source: form.source.trim().to_string(),
        description: form.description.trim().to_string(),
        served_model: form.served_model.trim().to_string(),
        secret: non_empty(&form.secret),
    })
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    form: Result<Form<ModelForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    session.check_csrf(&form.csrf)?;
    let outcome = match to_request(&form) {
        Ok(req) => register_model(&state, &session.caller(), req)
            .await
            .map_err(UiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(_) => Ok(Redirect::to("/ui/models").into_response()),
        Err(e) if e.belongs_on_form() => {
            let status = e.status();
            page(&state, &session, &form, Some(e.message()), status).await
        }
        Err(e) => Err(e),
    }
}
