//! The suspect fields of a scan or schedule, checked once for both (and for the UI's
//! forms, which submit through the same functions).

use super::{AppError, AppState, Caller};
use crate::secrets::{self, SecretError};
use crate::store::{Role, SuspectKind};
use crate::suspect::UrlGuard;

/// Longest model name sent to a suspect.
pub const MAX_MODEL_NAME: usize = 200;

/// What a submission names as its suspect.
pub struct SuspectFields<'a> {
    pub url: Option<&'a str>,
    pub path: Option<&'a str>,
    pub model: &'a str,
    pub secret: Option<&'a str>,
}

/// The checked suspect: its kind and source as stored (a URL, or the model as typed,
/// which the worker resolves again inside the model directories).
pub fn check_suspect(
    state: &AppState,
    caller: &Caller,
    fields: &SuspectFields<'_>,
) -> Result<(SuspectKind, String), AppError> {
    let model = fields.model.trim();
    if model.len() > MAX_MODEL_NAME || model.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "suspect_model must be at most {MAX_MODEL_NAME} characters, without control characters"
        )));
    }
    match (fields.url, fields.path) {
        (Some(url), None) => {
            let parsed = UrlGuard::new(state.config.allow_private_targets)
                .check_url(url)
                .map_err(|e| AppError::BadRequest(format!("suspect_url: {e}")))?;
            if model.is_empty() {
                return Err(AppError::BadRequest(
                    "suspect_model is required: the model name the suspect endpoint serves".into(),
                ));
            }
            if let Some(name) = fields.secret {
                check_secret(caller, name, &parsed)?;
            }
            Ok((SuspectKind::Http, url.trim().to_string()))
        }
        (None, Some(path)) => {
            // Loading files or hub repos on the server is not for every submitter.
            caller.require(Role::Analyst)?;
            if fields.secret.is_some() {
                return Err(AppError::BadRequest(
                    "suspect_secret goes with suspect_url only".into(),
                ));
            }
            state
                .config
                .models
                .resolve(path)
                .map_err(|e| AppError::BadRequest(format!("suspect_path: {e}")))?;
            Ok((SuspectKind::Local, path.trim().to_string()))
        }
        _ => Err(AppError::BadRequest(
            "give exactly one of suspect_url and suspect_path".into(),
        )),
    }
}

/// A secret may be named only by the roles it allows, and only for a URL under its
/// binding. Below admin, a secret that is missing, unbound or bound elsewhere gets one
/// message, so submitters cannot list the server's secrets by trying names.
pub(super) fn check_secret(caller: &Caller, name: &str, url: &url::Url) -> Result<(), AppError> {
    let checked = secrets::bound_secret(name).and_then(|s| {
        s.check_role(caller.role)?;
        s.check_target(url)
    });
    match checked {
        Ok(()) => Ok(()),
        Err(e @ SecretError::InvalidName(_)) => Err(AppError::BadRequest(e.to_string())),
        Err(SecretError::Role { .. }) => Err(AppError::Forbidden),
        Err(e) if caller.role >= Role::Admin => Err(AppError::BadRequest(e.to_string())),
        Err(_) => Err(AppError::BadRequest(format!(
            "secret {name:?} is unknown or may not be sent to this URL"
        ))),
    }
}
