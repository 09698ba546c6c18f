//! Every error the API answers, as RFC 9457 problem+json.
//!
//! **Architecture Invariant:** nothing a client sends can produce a 500: client mistakes
//! map to 4xx here, and only a broken store or a bug (logged, never echoed) gives 5xx.
//! Problem details never contain a key, a digest or a bearer credential.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_core::validate::FieldError;
use keyward_proto::Problem;
use keyward_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the detail names the field at fault.
    InvalidField {
        field: String,
        detail: String,
    },
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// 503: the store cannot be reached; the client may retry.
    Unavailable(String),
    /// 500: a bug or corrupt data. The detail is logged, not sent.
    Internal(String),
    /// 502 (gateway): the upstream is unreachable or broke off.
    BadGateway(String),
    /// 504 (gateway): the upstream did not answer in time.
    GatewayTimeout(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// This error, with the field it names (if any) placed under `prefix`: `scopes[0]`
    /// of the fourth request of a batch is `requests[3].scopes[0]`.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            ApiError::InvalidField { field, detail } => ApiError::InvalidField {
                field: format!("{prefix}{field}"),
                detail,
            },
            other => other,
        }
    }

    /// The status and the detail a client is shown (the web console renders them).
    pub fn status_and_detail(&self) -> (StatusCode, String) {
        (self.parts().0, self.detail())
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::InvalidField { .. } => {
                (StatusCode::BAD_REQUEST, "invalid-field", "Invalid request")
            }
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or unknown credential",
            ),
            ApiError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "The credential lacks the scope",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway"),
            ApiError::GatewayTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway-timeout",
                "Gateway timeout",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::InvalidField { field, detail } => format!("{field}: {detail}"),
            ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::Conflict(d)
            | ApiError::Unavailable(d)
            | ApiError::BadGateway(d)
            | ApiError::GatewayTimeout(d) => d.clone(),
            ApiError::MethodNotAllowed => "this path does not accept that method".into(),
            ApiError::PayloadTooLarge => {
                format!("the request body exceeds {} bytes", crate::BODY_LIMIT)
            }
            ApiError::UnsupportedMediaType => "send the body as application/json".into(),
            ApiError::TooManyRequests { retry_after_secs } => {
                format!("retry after {retry_after_secs} s")
            }
            // Never echo internals to the client.
            ApiError::Internal(_) => "the server could not complete the request".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        if let ApiError::Internal(why) = &self {
            tracing::error!(error = %why, "internal error");
        }
        let problem = Problem {
            type_: format!("urn:keyward:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: self.detail(),
            field: match &self {
                ApiError::InvalidField { field, .. } => Some(field.clone()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::InvalidField {
            field: e.field,
            detail: e.reason,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(d) => ApiError::Conflict(d),
            StoreError::Unavailable(d) => {
                tracing::warn!(error = %d, "store unavailable");
                ApiError::Unavailable("the store is unavailable; retry later".into())
            }
            StoreError::Corrupt(d) => ApiError::Internal(d),
        }
    }
}
