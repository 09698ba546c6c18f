//! Keyward's HTTP server: axum routes over the domain logic of `keyward-core` and a
//! `keyward-store::Store`, with the verify cache, rate limiters and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keyward_store::Store;
use zeroize::Zeroizing;

/// What `keyward serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The embedded store's folder.
    pub data_dir: PathBuf,
    /// `None`: the embedded store in `data_dir`.
    pub database_url: Option<String>,
}

/// Opens (creating if needed) the configured store and applies its migrations.
pub async fn open_store(cfg: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    todo!("{cfg:?}")
}

/// Creates the root identity and the bootstrap root key (scope `keyward:admin`) if the
/// store is empty. Returns the key, to be shown once, or `None` if the store was
/// already initialised.
pub async fn bootstrap(store: &dyn Store) -> anyhow::Result<Option<Zeroizing<String>>> {
    todo!("{}", std::ptr::addr_of!(store).is_null())
}

/// A running server: its bound address and a handle to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Graceful shutdown: stops accepting, finishes in-flight requests, flushes
    /// write-behind state.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }
}

/// Binds `cfg.listen` (port 0 picks a free port), bootstraps an empty store (printing
/// `root key: <key>` on a line of its own to stderr), and serves in a background task.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    todo!("{cfg:?}")
}

/// Runs until `shutdown` resolves (SIGTERM/ctrl-c in the binary), then shuts down
/// gracefully.
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = start(cfg).await?;
    shutdown.await;
    server.stop().await
}
