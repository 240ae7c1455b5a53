//! Logging and tracing setup of the binary (the only place that installs a subscriber or an
//! exporter). Logs go to stderr through the env filter; when an OTLP endpoint is configured, the
//! spans (one per job and per batch, continued across processes through the message headers) are
//! exported there too, under the service name `imgsearch-<role>`.

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Installs the subscriber: `IMGSEARCH_LOG` if set, else `default_filter`; plus the OTLP exporter
/// when `otlp_endpoint` is given. Must run inside the tokio runtime (the exporter's gRPC client).
/// Keep the returned provider and `shutdown` it at exit, so the last spans are sent.
pub fn init(default_filter: &str, otlp_endpoint: Option<&str>, service: &str) -> Result<Option<SdkTracerProvider>> {
    let filter = EnvFilter::try_from_env("IMGSEARCH_LOG").unwrap_or_else(|_| default_filter.into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry().with(filter).with(fmt).init();
        return Ok(None);
    };
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build().with_context(|| format!("cannot set up the OTLP exporter to {endpoint}"))?;
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(Resource::builder().with_service_name(service.to_owned()).build()).build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("imgsearch"));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).init();
    Ok(Some(provider))
}
