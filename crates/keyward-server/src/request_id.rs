//! Request ids: a random per-process prefix and a counter (`3f9c1a2b7d04-000000000042`).
//!
//! Unique across restarts and nodes (the prefix) without a random draw per request:
//! a UUIDv4 per request cost a `getrandom` system call on every call, verify included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

#[derive(Clone)]
pub struct Sequential {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Sequential {
    pub fn new() -> Self {
        // The tail of a UUIDv7 is random.
        let prefix = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
        Sequential {
            prefix: prefix.into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for Sequential {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n:012}", self.prefix);
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}
