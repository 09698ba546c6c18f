//! `POST /v1/verify/batch`: each verification answered as `POST /v1/verify` would answer
//! it, in order; limits, quotas and usage counted per verification; a malformed batch
//! refused whole, before anything is verified.

#[macro_use]
mod common;

use common::{TestServer, eventually};
use serde_json::{Value, json};

/// The fields of an answer that do not depend on when it was given.
fn decision(a: &Value) -> Value {
    json!({
        "valid": a["valid"], "code": a["code"], "key_id": a["key_id"],
        "identity_id": a["identity_id"], "scopes": a["scopes"],
    })
}

/// Sends `requests` as one batch; returns the answer's body.
async fn verify_batch(s: &TestServer, verifier: &str, requests: &Value) -> Value {
    s.post(
        "/v1/verify/batch",
        verifier,
        json!({ "requests": requests }),
    )
    .await
    .ok(200)
    .clone()
}

/// The codes of a batch's answers, in order.
fn codes(batch: &Value) -> Vec<&str> {
    let results = batch["results"].as_array().unwrap();
    results
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect()
}

store_test!(answers_each_request_as_verify_does_in_order);
async fn answers_each_request_as_verify_does_in_order(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("batch").await;
    let (reader, reader_id) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    let (revoked, revoked_id) = s.key(&ident, json!({})).await;
    s.post(&format!("/v1/keys/{revoked_id}/revoke"), &s.root, json!({}))
        .await
        .ok(200);
    let (fenced, _) = s.key(&ident, json!({"ip_allowlist": ["10.0.0.0/8"]})).await;
    let requests = json!([
        {"key": reader, "scopes": ["orders:read"]},
        {"key": reader, "scopes": ["orders:write"]},
        {"key": revoked},
        {"key": "kw_not_a_key"},
        {"key": fenced, "ip": "192.0.2.1"},
        {"key": fenced, "ip": "10.1.2.3"},
        {"key": reader, "permission": "orders:read OR orders:write"},
    ]);
    let batch = verify_batch(&s, &v, &requests).await;
    let results = batch["results"].as_array().unwrap();
    assert_eq!(
        codes(&batch),
        [
            "VALID",
            "INSUFFICIENT_SCOPE",
            "REVOKED",
            "MALFORMED",
            "IP_NOT_ALLOWED",
            "VALID",
            "VALID"
        ]
    );
    assert_eq!(results[0]["key_id"], reader_id.as_str());
    assert_eq!(results[0]["identity_id"], ident.as_str());
    assert_eq!(results[0]["scopes"], json!(["orders:read"]));
    // The typed client sends the same batch and reads the same answers.
    let client = keyward_client::Client::new(&s.base, Some(v.clone())).unwrap();
    let typed: Vec<keyward_proto::VerifyRequest> =
        serde_json::from_value(requests.clone()).unwrap();
    let answers = client.verify_batch(&typed).await.unwrap();
    assert_eq!(serde_json::to_value(&answers).unwrap(), batch["results"]);
    // The same requests one by one get the same decisions.
    for (request, batched) in requests.as_array().unwrap().iter().zip(results) {
        let single = s
            .post("/v1/verify", &v, request.clone())
            .await
            .ok(200)
            .clone();
        assert_eq!(decision(&single), decision(batched), "{request}");
    }
    s.stop().await;
}

store_test!(each_verification_counts_against_limits_quotas_and_usage);
async fn each_verification_counts_against_limits_quotas_and_usage(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("batch-limits").await;
    let (limited, _) = s
        .key(
            &ident,
            json!({"rate_limits": [{"name": "burst", "limit": 3, "window_seconds": 60}]}),
        )
        .await;
    let (quota, quota_id) = s.key(&ident, json!({"remaining": 2})).await;
    let requests: Vec<Value> = (0..5)
        .map(|_| json!({"key": limited}))
        .chain((0..3).map(|_| json!({"key": quota})))
        .collect();
    let batch = verify_batch(&s, &v, &json!(requests)).await;
    assert_eq!(
        codes(&batch),
        [
            "VALID",
            "VALID",
            "VALID",
            "RATE_LIMITED",
            "RATE_LIMITED",
            "VALID",
            "VALID",
            "USAGE_EXCEEDED"
        ]
    );
    assert_eq!(batch["results"][3]["rate_limit"]["name"], "burst");
    assert_eq!(batch["results"][5]["remaining"], 1);
    assert_eq!(batch["results"][6]["remaining"], 0);
    // Every verification of the batch is a usage event of its own.
    let path = format!("/v1/usage?key_id={quota_id}&bucket=minute");
    eventually(&s, &path, &s.root, |u| {
        u["total"]["VALID"] == 2 && u["total"]["USAGE_EXCEEDED"] == 1
    })
    .await;
    s.stop().await;
}

store_test!(a_malformed_batch_is_refused_whole_naming_the_field);
async fn a_malformed_batch_is_refused_whole_naming_the_field(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("batch-bad").await;
    let (quota, quota_id) = s.key(&ident, json!({"remaining": 5})).await;
    let cases = [
        (json!({"requests": []}), "requests"),
        (
            json!({"requests": vec![json!({"key": quota}); 101]}),
            "requests",
        ),
        (
            json!({"requests": [{"key": quota}, {"key": quota, "scopes": ["bad scope"]}]}),
            "requests[1].scopes[0]",
        ),
        (
            json!({"requests": [{"key": quota}, {"key": quota, "ip": "10.0.0.300"}]}),
            "requests[1].ip",
        ),
        (
            json!({"requests": [{"key": quota, "permission": "a AND"}]}),
            "requests[0].permission",
        ),
        (
            json!({"requests": [{"key": quota, "tags": {"bad name": "x"}}]}),
            "requests[0].tags",
        ),
        (
            json!({"requests": [{"key": quota, "keys": 1}]}),
            "requests[0]",
        ),
        (json!({"keys": []}), "keys"),
    ];
    for (body, field) in cases {
        let a = s.post("/v1/verify/batch", &v, body.clone()).await;
        let problem = a.problem(400);
        let named = problem["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field), "{body}: {problem}");
    }
    // Nothing of the refused batches was verified: the quota is whole.
    let key = s.get(&format!("/v1/keys/{quota_id}"), &s.root).await;
    assert_eq!(key.ok(200)["remaining"], 5);
    s.stop().await;
}
