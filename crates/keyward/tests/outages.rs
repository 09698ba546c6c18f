//! Outages of the parts a cluster depends on, with three real `keyward serve` processes:
//! a PostgreSQL restart under load, and Redis going down and coming back. Each test runs
//! a PostgreSQL or Redis of its own (testkit `OwnPostgres`, `OwnRedis`) so it can stop it
//! without disturbing the other tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_store::testkit::{OwnPostgres, OwnRedis, TempDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

mod common;

use common::{Node, cluster, identity_and_verifier, post, readyz, revoke_until_everywhere};

/// What the writers saw: keys acknowledged (201) and how many answers of each status.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<(String, String)>,
    statuses: BTreeMap<u16, usize>,
}

/// Creates keys through every node, round robin, until `stop` (or a bound on count
/// and time), recording each acknowledged key.
async fn write_keys(
    http: reqwest::Client,
    bases: Vec<String>,
    root: String,
    identity: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let start = Instant::now();
    for i in 0..20_000usize {
        if stop.load(std::sync::atomic::Ordering::Relaxed)
            || start.elapsed() > Duration::from_secs(90)
        {
            break;
        }
        let r = http
            .post(format!("{}/v1/keys", bases[i % bases.len()]))
            .bearer_auth(&root)
            .timeout(Duration::from_secs(10))
            .json(&json!({"identity_id": identity}))
            .send()
            .await;
        let Ok(r) = r else {
            // A node answering nothing at all (connection error or timeout) would be a
            // bug too: count it under 0.
            *seen.lock().await.statuses.entry(0).or_default() += 1;
            continue;
        };
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let mut s = seen.lock().await;
        *s.statuses.entry(status.as_u16()).or_default() += 1;
        if status == StatusCode::CREATED {
            s.acknowledged.push((
                body["id"].as_str().unwrap().to_owned(),
                body["key"].as_str().unwrap().to_owned(),
            ));
        } else {
            drop(s);
            // Out of service: no point in hammering it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn all_ready(http: &reqwest::Client, nodes: &[Node]) -> bool {
    for n in nodes {
        if readyz(http, n).await["status"] != "ready" {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_ride_out_a_postgresql_restart_under_load() {
    let pg = OwnPostgres::start();
    let (nodes, root) = cluster(&pg.url(), None, &[]).await;
    let http = reqwest::Client::new();
    let (ident, verifier) = identity_and_verifier(&http, &nodes[0], &root, "restart").await;
    // A key every node has verified, so it is in every cache when PostgreSQL goes. (Once
    // each node's change feed is connected: connecting flushes the cache.)
    for n in &nodes {
        wait_for_change_feed(&http, n).await;
    }
    let warm = post(
        &http,
        &nodes[0],
        "/v1/keys",
        &root,
        json!({"identity_id": ident}),
    )
    .await;
    let warm_key = warm["key"].as_str().unwrap().to_owned();
    // Twice: the notification of the key's creation (which makes caches forget its
    // digest, in case they hold a "not found") may land after the first load.
    for _ in 0..2 {
        for n in &nodes {
            let r = post(&http, n, "/v1/verify", &verifier, json!({"key": warm_key})).await;
            assert_eq!(r["code"], "VALID");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(write_keys(
                http.clone(),
                bases.clone(),
                root.clone(),
                ident.clone(),
                seen.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The restart: PostgreSQL stops (ending every session), stays down 3 s, comes back.
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile: not ready, and a verify of a cached key is still answered.
    for n in &nodes {
        let r = http.get(format!("{}/readyz", n.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = http
            .post(format!("{}/v1/verify", n.base))
            .bearer_auth(&verifier)
            .json(&json!({"key": warm_key}))
            .send()
            .await
            .unwrap();
        let (status, body) = (r.status(), r.text().await.unwrap());
        assert!(
            status == StatusCode::OK && body.contains("\"VALID\""),
            "a warm cache serves through the outage: {status} {body}"
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let up_at = Instant::now();
    println!("PostgreSQL down for {:?}", up_at - down_at);

    // Recovery by themselves: every node ready again, and writes succeed on each.
    let recovered = loop {
        if all_ready(&http, &nodes).await {
            break up_at.elapsed();
        }
        assert!(
            up_at.elapsed() < Duration::from_secs(30),
            "nodes did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let before = seen.lock().await.acknowledged.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().await.acknowledged.len() < before + 30 {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner();
    println!(
        "all nodes ready {recovered:?} after PostgreSQL was back; answers by status: {:?}; {} keys acknowledged",
        seen.statuses,
        seen.acknowledged.len()
    );
    for status in seen.statuses.keys() {
        assert!(
            [201, 503].contains(status),
            "only 201 or 503 during a restart, got {status} ({:?})",
            seen.statuses
        );
    }
    assert!(seen.statuses.get(&503).copied().unwrap_or(0) > 0);

    // No acknowledged change lost: every key acknowledged is there and verifies.
    let listed = {
        let mut ids = std::collections::BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/keys?identity_id={ident}&limit=1000", nodes[1].base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = http
                .get(url)
                .bearer_auth(&root)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for k in page["items"].as_array().unwrap() {
                ids.insert(k["id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break ids,
            }
        }
    };
    for (i, (id, key)) in seen.acknowledged.iter().enumerate() {
        assert!(listed.contains(id), "acknowledged key {id} lost");
        if i % 10 == 0 {
            let r = post(
                &http,
                &nodes[i % 3],
                "/v1/verify",
                &verifier,
                json!({"key": key}),
            )
            .await;
            assert_eq!(r["code"], "VALID");
        }
    }

    // The change feed came back too: a revocation on one node reaches the others (whose
    // caches hold the key) within a second.
    let id = warm["id"].as_str().unwrap();
    for n in &nodes[1..] {
        let r = post(&http, n, "/v1/verify", &verifier, json!({"key": warm_key})).await;
        assert_eq!(r["code"], "VALID");
    }
    revoke_until_everywhere(
        &http,
        &nodes,
        &root,
        &verifier,
        (id, &warm_key),
        Duration::from_secs(1),
    )
    .await;
    drop(nodes);
    drop(pg);
}

/// The value of the first sample of `metric` whose line starts with `prefix`.
async fn metric(http: &reqwest::Client, node: &Node, prefix: &str) -> f64 {
    let text = http
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the node's change feed has connected (it flushes the cache once then).
async fn wait_for_change_feed(http: &reqwest::Client, node: &Node) {
    let start = Instant::now();
    while metric(
        http,
        node,
        "keyward_cluster_invalidations_total{kind=\"flush\"}",
    )
    .await
        < 1.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "change feed not connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Verifies `key` `calls` times round robin over `nodes`; counts answers by code (or
/// by HTTP status when it is not 200).
async fn verify_codes(
    http: &reqwest::Client,
    nodes: &[&Node],
    verifier: &str,
    key: &str,
    calls: usize,
) -> BTreeMap<String, usize> {
    let mut codes = BTreeMap::new();
    for i in 0..calls {
        let r = http
            .post(format!("{}/v1/verify", nodes[i % nodes.len()].base))
            .bearer_auth(verifier)
            .json(&json!({"key": key}))
            .send()
            .await
            .unwrap();
        let code = if r.status() == StatusCode::OK {
            r.json::<Value>().await.unwrap()["code"]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            r.status().as_u16().to_string()
        };
        *codes.entry(code).or_default() += 1;
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_ride_out_redis_going_down_and_coming_back() {
    let db = TempDatabase::create().await;
    let mut redis = OwnRedis::start();
    let (mut nodes, root) = cluster(&db.url, Some(&redis.url()), &[]).await;
    // A fourth node that fails closed while Redis is away.
    let (closed, _) =
        common::serve_node(&db.url, Some(&redis.url()), &["--redis-fallback", "closed"]).await;
    let http = reqwest::Client::new();
    let (ident, v) = identity_and_verifier(&http, &nodes[0], &root, "redis").await;
    let limited = |limit: u32| json!({"identity_id": ident, "rate_limits": [{"name": "m", "limit": limit, "window_seconds": 3600}]});
    let three: Vec<&Node> = nodes.iter().collect();

    // Shared: 12 an hour in all over the three nodes.
    let k = post(&http, &nodes[0], "/v1/keys", &root, limited(12)).await;
    let codes = verify_codes(&http, &three, &v, k["key"].as_str().unwrap(), 30).await;
    assert_eq!(codes.get("VALID"), Some(&12), "{codes:?}");

    // Redis goes away.
    redis.stop();
    let k = post(&http, &nodes[0], "/v1/keys", &root, limited(12)).await;
    let key = k["key"].as_str().unwrap().to_owned();
    let codes = verify_codes(&http, &three, &v, &key, 60).await;
    // Per-node limits now: each node lets its own 12 through.
    assert_eq!(codes.get("VALID"), Some(&36), "{codes:?}");
    assert_eq!(codes.get("RATE_LIMITED"), Some(&24), "{codes:?}");
    for n in &nodes {
        let r = readyz(&http, n).await;
        assert_eq!(r["status"], "ready", "still ready: {r}");
        assert_eq!(r["checks"]["redis"], "unreachable: per-node rate limits");
        assert!(
            metric(&http, n, "keyward_redis_fallback_total").await > 0.0,
            "the fallback is counted"
        );
    }
    // Fail closed: rate-limited keys refused, keys without limits still served.
    let codes = verify_codes(&http, &[&closed], &v, &key, 3).await;
    assert_eq!(codes.get("503"), Some(&3), "{codes:?}");
    let free = post(
        &http,
        &nodes[0],
        "/v1/keys",
        &root,
        json!({"identity_id": ident}),
    )
    .await;
    let codes = verify_codes(&http, &[&closed], &v, free["key"].as_str().unwrap(), 3).await;
    assert_eq!(codes.get("VALID"), Some(&3), "{codes:?}");

    // Redis comes back: the nodes notice by themselves and share limits again.
    redis.restart();
    let back = Instant::now();
    loop {
        let mut ok = true;
        for n in nodes.iter().chain([&closed]) {
            ok &= readyz(&http, n).await["checks"]["redis"] == "ok";
        }
        if ok {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "Redis not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Readiness pings Redis directly; a verify may still be in its once-a-second retry
    // pause, so give the limiter that long before counting.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let k = post(&http, &nodes[0], "/v1/keys", &root, limited(12)).await;
    let mut all: Vec<&Node> = nodes.iter().collect();
    all.push(&closed);
    let codes = verify_codes(&http, &all, &v, k["key"].as_str().unwrap(), 40).await;
    assert_eq!(codes.get("VALID"), Some(&12), "shared again: {codes:?}");
    println!(
        "Redis noticed again by every node after {:?}",
        back.elapsed()
    );
    nodes.clear();
}
