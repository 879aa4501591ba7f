//! Sign-in with an API key, then a session cookie. The cookie is HttpOnly and
//! SameSite=Strict; every form of a session also carries the session's CSRF token
//! (synchronizer token), and the sign-in form a double-submit token of its own.

use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{render, UiError};
use crate::app::{AppState, Caller};
use crate::store::{random_token, Role};

pub const SESSION_COOKIE: &str = "pv_session";
const LOGIN_COOKIE: &str = "pv_login";
/// How long a sign-in lasts.
const SESSION_HOURS: i64 = 12;

/// The signed-in analyst.
#[derive(Debug, Clone)]
pub struct Session {
    pub key_id: Uuid,
    pub role: Role,
    pub key_name: String,
    pub csrf: String,
}

impl Session {
    pub fn caller(&self) -> Caller {
        Caller {
            key_id: self.key_id,
            role: self.role,
        }
    }

    /// Refuses a form whose token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), UiError> {
        if same_token(token, &self.csrf) {
            Ok(())
        } else {
            Err(UiError::Csrf)
        }
    }

    /// What every page's header shows.
    pub fn view(&self) -> minijinja::Value {
        minijinja::context! {
            name => self.key_name,
            role => self.role.as_str(),
            csrf => self.csrf,
            analyst => self.role >= Role::Analyst,
            admin => self.role >= Role::Admin,
        }
    }
}

/// Compares digests, so the time taken says nothing about the secret.
fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let jar = CookieJar::from_headers(&parts.headers);
        let token = jar
            .get(SESSION_COOKIE)
            .map(|c| c.value().to_string())
            .ok_or(UiError::SignIn)?;
        let row = state
            .store
            .find_session(&token)
            .await?
            .ok_or(UiError::SignIn)?;
        state.check_rate_limit(row.api_key_id)?;
        Ok(Session {
            key_id: row.api_key_id,
            role: row.role,
            key_name: row.key_name,
            csrf: row.csrf_token,
        })
    }
}

fn cookie(
    state: &AppState,
    name: &'static str,
    value: String,
    max_age_secs: i64,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.secure_cookies)
        .max_age(time_secs(max_age_secs))
        .build()
}

fn time_secs(secs: i64) -> time::Duration {
    time::Duration::seconds(secs)
}

/// The sign-in form.
pub async fn login_page(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Response, UiError> {
    let token = random_token();
    let page = render(
        "login.html",
        minijinja::context! { csrf => token, error => minijinja::Value::UNDEFINED },
    )?;
    Ok((jar.add(cookie(&state, LOGIN_COOKIE, token, 3600)), page).into_response())
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub api_key: String,
    #[serde(default)]
    pub csrf: String,
}

/// Checks the key and opens a session.
pub async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    let expected = jar.get(LOGIN_COOKIE).map(|c| c.value().to_string());
    if !expected.is_some_and(|t| same_token(&form.csrf, &t)) {
        return Err(UiError::Csrf);
    }
    let again = |message: &str| -> Result<Response, UiError> {
        let token = random_token();
        let page = render(
            "login.html",
            minijinja::context! { csrf => token, error => message },
        )?;
        Ok((
            axum::http::StatusCode::UNAUTHORIZED,
            jar.clone().add(cookie(&state, LOGIN_COOKIE, token, 3600)),
            page,
        )
            .into_response())
    };
    let key = form.api_key.trim();
    if key.is_empty() {
        return again("Enter your API key.");
    }
    let Some(row) = state.store.find_api_key(key).await? else {
        return again("That API key is not valid, or it was revoked.");
    };
    let session = state
        .store
        .create_session(row.id, chrono::Duration::hours(SESSION_HOURS))
        .await?;
    state
        .store
        .audit(
            Some(row.id),
            "ui.sign_in",
            &format!("api_key/{}", row.id),
            None,
        )
        .await?;
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path("/"))
        .add(cookie(
            &state,
            SESSION_COOKIE,
            session,
            SESSION_HOURS * 3600,
        ));
    Ok((jar, Redirect::to("/ui/scans")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Ends the session.
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    jar: CookieJar,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(form) = form?;
    session.check_csrf(&form.csrf)?;
    if let Some(c) = jar.get(SESSION_COOKIE) {
        state.store.delete_session(c.value()).await?;
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    Ok((jar, Redirect::to("/ui/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("", ""));
    }
}
