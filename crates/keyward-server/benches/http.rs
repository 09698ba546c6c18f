//! The HTTP service in process: `GET /healthz` and a warm `POST /v1/verify` sent through
//! the server's whole router and middleware (as `serve` mounts them), without sockets.
//!
//! Why: over loopback (`bench/load.sh`) this VM's speed drifts by 10-20% within a
//! minute, more than most changes to the verify path are worth. In process, the same
//! two requests measure what the handler, its extractors and the middleware add to a
//! verification (the server's share of the gap between verify and the floor), steadily
//! enough to compare two builds. What it leaves out (hyper's parsing and encoding,
//! sockets, waking the client) `bench/load.sh` measures.
//!
//! `cargo bench -p keyward-server --bench http` (`KEYWARD_BENCH_KEYS=20000` by default:
//! the key count of `bench/load.sh`). Keys are minted through the API with one scope,
//! which each verify asks for; the caller holds `keyward:verify`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, criterion_group};
use keyward_server::state::{AppState, SharedState};
use keyward_server::verifier::Verifier;
use keyward_store::{SqliteStore, Store};
use tower::ServiceExt;

/// The binary's allocator, counting the allocations of the thread that runs the
/// exchanges (printed per request after the timings: a count does not drift).
struct Counting;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // `try_with`: the thread-local may already be gone while a thread exits.
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) per exchange of `requests`, on this thread.
fn allocations_per_request(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    requests: Vec<Request<Body>>,
) -> f64 {
    let n = requests.len() as f64;
    let before = ALLOCATIONS.with(|c| c.get());
    for req in requests {
        black_box(exchange(rt, app, req));
    }
    (ALLOCATIONS.with(|c| c.get()) - before) as f64 / n
}

/// The usage writer, on a thread of its own as in the server, and what stops it.
type UsageWriter = (
    tokio::sync::watch::Sender<bool>,
    keyward_server::background::Background<()>,
);

/// The router as `serve` mounts it on plain HTTP, over `store`, and its usage writer.
fn app(store: Arc<dyn Store>) -> (Router, Arc<Verifier>, UsageWriter) {
    let (verifier, last_used) =
        Verifier::for_server(store.clone(), keyward_server::CACHE_CAPACITY, None, true);
    // Last-use times are written behind by a task the bench does not run; the queue
    // only has to exist.
    std::mem::forget(last_used);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = keyward_server::background::spawn(
        "keyward-usage",
        keyward_server::usage::write_usage(verifier.usage().clone(), store.clone(), stopped),
    );
    let state = AppState::new(SharedState {
        store: store.clone(),
        verifier: verifier.clone(),
        metrics: keyward_server::metrics_handle(),
        redis: None,
        jobs_leader: Arc::new(AtomicBool::new(false)),
        vault: None,
        audit_key: None,
        throttle: Arc::new(keyward_server::throttle::Throttle::default()),
        tokens: keyward_server::tokens::SigningKeys::new(store, None),
    });
    let app =
        keyward_server::security_headers::apply(keyward_server::router(state), false, &[]).unwrap();
    (app, verifier, (stop, writer))
}

/// A request as it arrives from a client on loopback.
fn request(method: &str, path: &str, bearer: Option<&str>, body: Option<String>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1");
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let mut req = match body {
        Some(json) => b
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, json.len())
            .body(Body::from(json)),
        None => b.body(Body::empty()),
    }
    .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

/// Sends `req` and reads the whole answer, as hyper would to write it.
async fn send(app: &Router, req: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    (
        status,
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
}

/// One measured exchange. Not inlined, so that a profiler can count it apart from the
/// setup: `valgrind --tool=callgrind --toggle-collect='http::exchange*'` gives the
/// instructions per request, the same from run to run (see BENCHMARKS.md).
#[inline(never)]
fn exchange(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, bytes::Bytes) {
    rt.block_on(send(app, req))
}

fn json_field(body: &[u8], field: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v[field].as_str().unwrap().to_owned()
}

fn http(c: &mut Criterion) {
    let n: usize = std::env::var("KEYWARD_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (app, verifier, writer, checker, keys) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
        let (app, verifier, writer) = app(store);
        let post = |path: &str, body: String| request("POST", path, Some(&root), Some(body));
        let (s, b) = send(
            &app,
            post(
                "/v1/identities",
                r#"{"name":"bench","owner":"bench"}"#.into(),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
        let identity = json_field(&b, "id");
        let mint = |scopes: &str| {
            post(
                "/v1/keys",
                format!(r#"{{"identity_id":"{identity}","scopes":{scopes}}}"#),
            )
        };
        let (_, b) = send(&app, mint(r#"["keyward:verify"]"#)).await;
        let checker = json_field(&b, "key");
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, b) = send(&app, mint(r#"["orders:read"]"#)).await;
            assert_eq!(s, StatusCode::CREATED);
            keys.push(json_field(&b, "key"));
        }
        (app, verifier, writer, checker, keys)
    });
    let bodies: Vec<String> = keys
        .iter()
        .map(|k| format!(r#"{{"key":"{k}","scopes":["orders:read"]}}"#))
        .collect();
    // Warm: every key (and the caller's) in the verify cache.
    rt.block_on(async {
        for body in &bodies {
            let (s, b) = send(
                &app,
                request("POST", "/v1/verify", Some(&checker), Some(body.clone())),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(json_field(&b, "code"), "VALID");
        }
    });
    assert!(verifier.cached() > n);

    c.bench_function("http/GET /healthz (in process)", |b| {
        b.iter(|| {
            let (s, body) = exchange(&rt, &app, request("GET", "/healthz", None, None));
            assert_eq!(s, StatusCode::OK);
            black_box(body)
        })
    });
    let mut i = 0usize;
    c.bench_function(
        &format!("http/POST /v1/verify, warm, {n} keys (in process)"),
        |b| {
            b.iter(|| {
                i = (i + 7919) % bodies.len();
                let req = request(
                    "POST",
                    "/v1/verify",
                    Some(&checker),
                    Some(bodies[i].clone()),
                );
                let (s, body) = exchange(&rt, &app, req);
                assert_eq!(s, StatusCode::OK);
                black_box(body)
            })
        },
    );
    let healthz: Vec<_> = (0..1000)
        .map(|_| request("GET", "/healthz", None, None))
        .collect();
    let verifies: Vec<_> = (0..1000)
        .map(|j| {
            let body = bodies[(j * 7919) % bodies.len()].clone();
            request("POST", "/v1/verify", Some(&checker), Some(body))
        })
        .collect();
    eprintln!(
        "allocations per request: GET /healthz {:.1}, POST /v1/verify {:.1}",
        allocations_per_request(&rt, &app, healthz),
        allocations_per_request(&rt, &app, verifies),
    );
    // Whether the writer kept up: a queue near capacity means events were dropped.
    eprintln!(
        "usage queue depth after the run: {}",
        verifier.usage().depth()
    );
    let (stop, writer) = writer;
    let _ = stop.send(true);
    rt.block_on(writer).unwrap();
}

criterion_group!(benches, http);

fn main() {
    keyward_server::allocator::configure();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
