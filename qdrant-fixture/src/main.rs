//! `qdrant-fixture --addr 127.0.0.1:6334 --data DIR`: a TEST FIXTURE serving the part of Qdrant's
//! gRPC API that image-search uses, for developing the distributed mode without Docker. It is not
//! Qdrant; production uses the real server (see deploy/).

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Test fixture: serves Qdrant's gRPC API (the part image-search uses) from an embedded shard. Not a Qdrant server.")]
struct Args {
    /// Address to listen on (Qdrant's gRPC port is 6334).
    #[arg(long, default_value = "127.0.0.1:6334")]
    addr: SocketAddr,
    /// Directory holding the collections.
    #[arg(long)]
    data: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,qdrant_edge=error".into())).init();
    let args = Args::parse();
    let fixture = qdrant_fixture::QdrantFixture::start_at(args.addr, &args.data).await?;
    tracing::info!(url = %fixture.url(), data = %args.data.display(), "qdrant-fixture serving (a test fixture, not Qdrant)");
    tokio::signal::ctrl_c().await?;
    fixture.stop().await;
    Ok(())
}
