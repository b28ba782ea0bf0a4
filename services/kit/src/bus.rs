//! The event bus: NATS JetStream in production, an in-process broadcast when embedded. Both carry
//! the same messages: a subject `worktruck.<domain>.<entity>.<action>.v1`, a protobuf
//! `worktruck.common.v1.Event` payload, and the event id, tenant and trace context (W3C
//! `traceparent`) in headers.
//!
//! A NATS server that comes back without its storage has no `WORKTRUCK` stream; a publish that
//! finds no stream declares it again and retries, and the bus remembers whether its last
//! publish failed, so readiness can report a relay that cannot publish while connected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::{Error, ErrorCode, Result};

/// The JetStream stream that holds every Worktruck event.
pub const STREAM: &str = "WORKTRUCK";
/// The subjects it captures.
pub const SUBJECTS: &str = "worktruck.>";

/// One event on the bus.
#[derive(Debug, Clone)]
pub struct Message {
    /// Event id (also the JetStream `Nats-Msg-Id`, so a re-publish is deduplicated).
    pub event_id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// Subject.
    pub subject: String,
    /// Encoded `worktruck.common.v1.Event`.
    pub payload: Bytes,
    /// The writing request's trace context (`traceparent`, `tracestate`); empty when untraced.
    pub trace: Vec<(String, String)>,
}

/// What [`Bus::watch`] yields.
#[derive(Debug, Clone)]
pub enum Watched {
    /// An event on a watched subject.
    Event(Message),
    /// Events may have been missed (the connection dropped and came back, or an in-process
    /// receiver fell behind): whatever the watcher derived from events should be rebuilt.
    Gap,
}

/// Whether `subject` matches a NATS subject `pattern` (`*` one token, `>` the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// The trace headers a message may carry (anything else from the outbox is dropped).
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Where events go.
#[derive(Clone)]
pub enum Bus {
    /// NATS JetStream, shared by every clone.
    Nats(Arc<Nats>),
    /// In-process (embedded mode and tests).
    Memory(broadcast::Sender<Message>),
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bus::Nats(_) => "Bus::Nats",
            Bus::Memory(_) => "Bus::Memory",
        })
    }
}

/// A JetStream context and what the last publish through it found.
pub struct Nats {
    js: async_nats::jetstream::Context,
    /// The last publish failed (no stream and none could be declared, no ack, no connection).
    failing: AtomicBool,
}

impl Bus {
    /// An in-process bus.
    pub fn memory() -> Self {
        Bus::Memory(broadcast::channel(4096).0)
    }

    /// Connects to NATS. The connection retries in the background, so a NATS outage at start-up
    /// or later delays events (they wait in the outbox) but never fails writes.
    pub async fn nats(url: &str) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .name("worktruck")
            .connect(url)
            .await
            .map_err(|e| Error::new(ErrorCode::Unavailable, format!("nats connect: {e}")))?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(3));
        Ok(Bus::Nats(Arc::new(Nats { js, failing: AtomicBool::new(false) })))
    }

    /// Makes sure the JetStream stream exists (idempotent).
    pub async fn ensure_stream(&self) -> Result<()> {
        if let Bus::Nats(n) = self {
            n.js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECTS.into()],
                duplicate_window: Duration::from_secs(120),
                max_age: Duration::from_secs(7 * 24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::new(ErrorCode::Unavailable, format!("jetstream stream: {e}")))?;
        }
        Ok(())
    }

    /// Publishes one message and waits for the broker's acknowledgement. When JetStream has
    /// no stream for the subject (NATS restarted without its storage), declares the stream
    /// again and publishes once more.
    pub async fn publish(&self, m: &Message) -> Result<()> {
        // A traced event's publish is a PRODUCER span in its request's trace, and the event
        // carries that span's context on, so its consumers' spans are the publish's children.
        let span = crate::telemetry::message_span("publish", &m.subject, &m.event_id.to_string(), &m.trace, None);
        let Some(span) = span else { return self.send(m).await };
        let mut traced = m.clone();
        traced.trace = span.in_scope(crate::telemetry::trace_fields);
        let result = tracing::Instrument::instrument(self.send(&traced), span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        result
    }

    async fn send(&self, m: &Message) -> Result<()> {
        match self {
            Bus::Memory(tx) => {
                // No receivers is fine: nobody listens in-process yet.
                let _ = tx.send(m.clone());
                Ok(())
            }
            Bus::Nats(n) => {
                let mut result = n.publish(m).await;
                if let Err(Publish::NoStream) = result {
                    tracing::warn!(stream = STREAM, "jetstream has no stream for events (storage lost?); declaring it again");
                    result = match self.ensure_stream().await {
                        Ok(()) => n.publish(m).await,
                        Err(e) => Err(Publish::Other(e.message)),
                    };
                }
                n.failing.store(result.is_err(), Ordering::Release);
                result.map_err(|e| Error::new(ErrorCode::Unavailable, e.to_string()))
            }
        }
    }

    /// True while connected to the broker (always for the in-process bus).
    pub fn connected(&self) -> bool {
        match self {
            Bus::Memory(_) => true,
            Bus::Nats(n) => n.js.client().connection_state() == async_nats::connection::State::Connected,
        }
    }

    /// True when events can be published now: connected, and the last publish, if any,
    /// succeeded (a connected broker can still refuse, e.g. one without JetStream).
    pub fn can_publish(&self) -> bool {
        match self {
            Bus::Memory(_) => true,
            Bus::Nats(n) => self.connected() && !n.failing.load(Ordering::Acquire),
        }
    }

    /// Watches `subjects` (a NATS pattern such as `worktruck.tenants.>`) from now on, at most
    /// once and without acknowledgements: for caches that drop what an event invalidates, not
    /// for work that must happen once per event (that needs a durable consumer). A
    /// [`Watched::Gap`] says events may have been missed.
    pub fn watch(&self, subjects: &str) -> std::pin::Pin<Box<dyn futures::Stream<Item = Watched> + Send>> {
        let pattern = subjects.to_owned();
        match self {
            Bus::Memory(tx) => {
                let rx = tx.subscribe();
                Box::pin(futures::stream::unfold((rx, pattern), |(mut rx, pattern)| async move {
                    loop {
                        match rx.recv().await {
                            Ok(m) if subject_matches(&pattern, &m.subject) => return Some((Watched::Event(m), (rx, pattern))),
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => return Some((Watched::Gap, (rx, pattern))),
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }))
            }
            Bus::Nats(n) => {
                let client = n.js.client();
                Box::pin(futures::stream::unfold(NatsWatch { client, pattern, sub: None, connects: 0 }, NatsWatch::next))
            }
        }
    }

    /// Every event on `subject` (a NATS pattern) from `start` on, for work that must happen
    /// for each event even across restarts and outages: on NATS a durable JetStream pull
    /// consumer named `durable` (replicas of one service share it and split the work), each
    /// delivery acknowledged by [`Delivery::ack`] and redelivered when not; in process, the
    /// broadcast from now on ([`Watched::Gap`] when a receiver fell behind). Delivery is at
    /// least once and may reorder redeliveries: consumers deduplicate on the event id and
    /// never let an older event undo a newer one. The stream ends at shutdown only.
    pub fn consume(
        &self,
        durable: &str,
        subject: &str,
        start: chrono::DateTime<chrono::Utc>,
    ) -> std::pin::Pin<Box<dyn futures::Stream<Item = Delivered> + Send>> {
        match self {
            Bus::Memory(_) => Box::pin(self.watch(subject).map(|w| match w {
                Watched::Event(m) => Delivered::Event(Box::new(Delivery { message: m, ack: None })),
                Watched::Gap => Delivered::Gap,
            })),
            Bus::Nats(n) => {
                let state = Durable {
                    bus: self.clone(),
                    js: n.js.clone(),
                    name: durable.to_owned(),
                    subject: subject.to_owned(),
                    start,
                    messages: None,
                };
                Box::pin(futures::stream::unfold(state, Durable::next))
            }
        }
    }

    /// Subscribes to the in-process bus (the NATS side is read with a NATS client).
    pub fn subscribe_memory(&self) -> Option<impl futures::Stream<Item = Message> + use<>> {
        match self {
            Bus::Memory(tx) => Some(
                tokio_stream::wrappers::BroadcastStream::new(tx.subscribe()).filter_map(|m| async move { m.ok() }),
            ),
            Bus::Nats(_) => None,
        }
    }
}

/// Why a publish failed.
#[derive(Debug)]
enum Publish {
    /// JetStream has no stream capturing the subject.
    NoStream,
    /// Anything else (no connection, no ack in time, a refusal).
    Other(String),
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Publish::NoStream => write!(f, "nats publish: no stream found for the subject"),
            Publish::Other(e) => f.write_str(e),
        }
    }
}

impl Nats {
    async fn publish(&self, m: &Message) -> std::result::Result<(), Publish> {
        use async_nats::jetstream::context::PublishErrorKind;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", m.event_id.to_string().as_str());
        headers.insert("Worktruck-Tenant", m.tenant_id.to_string().as_str());
        for (k, v) in &m.trace {
            if TRACE_HEADERS.contains(&k.as_str()) && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                headers.insert(k.as_str(), v.as_str());
            }
        }
        let ack = self
            .js
            .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
            .await
            .map_err(|e| Publish::Other(format!("nats publish: {e}")))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => Err(Publish::NoStream),
            Err(e) => Err(Publish::Other(format!("nats ack: {e}"))),
        }
    }
}

/// What [`Bus::consume`] yields.
pub enum Delivered {
    /// An event, to acknowledge once handled.
    Event(Box<Delivery>),
    /// In process only: events were missed.
    Gap,
}

/// One event from [`Bus::consume`].
pub struct Delivery {
    /// The event.
    pub message: Message,
    ack: Option<async_nats::jetstream::Message>,
}

impl Delivery {
    /// Done with it: JetStream will not deliver it again.
    pub async fn ack(self) {
        if let Some(m) = self.ack
            && let Err(e) = m.ack().await
        {
            tracing::debug!(error = %e, "cannot acknowledge an event; it will come again");
        }
    }

    /// Not done: JetStream delivers it again after `delay`.
    pub async fn retry(self, delay: Duration) {
        if let Some(m) = self.ack
            && let Err(e) = m.ack_with(async_nats::jetstream::AckKind::Nak(Some(delay))).await
        {
            tracing::debug!(error = %e, "cannot ask for redelivery; it comes after the ack wait");
        }
    }
}

/// The state of a [`Bus::consume`] on NATS: the durable consumer's message stream, made
/// again (with the stream) whenever it fails, e.g. after NATS came back without storage.
struct Durable {
    bus: Bus,
    js: async_nats::jetstream::Context,
    name: String,
    subject: String,
    start: chrono::DateTime<chrono::Utc>,
    messages: Option<async_nats::jetstream::consumer::pull::Stream>,
}

/// A durable consumer's name as a metrics label: without the instance suffix
/// (`links-contacts-<32 hex>` is `links-contacts`), so restarts add no series.
fn consumer_label(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((kind, id)) if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) => kind.to_owned(),
        _ => name.to_owned(),
    }
}

impl Durable {
    async fn open(&self) -> std::result::Result<async_nats::jetstream::consumer::pull::Stream, String> {
        use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        self.bus.ensure_stream().await.map_err(|e| e.message)?;
        let stream = self.js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
        let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &self.name,
                pull::Config {
                    durable_name: Some(self.name.clone()),
                    filter_subject: self.subject.clone(),
                    deliver_policy: DeliverPolicy::ByStartTime { start_time: self.start },
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 256,
                    // A consumer nobody reads for a day goes; made again, it starts over
                    // from `start`, which its consumer's deduplication makes harmless.
                    inactive_threshold: Duration::from_secs(24 * 3600),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        consumer.messages().await.map_err(|e| e.to_string())
    }

    async fn next(mut self) -> Option<(Delivered, Durable)> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.open().await {
                    Ok(m) => self.messages = Some(m),
                    Err(e) => {
                        tracing::warn!(error = %e, consumer = %self.name, "cannot open a durable consumer; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(m)) => {
                    if let Ok(info) = m.info() {
                        use crate::telemetry::families::{BUS_PENDING, BUS_REDELIVERIES};
                        let consumer = consumer_label(&self.name);
                        metrics::gauge!(BUS_PENDING, "consumer" => consumer.clone()).set(info.pending as f64);
                        if info.delivered > 1 {
                            metrics::counter!(BUS_REDELIVERIES, "consumer" => consumer).increment(1);
                        }
                    }
                    let header = |k: &str| m.headers.as_ref().and_then(|h| h.get(k)).and_then(|v| v.as_str().parse::<Uuid>().ok());
                    let (Some(tenant_id), Some(event_id)) = (header("Worktruck-Tenant"), header("Nats-Msg-Id")) else {
                        // Not one of ours: nothing to do, ever.
                        let _ = m.ack().await;
                        continue;
                    };
                    let trace = TRACE_HEADERS
                        .iter()
                        .filter_map(|k| {
                            let v = m.headers.as_ref()?.get(*k)?;
                            Some(((*k).to_owned(), v.as_str().to_owned()))
                        })
                        .collect();
                    let message =
                        Message { event_id, tenant_id, subject: m.subject.to_string(), payload: m.payload.clone(), trace };
                    return Some((Delivered::Event(Box::new(Delivery { message, ack: Some(m) })), self));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, consumer = %self.name, "durable consumer failed; opening it again");
                    self.messages = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => {
                    self.messages = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// The state of a [`Bus::watch`] on NATS: a core subscription (JetStream publishes reach
/// core subscribers too) and the connection count when it was made, since a reconnect means
/// messages published meanwhile were not delivered.
struct NatsWatch {
    client: async_nats::Client,
    pattern: String,
    sub: Option<async_nats::Subscriber>,
    connects: u64,
}

impl NatsWatch {
    async fn next(mut self) -> Option<(Watched, NatsWatch)> {
        loop {
            let Some(sub) = self.sub.as_mut() else {
                match self.client.subscribe(self.pattern.clone()).await {
                    Ok(sub) => {
                        self.connects = self.client.statistics().connects.load(Ordering::Relaxed);
                        self.sub = Some(sub);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, subjects = %self.pattern, "cannot watch the bus; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            };
            tokio::select! {
                m = sub.next() => match m {
                    Some(m) => {
                        let header = |k: &str| m.headers.as_ref().and_then(|h| h.get(k)).and_then(|v| v.as_str().parse::<Uuid>().ok());
                        let (Some(tenant_id), Some(event_id)) = (header("Worktruck-Tenant"), header("Nats-Msg-Id")) else {
                            continue;
                        };
                        let message = Message { event_id, tenant_id, subject: m.subject.to_string(), payload: m.payload, trace: Vec::new() };
                        return Some((Watched::Event(message), self));
                    }
                    None => {
                        self.sub = None;
                        return Some((Watched::Gap, self));
                    }
                },
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    let connects = self.client.statistics().connects.load(Ordering::Relaxed);
                    if connects != self.connects {
                        self.connects = connects;
                        return Some((Watched::Gap, self));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn consumer_labels_drop_the_instance() {
        assert_eq!(super::consumer_label("links-contacts-0123456789abcdef0123456789abcdef"), "links-contacts");
        assert_eq!(super::consumer_label("webhooks"), "webhooks");
        assert_eq!(super::consumer_label("links-contacts-short"), "links-contacts-short");
    }

    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("worktruck.tenants.>", "worktruck.tenants.api_key.revoked.v1"));
        assert!(!subject_matches("worktruck.tenants.>", "worktruck.tenants"));
        assert!(!subject_matches("worktruck.tenants.>", "worktruck.contacts.contact.created.v1"));
        assert!(subject_matches("worktruck.*.contact.created.v1", "worktruck.contacts.contact.created.v1"));
        assert!(!subject_matches("worktruck.*", "worktruck.a.b"));
        assert!(subject_matches("a.b", "a.b"));
    }
}
