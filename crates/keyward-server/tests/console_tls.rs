//! The console over HTTPS (`--tls-cert`): its cookies are marked Secure.

use keyward_server::{Security, ServerConfig, tls};
use reqwest::header::{COOKIE, SET_COOKIE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cookies_are_secure_over_https() {
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
    let parts = keyward_server::Parts {
        security,
        ..Default::default()
    };
    let server = keyward_server::start_with_parts(store, parts, cfg.listen)
        .await
        .unwrap();
    let base = format!("https://localhost:{}", server.addr.port());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let login = client
        .get(format!("{base}/console/login"))
        .send()
        .await
        .unwrap();
    let login_cookie = login.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(login_cookie.contains("Secure"), "{login_cookie}");
    let pair = login_cookie.split(';').next().unwrap().to_owned();
    let token = pair.split_once('=').unwrap().1.to_owned();
    let signed_in = client
        .post(format!("{base}/console/login"))
        .header(COOKIE, pair)
        .form(&[
            ("csrf", token.as_str()),
            ("mode", "key"),
            ("key", root.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("keyward_console="))
        .unwrap();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(flag), "{flag}: {session}");
    }
    server.stop().await.unwrap();
}
