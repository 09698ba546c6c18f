//! The web console over plain HTTP, on both stores: sign-in (key and administrator),
//! the session cookie's flags, CSRF and cross-site refusals on every form, scopes that
//! limit what the console can do, a new key shown once and never again, sign-out, and
//! the embedded assets.

#[macro_use]
mod common;

use common::TestServer;
use keyward_core::admin::TotpSecret;
use reqwest::header::{COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::json;

/// A browser-like client of the console: no redirects followed, cookies kept by hand.
struct Browser {
    base: String,
    http: Client,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl Browser {
    fn new(s: &TestServer) -> Browser {
        Browser {
            base: s.base.clone(),
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn keep(&mut self, page: &Page) {
        for c in page.set_cookies() {
            let pair = c.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header(COOKIE, self.cookie_header())
        };
        let resp = req.send().await.unwrap();
        let page = Page {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        };
        self.keep(&page);
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.read(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_with(path, form, &[]).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.read(req).await
    }

    /// Signs in with a key; returns the CSRF token of the signed-in pages.
    async fn sign_in_with_key(&mut self, key: &str) -> Page {
        let login = self.get("/console/login").await;
        assert_eq!(login.status, 200);
        let csrf = login.csrf();
        self.post(
            "/console/login",
            &[("csrf", &csrf), ("mode", "key"), ("key", key)],
        )
        .await
    }
}

async fn signed_in(s: &TestServer, key: &str) -> (Browser, String) {
    let mut b = Browser::new(s);
    let done = b.sign_in_with_key(key).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let home = b.get("/console").await;
    assert_eq!(home.status, 200, "{}", home.body);
    let csrf = home.csrf();
    (b, csrf)
}

async fn key_with_scopes(s: &TestServer, scopes: serde_json::Value) -> String {
    let i = s
        .post(
            "/v1/identities",
            &s.root,
            json!({"name": format!("ops-{}", uuid::Uuid::now_v7()), "owner": "ops"}),
        )
        .await;
    let id = i.ok(201)["id"].as_str().unwrap().to_owned();
    let k = s
        .post(
            "/v1/keys",
            &s.root,
            json!({"identity_id": id, "scopes": scopes}),
        )
        .await;
    k.ok(201)["key"].as_str().unwrap().to_owned()
}

store_test!(sign_in_with_a_key_sets_a_strict_cookie);
async fn sign_in_with_a_key_sets_a_strict_cookie(s: TestServer) {
    let mut b = Browser::new(&s);
    // Not signed in: every page leads to the sign-in page.
    let home = b.get("/console").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.location(), "/console/login");
    let done = b.sign_in_with_key(&s.root).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), "/console");
    let session = done
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("keyward_console="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(session.contains(flag), "{flag} missing: {session}");
    }
    // Plain HTTP: not Secure (the browser would drop it).
    assert!(!session.contains("Secure"), "{session}");
    let home = b.get("/console").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Overview"));
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(csp.contains("form-action 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(home.headers["cache-control"], "no-store");
    assert_eq!(home.headers["x-frame-options"], "DENY");
    // A wrong key: the sign-in page again, with the reason.
    let mut other = Browser::new(&s);
    let refused = other.sign_in_with_key("kw_not_a_key").await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.body.contains("unknown credential"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("kw_not_a_key"));
}

store_test!(every_form_needs_the_csrf_token_and_the_same_site);
async fn every_form_needs_the_csrf_token_and_the_same_site(s: TestServer) {
    let (mut b, csrf) = signed_in(&s, &s.root).await;
    let form = |token: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![("csrf", token), ("name", "csrf-victim"), ("owner", "ops")]
    };
    // No token, a wrong one, and one of another session.
    let none = b
        .post(
            "/console/identities",
            &[("name", "csrf-victim"), ("owner", "ops")],
        )
        .await;
    assert_eq!(none.status, 403, "{}", none.body);
    let wrong = b.post("/console/identities", &form("00ff")).await;
    assert_eq!(wrong.status, 403);
    let (_, other_csrf) = signed_in(&s, &key_with_scopes(&s, json!(["keyward:admin"])).await).await;
    let other: &'static str = Box::leak(other_csrf.into_boxed_str());
    assert_eq!(
        b.post("/console/identities", &form(other)).await.status,
        403
    );
    // The right token, but sent from another site.
    let good: &'static str = Box::leak(csrf.clone().into_boxed_str());
    let cross = b
        .post_with(
            "/console/identities",
            &form(good),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(cross.status, 403);
    let origin = b
        .post_with(
            "/console/identities",
            &form(good),
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(origin.status, 403);
    // Nothing was created.
    let list = s.get("/v1/identities", &s.root).await;
    assert!(!list.ok(200).to_string().contains("csrf-victim"));
    // The right token, same origin: created.
    let host = s.base.trim_start_matches("http://").to_owned();
    let origin = format!("http://{host}");
    let ok = b
        .post_with(
            "/console/identities",
            &form(good),
            &[
                ("origin", origin.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(ok.location().starts_with("/console/identities/"));
    // Sign-in itself needs its double-submit token.
    let mut fresh = Browser::new(&s);
    let no_cookie = fresh
        .post(
            "/console/login",
            &[("csrf", "x"), ("mode", "key"), ("key", &s.root)],
        )
        .await;
    assert_eq!(no_cookie.status, 403);
    // Sign-out is a form too.
    assert_eq!(b.post("/console/logout", &[]).await.status, 403);
}

store_test!(the_console_can_do_only_what_the_scopes_allow);
async fn the_console_can_do_only_what_the_scopes_allow(s: TestServer) {
    // A key without keyward: scopes cannot sign in.
    let plain = key_with_scopes(&s, json!(["orders:read"])).await;
    let mut b = Browser::new(&s);
    let refused = b.sign_in_with_key(&plain).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("keyward:"));

    // A reader of identities: lists them, cannot create one, cannot read the audit log.
    let reader = key_with_scopes(&s, json!(["keyward:identities:read"])).await;
    let (mut b, csrf) = signed_in(&s, &reader).await;
    let list = b.get("/console/identities").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("ops-"), "{}", list.body);
    assert!(
        !list.body.contains("New identity"),
        "no button it cannot use"
    );
    let create = b
        .post(
            "/console/identities",
            &[("csrf", &csrf), ("name", "not-allowed"), ("owner", "ops")],
        )
        .await;
    assert_eq!(create.status, 403, "{}", create.body);
    assert!(create.body.contains("keyward:identities:write"));
    assert_eq!(b.get("/console/audit").await.status, 403);
    assert_eq!(b.get("/console/alerts").await.status, 403);
    // Keys: neither listed on the identity page nor creatable.
    let ids = s.get("/v1/identities", &s.root).await;
    let id = ids.ok(200)["items"][0]["id"].as_str().unwrap().to_owned();
    let page = b.get(&format!("/console/identities/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Listing keys needs keyward:keys:read"));
    let mint = b
        .post(
            "/console/keys",
            &[
                ("csrf", &csrf),
                ("identity_id", &id),
                ("scopes", "orders:read"),
            ],
        )
        .await;
    assert_eq!(mint.status, 403);

    // A key writer may not mint keyward: keys (the API's rule, unchanged).
    let writer =
        key_with_scopes(&s, json!(["keyward:keys:write", "keyward:identities:read"])).await;
    let (mut w, csrf) = signed_in(&s, &writer).await;
    let admin_key = w
        .post(
            "/console/keys",
            &[
                ("csrf", &csrf),
                ("identity_id", &id),
                ("scopes", "keyward:admin"),
            ],
        )
        .await;
    assert_eq!(admin_key.status, 403, "{}", admin_key.body);
    let fine = w
        .post(
            "/console/keys",
            &[
                ("csrf", &csrf),
                ("identity_id", &id),
                ("scopes", "orders:read"),
            ],
        )
        .await;
    assert_eq!(fine.status, 201, "{}", fine.body);
}

store_test!(new_key_is_shown_once_and_never_again);
async fn new_key_is_shown_once_and_never_again(s: TestServer) {
    let (mut b, csrf) = signed_in(&s, &s.root).await;
    let created = b
        .post(
            "/console/identities",
            &[
                ("csrf", &csrf),
                ("name", "billing-worker"),
                ("owner", "payments"),
                ("description", ""),
            ],
        )
        .await;
    assert_eq!(created.status, 303);
    let identity_path = created.location().to_owned();
    let identity_id = identity_path.rsplit('/').next().unwrap().to_owned();
    let made = b
        .post(
            "/console/keys",
            &[
                ("csrf", &csrf),
                ("identity_id", &identity_id),
                ("name", "billing prod"),
                ("scopes", "orders:read\norders:write"),
                ("ttl_days", "30"),
                ("ip_allowlist", "127.0.0.1, 10.0.0.0/8"),
                ("rate_limit", "100"),
                ("rate_window_seconds", "60"),
                ("remaining", "1000"),
            ],
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.headers["cache-control"], "no-store");
    assert!(made.body.contains("shown only this once"));
    let at = made.body.find(r#"id="new-key" value=""#).unwrap() + r#"id="new-key" value=""#.len();
    let key = made.body[at..at + made.body[at..].find('"').unwrap()].to_owned();
    assert!(key.starts_with("kw_"), "{key}");
    // It works, with the settings given.
    let v = s
        .post(
            "/v1/verify",
            &s.root,
            json!({"key": key, "ip": "10.1.2.3", "scopes": ["orders:write"]}),
        )
        .await;
    assert_eq!(v.ok(200)["code"], "VALID", "{}", v.body);
    let key_id = v.body["key_id"].as_str().unwrap().to_owned();
    let shown = s.get(&format!("/v1/keys/{key_id}"), &s.root).await;
    let k = shown.ok(200);
    assert_eq!(k["ip_allowlist"], json!(["127.0.0.1/32", "10.0.0.0/8"]));
    assert_eq!(k["rate_limits"][0]["limit"], 100);
    assert_eq!(k["remaining"], 999);
    assert!(k["expires_at"].is_string());
    // No other page shows it: the key's, the identity's, the audit log, the overview.
    for path in [
        format!("/console/keys/{key_id}"),
        identity_path.clone(),
        "/console/audit".to_owned(),
        "/console".to_owned(),
        "/console/alerts".to_owned(),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(!page.body.contains(&key), "{path} shows the key");
    }
    // Rotation shows the new key once, and the old one keeps its grace.
    let rotated = b
        .post(
            &format!("/console/keys/{key_id}/rotate"),
            &[("csrf", &csrf), ("grace_hours", "1")],
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    assert!(rotated.body.contains("keeps working until"));
    assert!(!rotated.body.contains(&key));
    // Revoke after the confirmation page.
    let confirm = b.get(&format!("/console/keys/{key_id}/revoke")).await;
    assert!(confirm.body.contains("cannot be undone"));
    let revoked = b
        .post(
            &format!("/console/keys/{key_id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, 303);
    assert!(!revoked.location().contains(&key));
    let v = s
        .post("/v1/verify", &s.root, json!({"key": key, "ip": "10.1.2.3"}))
        .await;
    assert_eq!(v.ok(200)["code"], "REVOKED");
    // The audit log holds the changes, never the key.
    let audit = b.get("/console/audit?action=key.").await;
    assert!(audit.body.contains("key.create") && audit.body.contains("key.revoke"));
    assert!(audit.body.contains("Chain verified"), "{}", audit.body);
    assert!(!audit.body.contains(&key));
}

store_test!(an_administrator_signs_in_with_totp_and_out_again);
async fn an_administrator_signs_in_with_totp_and_out_again(s: TestServer) {
    let enrolled = s
        .post(
            "/v1/admins",
            &s.root,
            json!({"username": "carol", "password": "correct horse battery staple",
                   "scopes": ["keyward:admin"]}),
        )
        .await;
    let uri = enrolled.ok(201)["totp_uri"].as_str().unwrap().to_owned();
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let secret = TotpSecret::from_base32(secret);
    let mut b = Browser::new(&s);
    let login = b.get("/console/login").await;
    let csrf = login.csrf();
    let wrong = b
        .post(
            "/console/login",
            &[
                ("csrf", &csrf),
                ("mode", "admin"),
                ("username", "carol"),
                ("password", "wrong password here"),
                ("totp", "000000"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("wrong username, password or code"));
    let csrf = wrong.csrf();
    let code = secret.code_at(chrono::Utc::now().timestamp() as u64);
    let done = b
        .post(
            "/console/login",
            &[
                ("csrf", &csrf),
                ("mode", "admin"),
                ("username", "carol"),
                ("password", "correct horse battery staple"),
                ("totp", &code),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let home = b.get("/console").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("administrator session"));
    let token = b
        .cookies
        .iter()
        .find(|(n, _)| n == "keyward_console")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(token.starts_with("kws_"));
    // Signing out ends the session itself, not just the cookie.
    let out = b.post("/console/logout", &[("csrf", &home.csrf())]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/console/login");
    assert_eq!(b.get("/console").await.status, 303);
    let after = s.get("/v1/identities", &token).await;
    after.problem(401);
}

store_test!(assets_are_embedded_and_cached_long);
async fn assets_are_embedded_and_cached_long(s: TestServer) {
    let version = env!("CARGO_PKG_VERSION");
    for (file, kind) in [
        ("htmx.min.js", "text/javascript"),
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let r = reqwest::get(format!("{}/console/assets/{version}/{file}", s.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().len() > 100);
    }
    let slash = Browser::new(&s).get("/console/").await;
    assert_eq!(slash.status, 308);
    assert_eq!(slash.location(), "/console");
    let old = reqwest::get(format!("{}/console/assets/0.0.0/console.css", s.base))
        .await
        .unwrap();
    assert_eq!(old.status(), 404);
}
