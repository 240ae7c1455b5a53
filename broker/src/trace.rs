//! The trace context in message headers (W3C `traceparent`), so one asset's trace runs from the
//! coordinator through the embedder to the writer. Uses the current `tracing` span's OpenTelemetry
//! context: with no OpenTelemetry layer installed (OTLP not configured) there is none, and
//! messages go without the header. Only binaries install layers and exporters.

use std::collections::HashMap;

use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of `span`, if it belongs to a sampled OpenTelemetry trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(crate::TRACEPARENT)
}

/// The `traceparent` of the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of the remote span a message's `traceparent` names (nothing when absent or
/// malformed: the span then starts a trace of its own).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = HashMap::from([(crate::TRACEPARENT.to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace id in a `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_span_continues_the_trace_of_the_message() {
        use opentelemetry::trace::TracerProvider;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        use tracing_subscriber::layer::SubscriberExt;

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let publisher = tracing::info_span!("publish_job");
        let tp = publisher.in_scope(current_traceparent).expect("a traceparent inside an OpenTelemetry span");
        assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
        drop(publisher);

        let consumer = tracing::info_span!("embed_job");
        set_parent(&consumer, Some(&tp));
        let child_tp = traceparent_of(&consumer).unwrap();
        assert_eq!(trace_id(&child_tp), trace_id(&tp), "the same trace");
        assert_ne!(child_tp, tp, "a span of its own");
        drop(consumer);

        // garbage starts a new trace rather than failing
        let other = tracing::info_span!("other");
        set_parent(&other, Some("not-a-traceparent"));
        assert_ne!(trace_id(&traceparent_of(&other).unwrap()), trace_id(&tp));
        drop(other);

        let spans = exporter.get_finished_spans().unwrap();
        let embed = spans.iter().find(|s| s.name == "embed_job").unwrap();
        let publish = spans.iter().find(|s| s.name == "publish_job").unwrap();
        assert_eq!(embed.span_context.trace_id(), publish.span_context.trace_id());
        assert_eq!(embed.parent_span_id, publish.span_context.span_id(), "the consumer's span is a child of the publisher's");
    }

    #[test]
    fn without_an_opentelemetry_layer_there_is_no_header() {
        let span = tracing::info_span!("plain");
        assert_eq!(span.in_scope(current_traceparent), None);
    }
}
