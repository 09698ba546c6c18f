//! HTTPS with `--tls-cert`/`--tls-key`: a client trusting the test certificate talks to
//! the server over TLS (authenticated calls included), answers carry HSTS, and plain
//! HTTP to the same port gets nothing.

use keyward_server::{Security, ServerConfig, tls};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();

    let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    let store = keyward_server::open_store(&cfg).await.unwrap();
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let security = Security {
        tls: Some(tls::load(&cert_path, &key_path).unwrap()),
        hsts: true,
        ..Security::default()
    };
    let server = keyward_server::start_with_parts(
        store,
        keyward_server::Parts {
            security,
            ..Default::default()
        },
        cfg.listen,
    )
    .await
    .unwrap();
    let port = server.addr.port();

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let health = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let keys = client
        .get(format!("https://localhost:{port}/v1/keys"))
        .bearer_auth(root.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 200);
    let _: Value = keys.json().await.unwrap();
    // The source address reaches the audit log over TLS as over plain HTTP.
    let audit: Value = client
        .get(format!("https://localhost:{port}/v1/audit"))
        .bearer_auth(root.as_str())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(audit["items"].is_array());

    // A client that does not trust the certificate, or speaks plain HTTP, gets nothing.
    assert!(
        reqwest::get(format!("https://localhost:{port}/healthz"))
            .await
            .is_err()
    );
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );
    server.stop().await.unwrap();

    // A certificate with another key is refused at start.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&key_path, other.key_pair.serialize_pem()).unwrap();
    assert!(tls::load(&cert_path, &key_path).is_err());
}
