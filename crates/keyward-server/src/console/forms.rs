//! Form bodies (`application/x-www-form-urlencoded`) and the conversions from form
//! text to the API's request fields. A bad field is a 400 page that names it.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::pages::error_page;

/// A parsed form body. (The CSRF token in it was already checked by `session::guard`.)
pub struct Form<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|_| error_page(StatusCode::BAD_REQUEST, "The form could not be read."))?;
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
        serde_path_to_error::deserialize(de).map(Form).map_err(|e| {
            let field = e.path().to_string();
            error_page(
                StatusCode::BAD_REQUEST,
                &format!("The field {field} is not valid: {}", e.inner()),
            )
        })
    }
}

/// The entries of a list field: one per line or separated by commas or spaces.
pub fn list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An optional number field: blank is `None`.
pub fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| format!("{field}: not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_lines_commas_and_spaces() {
        assert_eq!(
            list("orders:read, orders:write\nbilling:*  \n\n"),
            vec!["orders:read", "orders:write", "billing:*"]
        );
        assert!(list("  \n").is_empty());
    }

    #[test]
    fn numbers_are_optional() {
        assert_eq!(number::<i64>("remaining", " "), Ok(None));
        assert_eq!(number::<i64>("remaining", "12"), Ok(Some(12)));
        assert!(
            number::<i64>("remaining", "x")
                .unwrap_err()
                .contains("remaining")
        );
    }
}
