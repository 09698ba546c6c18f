//! The verify hot path must not allocate: `KeyPolicy::evaluate` on the VALID path and
//! `IpAllowlist::allows`. A counting global allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chrono::{TimeZone, Utc};
use keyward_core::VerifyCode;
use keyward_core::ip::IpAllowlist;
use keyward_core::key;
use keyward_core::permission::Permission;
use keyward_core::policy::{KeyPolicy, VerifyRequest};

struct Counting;

thread_local! {
    // `const` initialisation: touching it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn the_counter_sees_allocations() {
    let (s, n) = allocations_in(|| String::from("x"));
    assert_eq!(s, "x");
    assert!(n > 0);
}

#[test]
fn valid_path_does_not_allocate() {
    let policy = KeyPolicy {
        revoked_at: Some(Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap()),
        expires_at: Some(Utc.with_ymd_and_hms(2032, 1, 1, 0, 0, 0).unwrap()),
        enabled: true,
        identity_enabled: true,
        ip_allowlist: IpAllowlist::parse(&["10.0.0.0/8", "2001:db8::/32"]).unwrap(),
        scopes: smallvec::smallvec!["orders:*".into(), "billing:read".into()],
    };
    let perm = Permission::parse("orders:read AND (billing:read OR billing:admin)").unwrap();
    let scopes = vec!["orders:write".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: Some(&perm),
        ip: Some("::ffff:10.1.2.3".parse().unwrap()),
    };
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (code, n) = allocations_in(|| policy.evaluate(&req, now));
    assert_eq!(code, VerifyCode::Valid);
    assert_eq!(n, 0);

    let addr = "2001:db8::1".parse().unwrap();
    let (allowed, n) = allocations_in(|| policy.ip_allowlist.allows(addr));
    assert!(allowed);
    assert_eq!(n, 0);
}

#[test]
fn key_parse_does_not_allocate() {
    let minted = key::mint(&key::KeyPrefix::default());
    let (parsed, n) = allocations_in(|| key::parse(&minted.plaintext).is_ok());
    assert!(parsed);
    assert_eq!(n, 0);
}
