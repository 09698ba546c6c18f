//! The web console in a real browser: headless Chromium driven through chromedriver
//! (fantoccini). One walk through the main flows, on each store: sign in with a key,
//! create an identity and a key, see the key once, verify it through the API, see the
//! usage chart and the alert it raised, disable it from the alerts timeline, rotate and
//! revoke it, and read the audit log.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without
//! them the test says so loudly and passes, except in CI (`CI=true`), where it fails.
//! With `KEYWARD_CONSOLE_SCREENSHOTS=<folder>` it saves screenshots of the main pages
//! there (that is how `docs/console/*.png` are made).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and Chromium, or `None` (after saying why) when they are missing
/// outside CI.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let driver = find_program(&["chromedriver"]);
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    match (driver, chromium) {
        (Some(d), Some(c)) => Some((d, c)),
        _ => {
            let msg = "console browser tests need chromium and chromedriver \
                       (apt-get install chromium chromium-driver)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}: missing in CI");
            }
            eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
            None
        }
    }
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(program: &Path) -> Driver {
    let port = keyward_store::testkit::free_port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Ready once it accepts connections.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not start"
        );
        tokio::task::yield_now().await;
    }
    driver
}

async fn open_browser(driver: &Driver, chromium: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

struct Walk<'a> {
    c: Client,
    s: &'a TestServer,
    shots: Option<PathBuf>,
}

impl Walk<'_> {
    async fn go(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.s.base))
            .await
            .unwrap();
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "no {css} ({e}) on {}: {}",
                self.c.current_url().await.unwrap(),
                self.c.source().await.unwrap_or_default()
            ),
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap();
    }

    /// Reloads `path` until `css` is on it (for what background writers add).
    async fn reload_until(&self, path: &str, css: &str) -> fantoccini::elements::Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.go(path).await;
            if let Ok(e) = self.c.find(Locator::Css(css)).await {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} never appeared on {path}"
            );
        }
    }

    async fn shot(&self, name: &str) {
        if let Some(dir) = &self.shots {
            let png = self.c.screenshot().await.unwrap();
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Verifies `key` through the API, as presented from `ip`.
    async fn verify_from(&self, key: &str, scopes: serde_json::Value, ip: &str) -> String {
        let v = self
            .s
            .post(
                "/v1/verify",
                &self.s.root,
                json!({"key": key, "scopes": scopes, "ip": ip}),
            )
            .await;
        v.ok(200)["code"].as_str().unwrap().to_owned()
    }

    async fn verify(&self, key: &str, scopes: serde_json::Value) -> String {
        self.verify_from(key, scopes, "203.0.113.10").await
    }
}

store_test!(multi_thread a_security_engineer_walks_through_the_console);
async fn a_security_engineer_walks_through_the_console(s: TestServer) {
    let Some((driver_program, chromium)) = browser_programs() else {
        return;
    };
    let driver = start_driver(&driver_program).await;
    let c = open_browser(&driver, &chromium).await;
    // Screenshots once, from the embedded store's run.
    let shots = std::env::var_os("KEYWARD_CONSOLE_SCREENSHOTS")
        .filter(|_| s.backend == Backend::Sqlite)
        .map(PathBuf::from);
    let w = Walk { c, s: &s, shots };
    let result = walk(&w).await;
    w.c.close().await.unwrap();
    drop(driver);
    result
}

async fn walk(w: &Walk<'_>) {
    // Signed out: the sign-in page.
    w.go("/console").await;
    w.wait_for("#key-sign-in").await;
    w.shot("sign-in").await;
    w.fill("#key", &w.s.root).await;
    w.click("#key-sign-in").await;
    w.wait_for("nav a[aria-current='page'][href='/console']")
        .await;

    // An identity.
    w.click("nav a[href='/console/identities']").await;
    w.click("#new-identity").await;
    w.fill("#name", "billing-worker").await;
    w.fill("#owner", "payments-team").await;
    w.fill("#description", "Charges cards for the shop").await;
    w.click("#create-identity").await;
    let identity_id = w.wait_for("#identity-id").await.text().await.unwrap();

    // A key: scopes, expiry, an allowlist-free key with a small rate limit.
    w.click("#new-key").await;
    w.fill("#name", "billing prod").await;
    w.fill("#scopes", "orders:read\norders:write").await;
    w.fill("#ttl_days", "30").await;
    w.fill("#rate_limit", "3").await;
    w.fill("#rate_window_seconds", "3600").await;
    w.click("#create-key").await;
    let shown = w.wait_for("#new-key").await;
    let key = shown.prop("value").await.unwrap().unwrap();
    assert!(key.starts_with("kw_"), "{key}");
    w.wait_for("#copy-key").await;
    w.shot("key-created").await;
    let key_id = w.wait_for("#new-key-id").await.text().await.unwrap();

    // Through the API: 3 accepted, then the rate limit, and one missing scope.
    for ip in ["203.0.113.10", "203.0.113.10", "198.51.100.7"] {
        assert_eq!(
            w.verify_from(&key, json!(["orders:read"]), ip).await,
            "VALID"
        );
    }
    assert_eq!(w.verify(&key, json!(["orders:read"])).await, "RATE_LIMITED");
    assert_eq!(
        w.verify(&key, json!(["billing:admin"])).await,
        "INSUFFICIENT_SCOPE"
    );

    // The key's page: the chart counts all five (the usage writer is asynchronous).
    w.click("#done").await;
    w.wait_for("#key-id").await;
    w.reload_until(
        &format!("/console/keys/{key_id}"),
        "#usage-chart svg[data-total='5']",
    )
    .await;
    assert!(
        !w.c.source().await.unwrap().contains(&key),
        "the key page shows the key"
    );
    w.shot("key").await;

    // The rate limit raised an alert; disable the key from the timeline.
    w.reload_until("/console/alerts", "#alerts li").await;
    w.shot("alerts").await;
    let source = w.c.source().await.unwrap();
    assert!(source.contains("key.rate_limited"), "{source}");
    w.click("#alerts li form button").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while w.verify(&key, json!([])).await != "DISABLED" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key was not disabled"
        );
    }
    w.wait_for("#alerts").await;

    // Enable it again, then rotate it with a grace period.
    w.go(&format!("/console/keys/{key_id}")).await;
    w.click("#enable").await;
    w.wait_for("#disable").await;
    w.click("#rotate").await;
    w.fill("#grace_hours", "2").await;
    w.click("#confirm-rotate").await;
    let new_key = w
        .wait_for("#new-key")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new_key, key);
    assert_eq!(w.verify(&new_key, json!(["orders:write"])).await, "VALID");
    // The old key is in its grace period: not revoked (still at its rate limit).
    assert_eq!(w.verify(&key, json!([])).await, "RATE_LIMITED");
    w.click("#done").await;
    w.wait_for("#lineage li:nth-child(2)").await;

    // Revoke the old key after the confirmation.
    w.go(&format!("/console/keys/{key_id}")).await;
    w.click("#revoke").await;
    w.click("#confirm-revoke").await;
    let state = w.wait_for("#key-state").await.text().await.unwrap();
    assert_eq!(state, "revoked");
    assert_eq!(w.verify(&key, json!([])).await, "REVOKED");

    // The identity page and list, the overview, the audit log with its chain.
    w.go(&format!("/console/identities/{identity_id}")).await;
    w.wait_for("#keys").await;
    w.wait_for("#posture-score").await;
    // The key's rate-limit alert shows on its identity's page too.
    w.wait_for("#alerts li").await;
    w.shot("identity").await;
    w.go("/console/identities").await;
    w.wait_for("#identities").await;
    w.shot("identities").await;
    w.go("/console").await;
    w.wait_for("#usage-chart svg").await;
    w.shot("overview").await;
    w.go("/console/audit").await;
    let chain = w.wait_for("#chain-status").await.text().await.unwrap();
    assert!(chain.contains("Chain verified"), "{chain}");
    let table = w.wait_for("#audit-table").await.text().await.unwrap();
    for action in ["key.create", "key.rotate", "key.revoke", "identity.create"] {
        assert!(
            table.contains(action),
            "{action} missing from the audit log"
        );
    }
    assert!(!w.c.source().await.unwrap().contains(&key));
    w.shot("audit").await;
    // Filtering narrows the table (htmx swaps it; without script the form reloads).
    w.fill("#f-action", "key.revoke").await;
    w.c.find(Locator::Css("form.filters button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    w.wait_for("#audit-table caption").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows =
            w.c.find_all(Locator::Css("#audit-table tbody tr"))
                .await
                .unwrap();
        let text = w.wait_for("#audit-table").await.text().await.unwrap();
        if !text.contains("key.create") && text.contains("key.revoke") {
            assert!(!rows.is_empty());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the filter never applied: {text}"
        );
    }

    // A phone's width.
    w.c.set_window_size(390, 844).await.unwrap();
    w.go(&format!("/console/keys/{key_id}")).await;
    w.wait_for("#key-id").await;
    w.shot("key-phone").await;

    // Sign out: back to the sign-in page, and the console is closed.
    w.c.set_window_size(1280, 1000).await.unwrap();
    w.go("/console").await;
    w.click("#sign-out").await;
    w.wait_for("#key-sign-in").await;
    w.go("/console/audit").await;
    w.wait_for("#key-sign-in").await;
}
