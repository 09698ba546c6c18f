//! The console's static files, embedded in the binary: htmx (from the npm package
//! `htmx.org`, 0BSD; see `assets/console/htmx.LICENSE`), the stylesheet and a small
//! script for the copy button. Their URLs carry Keyward's version, so they are cached
//! for a year and a new release is fetched anew.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The URL folder of this build's assets.
pub const BASE: &str = concat!("/console/assets/", env!("CARGO_PKG_VERSION"));

const FILES: &[(&str, &str, &str)] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/htmx.min.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/console/console.css"),
    ),
];

pub async fn serve(Path((version, file)): Path<(String, String)>) -> Response {
    let found = FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .filter(|_| version == env!("CARGO_PKG_VERSION"));
    match found {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *body,
        )
            .into_response(),
        None => super::pages::error_page(StatusCode::NOT_FOUND, "No such file."),
    }
}
