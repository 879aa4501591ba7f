//! Errors as OpenAI-style JSON bodies: `{"error": {"message", "type", "code"}}`.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::model::{ModelError, QueueError};

#[derive(Debug)]
pub struct ServeError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub extra: Option<serde_json::Value>,
}

impl ServeError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            extra: None,
        }
    }
}

impl From<JsonRejection> for ServeError {
    fn from(r: JsonRejection) -> Self {
        Self::bad_request(format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueueError> for ServeError {
    fn from(e: QueueError) -> Self {
        let status = match e {
            QueueError::Full(_) => StatusCode::TOO_MANY_REQUESTS,
            QueueError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self {
            status,
            kind: "rate_limit_error",
            message: e.to_string(),
            extra: None,
        }
    }
}

impl From<ModelError> for ServeError {
    fn from(e: ModelError) -> Self {
        match &e {
            ModelError::ContextOverflow {
                prompt,
                max_tokens,
                context,
            } => Self {
                status: StatusCode::BAD_REQUEST,
                kind: "exceed_context_size_error",
                message: e.to_string(),
                extra: Some(
                    json!({"n_prompt_tokens": prompt, "n_max_tokens": max_tokens, "n_ctx": context}),
                ),
            },
            ModelError::BadInput(_) | ModelError::Template(_) | ModelError::Tokenizer(_) => {
                Self::bad_request(e.to_string())
            }
            _ => {
                tracing::error!(error = %e, "inference failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "server_error",
                    message: e.to_string(),
                    extra: None,
                }
            }
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "code": self.status.as_u16(),
            "message": self.message,
            "type": self.kind,
        });
        if let (Some(extra), Some(obj)) = (self.extra, body.as_object_mut()) {
            if let Some(e) = extra.as_object() {
                obj.extend(e.clone());
            }
        }
        let mut resp = (self.status, Json(json!({ "error": body }))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }
}
