//! Headers that make browsers treat every answer safely, and CORS (closed unless
//! origins are configured).
//!
//! Keyward serves JSON to programs (and, under `/console`, pages whose scripts, styles
//! and forms come from itself only: `console::CSP`): nothing may be framed, sniffed as another
//! type, run as script, cached, or followed by a referrer. HSTS is sent only when
//! Keyward itself serves HTTPS (`--tls-cert`), as a plain-HTTP answer cannot set it.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// HSTS for a year, with subdomains.
const HSTS: &str = "max-age=31536000; includeSubDomains";

async fn add_headers(hsts: bool, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/v1/");
    let console = crate::console::is_console_path(req.uri().path());
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // The console's forms need their Origin sent, which no-referrer would hide.
    set(
        h,
        header::REFERRER_POLICY,
        if console {
            "same-origin"
        } else {
            "no-referrer"
        },
    );
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        if console {
            // The console's pages: scripts, styles and forms from Keyward itself only.
            crate::console::CSP
        } else {
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        },
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if api {
        // Answers can hold keys, session tokens and TOTP secrets: never store them.
        set(h, header::CACHE_CONTROL, "no-store");
    }
    if hsts {
        set(h, header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    res
}

/// Wraps the application with the security headers and, when `cors_origins` is not
/// empty, CORS for exactly those origins (no credentials mode: Keyward's credential is
/// a bearer header, never a cookie).
pub fn apply(app: Router, hsts: bool, cors_origins: &[String]) -> anyhow::Result<Router> {
    let mut app = app.layer(axum::middleware::from_fn(move |req, next| {
        add_headers(hsts, req, next)
    }));
    if !cors_origins.is_empty() {
        let origins = cors_origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .map_err(|_| anyhow::anyhow!("invalid --cors-origin {o:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("keyward-totp"),
                ])
                .max_age(std::time::Duration::from_secs(600)),
        );
    }
    Ok(app)
}
