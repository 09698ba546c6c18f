//! The client against a stand-in server: request shapes (method, path, query, bearer,
//! body) and how answers and errors are read.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use keyward_client::{AuditListParams, Client, Error, KeyListParams, ListParams};
use keyward_proto::{CreateIdentity, RateLimit, UpdateKey, VerifyCode, VerifyRequest};
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    auth: Option<String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

const T: &str = "2030-01-01T00:00:00Z";
const ID: &str = "0190f5a0-0000-7000-8000-000000000001";

fn identity() -> Value {
    json!({"id": ID, "name": "svc", "owner": "me", "description": "", "meta": {},
           "enabled": true, "created_at": T, "updated_at": T})
}

fn key() -> Value {
    json!({"id": ID, "identity_id": ID, "name": "", "prefix": "kw", "start": "kw_AbCd",
           "scopes": [], "created_at": T, "updated_at": T, "expires_at": null,
           "revoked_at": null, "enabled": true, "ip_allowlist": [], "rate_limits": [],
           "remaining": null, "last_used_at": null, "meta": {}, "rotated_from": null,
           "rotated_to": null})
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(),
                      "status": status.as_u16(), "detail": detail});
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn answer(log: Log, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = Seen {
        method: method.clone(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        auth: headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    log.lock().unwrap().push(seen.clone());
    let ok = |status: StatusCode, v: Value| (status, axum::Json(v)).into_response();
    match (method.as_str(), seen.path.as_str(), seen.query.as_str()) {
        ("GET", "/healthz", _) => ok(StatusCode::OK, json!({"status": "ok"})),
        ("GET", "/readyz", _) => problem(StatusCode::SERVICE_UNAVAILABLE, "store down"),
        ("POST", "/v1/identities", _) => ok(StatusCode::CREATED, identity()),
        ("GET", "/v1/identities", q) if q.contains("cursor=p2") => ok(
            StatusCode::OK,
            json!({"items": [identity()], "next_cursor": null}),
        ),
        ("GET", "/v1/identities", _) => ok(
            StatusCode::OK,
            json!({"items": [identity(), identity()], "next_cursor": "p2"}),
        ),
        ("DELETE", p, _) if p.starts_with("/v1/identities/") => {
            StatusCode::NO_CONTENT.into_response()
        }
        ("GET", "/v1/keys", _) => ok(
            StatusCode::OK,
            json!({"items": [key()], "next_cursor": null}),
        ),
        ("GET", p, _) if p.starts_with("/v1/keys/") => {
            problem(StatusCode::NOT_FOUND, "no such key")
        }
        ("PATCH", p, _) if p.starts_with("/v1/keys/") => ok(StatusCode::OK, key()),
        ("POST", p, _) if p.ends_with("/rotate") => {
            let mut k = key();
            k["key"] = json!("kw_newkey");
            k["previous"] = json!({"id": ID, "expires_at": T});
            ok(StatusCode::CREATED, k)
        }
        ("POST", "/v1/verify", _) => ok(StatusCode::OK, json!({"valid": false, "code": "REVOKED"})),
        ("GET", "/v1/audit", _) => ok(StatusCode::OK, json!({"items": [], "next_cursor": null})),
        ("POST", p, _) if p.ends_with("/revoke") => {
            (StatusCode::BAD_GATEWAY, "upstream down").into_response()
        }
        _ => problem(StatusCode::NOT_FOUND, "no route"),
    }
}

async fn mock() -> (String, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let app = Router::new()
        .fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| answer(l.clone(), m, u, h, b));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), log)
}

fn last(log: &Log) -> Seen {
    log.lock().unwrap().last().cloned().expect("a request")
}

#[tokio::test]
async fn requests_have_the_contract_shapes() {
    let (url, log) = mock().await;
    let c = Client::new(&url, Some("kw_token".into())).unwrap();
    let id: Uuid = ID.parse().unwrap();

    c.create_identity(&CreateIdentity {
        name: "svc".into(),
        owner: "me".into(),
        description: None,
        meta: None,
        enabled: None,
    })
    .await
    .unwrap();
    let s = last(&log);
    assert_eq!(
        (s.method, s.path.as_str()),
        (Method::POST, "/v1/identities")
    );
    assert_eq!(s.auth.as_deref(), Some("Bearer kw_token"));
    assert_eq!(s.body, json!({"name": "svc", "owner": "me"}));

    c.list_keys(&KeyListParams {
        identity_id: Some(id),
        limit: Some(5),
        cursor: Some("c1".into()),
    })
    .await
    .unwrap();
    let s = last(&log);
    assert_eq!(s.path, "/v1/keys");
    assert_eq!(s.query, format!("identity_id={ID}&limit=5&cursor=c1"));

    c.update_key(
        id,
        &UpdateKey {
            remaining: Some(None),
            rate_limits: Some(vec![RateLimit {
                name: "d".into(),
                limit: 1,
                window_seconds: 2,
            }]),
            ..UpdateKey::default()
        },
    )
    .await
    .unwrap();
    let s = last(&log);
    assert_eq!(
        (s.method, s.path),
        (Method::PATCH, format!("/v1/keys/{ID}"))
    );
    assert_eq!(
        s.body,
        json!({"remaining": null, "rate_limits": [{"name": "d", "limit": 1, "window_seconds": 2}]})
    );

    let rotated = c.rotate_key(id, 3600).await.unwrap();
    assert_eq!(rotated.key, "kw_newkey");
    assert_eq!(rotated.previous.unwrap().id, id);
    let s = last(&log);
    assert_eq!(s.path, format!("/v1/keys/{ID}/rotate"));
    assert_eq!(s.body, json!({"grace_seconds": 3600}));

    let v = c
        .verify(&VerifyRequest {
            key: "kw_x".into(),
            ..VerifyRequest::default()
        })
        .await
        .unwrap();
    assert!(!v.valid);
    assert_eq!(v.code, VerifyCode::Revoked);

    c.list_audit(&AuditListParams {
        after: Some("41".into()),
        limit: None,
    })
    .await
    .unwrap();
    assert_eq!(last(&log).query, "after=41");

    assert_eq!(c.delete_identity(id).await.unwrap(), None);
    // Health checks do not carry the credential.
    assert_eq!(c.healthz().await.unwrap().status, "ok");
    assert_eq!(last(&log).auth, None);
}

#[tokio::test]
async fn listings_follow_cursors() {
    let (url, log) = mock().await;
    let c = Client::new(&url, Some("t".into())).unwrap();
    let page = c.list_identities(&ListParams::default()).await.unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("p2"));
    let all = c.list_all_identities().await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(last(&log).query, "cursor=p2");
    assert_eq!(c.list_all_keys(None).await.unwrap().len(), 1);
    assert!(c.list_all_audit(Some("7".into())).await.unwrap().is_empty());
    assert_eq!(last(&log).query, "after=7");
}

#[tokio::test]
async fn errors_carry_status_and_problem_but_not_the_token() {
    let (url, _log) = mock().await;
    let c = Client::new(&url, Some("kw_secret_token".into())).unwrap();
    let e = c.get_key(ID.parse().unwrap()).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.problem().unwrap().detail, "no such key");
    assert!(!format!("{e} {e:?}").contains("kw_secret_token"));

    let e = c.readyz().await.unwrap_err();
    assert_eq!(e.status(), Some(503));

    // A non-problem error body still becomes a problem.
    let e = c.revoke_key(Uuid::nil()).await.unwrap_err();
    assert!(matches!(e, Error::Api { status: 502, .. }), "{e:?}");
    assert_eq!(e.problem().unwrap().detail, "upstream down");
    assert_eq!(e.problem().unwrap().title, "Bad Gateway");
}
