//! A service that requires a Keyward key or token with `orders:read`, in one line.
//!
//! ```sh
//! KEYWARD_URL=http://127.0.0.1:7070 KEYWARD_TOKEN=kw_... \
//!     cargo run -p keyward-client --example require_keyward
//! curl -H "Authorization: Bearer $KEY_OR_TOKEN" http://127.0.0.1:8080/orders
//! ```
//!
//! `KEYWARD_TOKEN` is this service's own key, with scope `keyward:verify`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use keyward_client::{Client, KeywardPrincipal, RequireKeyward};

async fn orders(who: KeywardPrincipal) -> String {
    format!(
        "orders for identity {} (key {}, scopes {:?})\n",
        who.identity_id, who.key_id, who.scopes
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("KEYWARD_URL").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let verifier = Client::new(&url, std::env::var("KEYWARD_TOKEN").ok())?;

    let app = Router::new()
        .route("/orders", get(orders))
        .layer(RequireKeyward::new(verifier).require_scopes(["orders:read"]));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("listening on http://{}", listener.local_addr()?);
    // ConnectInfo lets Keyward check keys' IP allowlists against the real caller.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
