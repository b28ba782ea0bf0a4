//! Events continue the trace of the request that wrote them: the outbox keeps the writer's trace
//! context and the relay sends it as `traceparent`, on the in-process bus and on NATS.

use std::time::Duration;

use futures::StreamExt;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sqlx::migrate::Migrator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;
use worktruck_kit::bus::{Bus, Message};
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::outbox::{self, Relay};
use worktruck_kit::testing::{TestData, backends, nats_url};

const SUBJECT: &str = "worktruck.kittest.thing.created.v1";

async fn write_event(db: &Db, tenant: Uuid) {
    let mut tx = db.begin(Scope::Tenant(tenant), true).await.unwrap();
    let data = outbox::any("google.protobuf.Empty", &());
    outbox::enqueue(&mut tx, tenant, SUBJECT, Uuid::now_v7(), 1, "key:test", data, now()).await.unwrap();
    tx.commit().await.unwrap();
}

fn traceparent(m: &Message) -> Option<&str> {
    m.trace.iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn events_carry_the_trace_context_of_their_writer() {
    // Spans with real trace ids (no exporter), and W3C propagation, as `telemetry::init` sets up
    // when an OTLP endpoint is configured.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    for backend in backends() {
        let data = TestData::new(backend).await;
        let db = Db::connect_and_migrate(
            &data.db_options("kit_trace"),
            Migrator::with_migrations(vec![]),
            Migrator::with_migrations(vec![]),
        )
        .await
        .unwrap();
        let tenant = Uuid::now_v7();

        let span = tracing::info_span!("request");
        let trace_id = span.context().span().span_context().trace_id().to_string();
        assert_ne!(trace_id, "00000000000000000000000000000000", "the test tracer makes real ids");
        write_event(&db, tenant).instrument(span).await;
        // An event written outside any trace carries none.
        write_event(&db, tenant).await;

        let bus = Bus::memory();
        let mut events = Box::pin(bus.subscribe_memory().unwrap());
        assert_eq!(Relay::new(db.clone(), bus).drain().await.unwrap(), 2);
        let traced = events.next().await.unwrap();
        let parent = traceparent(&traced).unwrap_or_else(|| panic!("{backend:?}: no traceparent"));
        assert!(parent.starts_with(&format!("00-{trace_id}-")), "{parent} is not of trace {trace_id}");
        let untraced = events.next().await.unwrap();
        assert!(untraced.trace.is_empty(), "{:?}", untraced.trace);

        // On NATS the same context travels as a message header.
        let Some(url) = nats_url() else { continue };
        let nc = async_nats::connect(&url).await.unwrap();
        let mut sub = nc.subscribe(SUBJECT).await.unwrap();
        nc.flush().await.unwrap();
        let span = tracing::info_span!("request");
        let trace_id = span.context().span().span_context().trace_id().to_string();
        write_event(&db, tenant).instrument(span).await;
        let bus = Bus::nats(&url).await.unwrap();
        bus.ensure_stream().await.unwrap();
        Relay::new(db.clone(), bus).drain().await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("event in time").unwrap();
            let headers = m.headers.unwrap();
            if headers.get("Worktruck-Tenant").map(|v| v.as_str()) != Some(tenant.to_string().as_str()) {
                continue;
            }
            let parent = headers.get("traceparent").expect("a traceparent header").as_str().to_owned();
            assert!(parent.starts_with(&format!("00-{trace_id}-")), "{backend:?}: {parent}");
            break;
        }
    }
}
