//! **A test fixture, not a product.** It serves the part of Qdrant's gRPC API that image-search uses
//! (collections, aliases, points upsert/query/get/delete/count/scroll, field indexes, health) from
//! embedded Qdrant shards (`qdrant-edge`), so that the server backend of the `vectors` crate is
//! tested over real gRPC where no Qdrant server can be installed. Production uses the real Qdrant
//! server (`deploy/`).
//!
//! It implements the services with `qdrant-client`'s generated tonic traits. Every call or option it
//! does not serve answers `unimplemented` (or `invalid_argument` for a malformed request), so a gap
//! shows as a failing test, never as a silently wrong answer. Semantics follow the server where they
//! matter to us: a missing collection is `NOT_FOUND`, `CreateAlias` over an existing alias re-points
//! it, the actions of one `UpdateAliases` apply all or nothing, writes are flushed before answering.
//!
//! Layout under the data directory: `{collection}/` (the edge shard), `{collection}.json` (size,
//! distance, metadata, payload indexes) and `aliases.json`.

mod convert;
mod service;

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use tokio::{sync::oneshot, task::JoinHandle};

pub use service::Engine;

/// A running fixture server; `stop` (or dropping it) shuts it down and releases its shards.
pub struct QdrantFixture {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl QdrantFixture {
    /// Serves the data directory on a free port of 127.0.0.1.
    pub async fn start(data: &Path) -> anyhow::Result<Self> {
        Self::start_at("127.0.0.1:0".parse().expect("literal address"), data).await
    }

    pub async fn start_at(addr: SocketAddr, data: &Path) -> anyhow::Result<Self> {
        let engine = Engine::open(data)?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(service::serve(engine, listener, async {
            let _ = rx.await;
        }));
        Ok(QdrantFixture { addr, shutdown: Some(tx), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gRPC url to give `qdrant-client`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits until the shards are closed (a restart on the same directory works).
    /// Connections get a graceful GOAWAY; one that lingers past a few seconds is cut.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "qdrant fixture stopped with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "qdrant fixture task failed"),
                Err(_) => task.abort(),
            }
        }
    }
}

impl Drop for QdrantFixture {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
