//! Cluster-wide rate limits through Redis: shared by the nodes, all-or-nothing, and
//! what happens when Redis is unreachable (per-node fallback with a metric, or fail
//! closed) and when it comes back. Each test that stops Redis runs a redis-server of
//! its own on a free port; the others use the machine's (`KEYWARD_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestServer};
use keyward_server::redis_limits::RedisDown;
use keyward_store::testkit::OwnRedis;
use serde_json::json;

fn machine_redis() -> String {
    std::env::var("KEYWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn codes(nodes: &[&TestServer], v: &str, key: &str, calls: usize) -> (usize, usize) {
    let (mut valid, mut limited) = (0, 0);
    for n in 0..calls {
        match nodes[n % nodes.len()].verify(v, key, json!({})).await["code"]
            .as_str()
            .unwrap()
        {
            "VALID" => valid += 1,
            "RATE_LIMITED" => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (valid, limited)
}

fn fallbacks(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("keyward_redis_fallback_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Two nodes, one Redis: a limit of 10 a minute lets 10 calls through in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shared_by_the_nodes() {
    let a =
        TestServer::start_full(Backend::Postgres, Some((machine_redis(), RedisDown::Local))).await;
    let b = a.another_node().await;
    let v = a.verifier().await;
    let ident = a.identity("shared-limits").await;
    let (key, _) = a
        .key(
            &ident,
            json!({"rate_limits": [
            {"name": "minute", "limit": 10, "window_seconds": 60},
            {"name": "hour", "limit": 100, "window_seconds": 3600}]}),
        )
        .await;
    let (valid, limited) = codes(&[&a, &b], &v, &key, 30).await;
    assert_eq!((valid, limited), (10, 20));
    let denied = b.verify(&v, &key, json!({})).await;
    assert_eq!(denied["rate_limit"]["name"], "minute", "{denied}");

    let r = a.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.ok(200)["checks"]["redis"], "ok");
}

/// All or nothing, and a call refused by the quota gives its rate limit back.
#[tokio::test]
async fn refused_calls_use_no_shared_rate_limit() {
    let s =
        TestServer::start_full(Backend::Sqlite, Some((machine_redis(), RedisDown::Local))).await;
    let v = s.verifier().await;
    let ident = s.identity("shared-refund").await;
    let (key, id) = s
        .key(
            &ident,
            json!({"remaining": 2, "rate_limits": [
            {"name": "five", "limit": 5, "window_seconds": 600},
            {"name": "three", "limit": 3, "window_seconds": 600}]}),
        )
        .await;
    let mut got = vec![];
    for _ in 0..4 {
        got.push(s.verify(&v, &key, json!({})).await["code"].clone());
    }
    assert_eq!(got, ["VALID", "VALID", "USAGE_EXCEEDED", "USAGE_EXCEEDED"]);
    s.patch(
        &format!("/v1/keys/{id}"),
        &s.root,
        json!({"remaining": 100}),
    )
    .await
    .ok(200);
    // "three" has one call left; "five" three: "three" refuses, and takes nothing
    // from "five".
    let mut got = vec![];
    for _ in 0..3 {
        let a = s.verify(&v, &key, json!({})).await;
        got.push((a["code"].clone(), a["rate_limit"]["name"].clone()));
    }
    assert_eq!(got[0].0, "VALID");
    assert_eq!(got[1], (json!("RATE_LIMITED"), json!("three")));
    assert_eq!(got[2], (json!("RATE_LIMITED"), json!("three")));
}

/// Redis goes down: per-node limits, counted and ready; Redis comes back: shared
/// again, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_per_node_and_recovers() {
    let mut redis = OwnRedis::start();
    let s = TestServer::start_full(Backend::Sqlite, Some((redis.url(), RedisDown::Local))).await;
    let v = s.verifier().await;
    let ident = s.identity("fallback").await;
    let (key, _) = s
        .key(
            &ident,
            json!({"rate_limits": [{"name": "m", "limit": 5, "window_seconds": 60}]}),
        )
        .await;
    assert_eq!(codes(&[&s], &v, &key, 3).await, (3, 0));

    redis.stop();
    let metrics = s.send(reqwest::Method::GET, "/metrics", None, None).await;
    let before = fallbacks(metrics.body.as_str().unwrap());
    // The node's own limiter knows nothing of the 3 calls Redis counted.
    assert_eq!(codes(&[&s], &v, &key, 8).await, (5, 3));
    let metrics = s.send(reqwest::Method::GET, "/metrics", None, None).await;
    assert!(fallbacks(metrics.body.as_str().unwrap()) >= before + 8.0);
    let r = s.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        r.ok(200)["checks"]["redis"],
        "unreachable: per-node rate limits"
    );

    // Back (empty: a fresh redis-server): shared limits again within the retry period.
    redis.restart();
    let (key2, _) = s
        .key(
            &ident,
            json!({"rate_limits": [{"name": "m", "limit": 2, "window_seconds": 60}]}),
        )
        .await;
    let start = Instant::now();
    loop {
        let r = s.send(reqwest::Method::GET, "/readyz", None, None).await;
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        s.verify(&v, &key2, json!({})).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("kw:rl:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if r.body["checks"]["redis"] == "ok" && !keys.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never back on Redis"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fail closed: while Redis is down, keys with rate limits get 503, others verify, and
/// the node stays ready (saying so).
#[tokio::test]
async fn redis_down_fails_closed_when_asked() {
    let mut redis = OwnRedis::start();
    let s = TestServer::start_full(Backend::Sqlite, Some((redis.url(), RedisDown::Closed))).await;
    let v = s.verifier().await;
    let ident = s.identity("closed").await;
    let (limited, _) = s
        .key(
            &ident,
            json!({"rate_limits": [{"name": "m", "limit": 5, "window_seconds": 60}]}),
        )
        .await;
    let (free, _) = s.key(&ident, json!({})).await;
    redis.stop();
    let a = s.post("/v1/verify", &v, json!({"key": limited})).await;
    a.problem(503);
    assert_eq!(s.verify(&v, &free, json!({})).await["code"], "VALID");
    let r = s.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        r.ok(200)["checks"]["redis"],
        "unreachable: rate-limited keys refused (fail closed)"
    );
}
