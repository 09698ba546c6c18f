//! An accepted verification on a warm cache allocates nothing: a counting allocator
//! watches this thread while the warm path runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use keyward_core::KeyPrefix;
use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::permission::Permission;
use keyward_core::policy::VerifyRequest;
use keyward_core::ratelimit::RateLimitSpec;
use keyward_core::{VerifyCode, key};
use keyward_server::verifier::Verifier;
use keyward_store::{SqliteStore, Store};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-local may already be gone while a thread exits.
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[tokio::test(flavor = "current_thread")]
async fn an_accepted_warm_verification_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let now = keyward_server::now();
    let identity = Identity {
        id: uuid::Uuid::now_v7(),
        name: "svc".into(),
        owner: "team".into(),
        description: String::new(),
        meta: Default::default(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    let audit = AuditEntry {
        at: now,
        actor: "test".into(),
        action: "test".into(),
        target: "t".into(),
        request_id: None,
        source_ip: None,
        detail: serde_json::Value::Null,
    };
    store.create_identity(&identity, &audit).await.unwrap();
    let minted = key::mint(&KeyPrefix::default());
    let record = KeyRecord {
        id: uuid::Uuid::now_v7(),
        identity_id: identity.id,
        name: "k".into(),
        prefix: "kw".into(),
        start: minted.start.clone(),
        digest: minted.digest,
        scopes: vec!["orders:*".into(), "billing:read".into()],
        created_at: now,
        updated_at: now,
        expires_at: Some(now + chrono::Duration::days(1)),
        revoked_at: None,
        enabled: true,
        ip_allowlist: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        rate_limits: vec![
            RateLimitSpec {
                name: "burst".into(),
                limit: 1_000_000,
                window_seconds: 1,
            },
            RateLimitSpec {
                name: "day".into(),
                limit: 100_000_000,
                window_seconds: 86_400,
            },
        ],
        remaining: None,
        last_used_at: None,
        meta: Default::default(),
        rotated_from: None,
        rotated_to: None,
    };
    store.create_key(&record, &audit).await.unwrap();
    // The real Prometheus recorder, so counting a verification is measured too.
    let metrics = keyward_server::metrics_handle();
    let (verifier, _queue) = Verifier::new(store, 1000);
    let scopes = vec!["orders:read".to_owned()];
    let permission = Permission::parse("orders:write AND (billing:read OR billing:admin)").unwrap();
    let req = VerifyRequest {
        scopes: &scopes,
        permission: Some(&permission),
        ip: Some("10.1.2.3".parse().unwrap()),
    };
    let key = minted.plaintext.as_str();
    // The first call fills the cache (and may allocate); the second queues the key for
    // its last-use write once.
    assert_eq!(
        verifier.verify(key, &req, now).await.unwrap().code,
        VerifyCode::Valid
    );
    assert_eq!(
        verifier.try_verify_warm(key, &req, now).unwrap().code,
        VerifyCode::Valid
    );

    let before = allocations();
    for _ in 0..10_000 {
        let outcome = verifier.try_verify_warm(key, &req, now).expect("warm");
        assert_eq!(outcome.code, VerifyCode::Valid);
    }
    assert_eq!(allocations() - before, 0, "the warm VALID path allocated");
    // ... and yet every one of them was queued as a usage event (no writer runs here).
    assert_eq!(verifier.usage().depth(), 10_002);
    assert!(
        metrics
            .render()
            .contains("keyward_verify_total{code=\"VALID\"} 10002")
    );
}
