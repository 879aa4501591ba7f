//! Registering a model (reference, suspect or control), for the API and the UI alike.

use super::suspect::{check_secret, MAX_MODEL_NAME};
use super::{AppError, AppState, Caller};
use crate::store::{ModelKind, ModelRole, ModelRow, NewModel, Role};
use crate::suspect::UrlGuard;

/// Checks and stores `model`. A local model is stored resolved, so the worker loads
/// exactly what was checked here; a model behind a URL (a reference its owner serves,
/// as vLLM or an internal API would) names the model its endpoint serves and, when it
/// needs a key, the server-side secret bound to that URL.
pub async fn register_model(
    state: &AppState,
    caller: &Caller,
    mut model: NewModel,
) -> Result<ModelRow, AppError> {
    caller.require(Role::Analyst)?;
    if model.name.trim().is_empty() || model.source.trim().is_empty() {
        return Err(AppError::BadRequest("name and source are required".into()));
    }
    let served = model.served_model.trim().to_string();
    if served.len() > MAX_MODEL_NAME || served.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "served_model must be at most {MAX_MODEL_NAME} characters, without control characters"
        )));
    }
    model.served_model = served;
    match model.kind {
        ModelKind::Http => {
            let url = UrlGuard::new(state.config.allow_private_targets)
                .check_url(&model.source)
                .map_err(|e| AppError::BadRequest(format!("source: {e}")))?;
            if model.role == ModelRole::Reference && model.served_model.is_empty() {
                return Err(AppError::BadRequest(
                    "served_model is required for a reference behind a URL: the model name its endpoint serves"
                        .into(),
                ));
            }
            if let Some(name) = &model.secret {
                check_secret(caller, name, &url)?;
            }
            model.source = model.source.trim().to_string();
        }
        ModelKind::Local => {
            if model.secret.is_some() || !model.served_model.is_empty() {
                return Err(AppError::BadRequest(
                    "served_model and secret go with kind http only".into(),
                ));
            }
            model.source = state
                .config
                .models
                .resolve(&model.source)
                .map_err(|e| AppError::BadRequest(format!("source: {e}")))?;
        }
    }
    let row = state.store.create_model(&model).await?;
    state
        .audit(caller, "model.create", format!("model/{}", row.id), None)
        .await?;
    Ok(row)
}
