//! Cluster mode with the real binary: three `keyward serve` processes on loopback over
//! one PostgreSQL database (of this test's own) and the machine's Redis
//! (`KEYWARD_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! Revocation propagation (measured), a quota race over the three nodes, shared rate
//! limits, and a node killed (`kill -9`) while it held the background-job lock.

use std::time::{Duration, Instant};

use keyward_store::testkit::TempDatabase;
use serde_json::{Value, json};

mod common;

use common::{Node, machine_redis, post, readyz, revoke_until_everywhere};

async fn cluster(db: &TempDatabase) -> (Vec<Node>, String) {
    common::cluster(&db.url, Some(&machine_redis()), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_propagation_quota_race_and_shared_limits() {
    let db = TempDatabase::create().await;
    let (nodes, root) = cluster(&db).await;
    let http = reqwest::Client::new();
    let ident = post(
        &http,
        &nodes[0],
        "/v1/identities",
        &root,
        json!({"name": "c", "owner": "o"}),
    )
    .await;
    let ident = ident["id"].as_str().unwrap().to_owned();
    let verifier = post(
        &http,
        &nodes[0],
        "/v1/keys",
        &root,
        json!({"identity_id": ident, "scopes": ["keyward:verify"]}),
    )
    .await;
    let v = verifier["key"].as_str().unwrap().to_owned();

    // Revocation propagation: revoke on node 0, poll nodes 1 and 2.
    let mut times = Vec::new();
    for _ in 0..30 {
        let k = post(
            &http,
            &nodes[0],
            "/v1/keys",
            &root,
            json!({"identity_id": ident}),
        )
        .await;
        let (key, id) = (k["key"].as_str().unwrap(), k["id"].as_str().unwrap());
        for n in &nodes[1..] {
            let r = post(&http, n, "/v1/verify", &v, json!({"key": key})).await;
            assert_eq!(r["code"], "VALID");
        }
        let took =
            revoke_until_everywhere(&http, &nodes, &root, &v, (id, key), Duration::from_secs(5))
                .await;
        times.push(took);
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "3 processes: revoke on node 0 until REVOKED on nodes 1 and 2: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        times[times.len() - 1]
    );
    assert!(p(0.99) < Duration::from_secs(1));

    // Quota race: 3000 calls, 96 at a time, spread over the nodes; quota 500.
    const QUOTA: usize = 500;
    const CALLS: usize = 3000;
    let k = post(
        &http,
        &nodes[0],
        "/v1/keys",
        &root,
        json!({"identity_id": ident, "remaining": QUOTA}),
    )
    .await;
    let key = k["key"].as_str().unwrap().to_owned();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(96));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..CALLS {
        let (http, base, v, key, sem) = (
            http.clone(),
            bases[i % 3].clone(),
            v.clone(),
            key.clone(),
            sem.clone(),
        );
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let r: Value = http
                .post(format!("{base}/v1/verify"))
                .bearer_auth(v)
                .json(&json!({"key": key}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["code"].as_str().unwrap().to_owned()
        });
    }
    let mut valid = 0;
    while let Some(code) = tasks.join_next().await {
        match code.unwrap().as_str() {
            "VALID" => valid += 1,
            "USAGE_EXCEEDED" => {}
            other => panic!("unexpected {other}"),
        }
    }
    println!(
        "quota race: {CALLS} calls over 3 nodes in {:?}, {valid} accepted",
        start.elapsed()
    );
    assert_eq!(valid, QUOTA, "no overshoot, no undershoot");

    // Shared rate limits: 20 a minute in all, whichever node is asked.
    let k = post(
        &http,
        &nodes[0],
        "/v1/keys",
        &root,
        json!({"identity_id": ident,
        "rate_limits": [{"name": "m", "limit": 20, "window_seconds": 60}]}),
    )
    .await;
    let key = k["key"].as_str().unwrap();
    let mut valid = 0;
    for i in 0..60 {
        let r = post(&http, &nodes[i % 3], "/v1/verify", &v, json!({"key": key})).await;
        if r["code"] == "VALID" {
            valid += 1;
        }
    }
    assert_eq!(valid, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_it_held_the_job_lock_is_replaced() {
    let db = TempDatabase::create().await;
    let (mut nodes, _root) = cluster(&db).await;
    let http = reqwest::Client::new();
    let start = Instant::now();
    let leader = loop {
        let mut leaders = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if readyz(&http, n).await["checks"]["jobs"] == "leader" {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "several leaders: {leaders:?}");
        if let Some(&i) = leaders.first() {
            break i;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // kill -9: no goodbye; PostgreSQL ends the session and frees the lock.
    let mut dead = nodes.remove(leader);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let killed = Instant::now();
    loop {
        let mut leaders = 0;
        for n in &nodes {
            if readyz(&http, n).await["checks"]["jobs"] == "leader" {
                leaders += 1;
            }
        }
        assert!(leaders <= 1);
        if leaders == 1 {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "takeover after kill -9 of the leader: {:?}",
        killed.elapsed()
    );
}
