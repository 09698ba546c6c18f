//! Request extractors whose rejections are problem+json naming the field at fault,
//! instead of axum's plain-text defaults.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON body. Errors name the JSON path of the bad field (`rate_limits[0].limit`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE)
            && !accepts_content_type(ct.to_str().unwrap_or(""))
        {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::field("body", "the request body could not be read")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Whether a body of this `Content-Type` is read as JSON. Lenient: curl's default form
/// type is accepted too, since scripts forget `-H`. Compared without case and without
/// a copy: every verify goes through here.
fn accepts_content_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim();
    let ends_with_json = essence.len() >= 5
        && essence.is_char_boundary(essence.len() - 5)
        && essence[essence.len() - 5..].eq_ignore_ascii_case("+json");
    essence.eq_ignore_ascii_case("application/json")
        || ends_with_json
        || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        || essence.is_empty()
}

/// A JSON body that may be absent (an empty body means `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::field("body", "the request body could not be read")
            }
        })?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::field(
            "body",
            "the request body is empty; expected a JSON object",
        ));
    }
    // The common case, a valid body, skips the path bookkeeping; only a body that fails
    // is parsed again to name the field at fault.
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            // serde names missing and unknown fields in the message: `owner`.
            backticked(&inner).unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        ApiError::field(field, inner)
    })?;
    de.end()
        .map_err(|e| ApiError::field("body", format!("trailing characters: {e}")))?;
    Ok(value)
}

fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

/// Query parameters, with errors naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let inner = e.inner().to_string();
                let path = e.path().to_string();
                let field = if path == "." || path.is_empty() {
                    backticked(&inner).unwrap_or_else(|| "query".to_owned())
                } else {
                    path
                };
                ApiError::field(field, inner)
            })
    }
}

/// An `{id}` path segment. An id that is not a UUID names nothing we have: 404.
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound("no such id".into()))?;
        Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| ApiError::NotFound("no such id".into()))
    }
}

/// Parses a pagination limit: 1..=1000, default 100.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 1000")),
    }
}

/// Parses an id cursor.
pub fn id_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            Uuid::parse_str(c)
                .map_err(|_| ApiError::field("cursor", "not a cursor from a previous page"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::accepts_content_type;

    #[test]
    fn json_types_are_read_whatever_their_case_and_parameters() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/merge-patch+json",
            "application/PROBLEM+JSON",
            "application/x-www-form-urlencoded",
            "",
            "; charset=utf-8",
        ] {
            assert!(accepts_content_type(ct), "{ct:?} refused");
        }
    }

    #[test]
    fn other_types_are_refused() {
        for ct in [
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
            "json",
            "application/jsonx",
            "application/é+jso",
            "ä",
        ] {
            assert!(!accepts_content_type(ct), "{ct:?} accepted");
        }
    }
}
