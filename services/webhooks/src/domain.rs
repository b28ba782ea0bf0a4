//! Webhooks as domain code sees them: event types and their patterns, validation, and the
//! mapping of stored rows to the wire types (which never carry a secret).

use serde_json::Value;
pub use worktruck_kit::check::{check_metadata, check_text, merge};
use worktruck_kit::error::quote;
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct};
use worktruck_kit::{Error, Result};
use worktruck_proto::webhooks::v1 as pb;

use crate::queries::{DeliveryRow, WebhookRow};

/// Longest accepted URL.
const MAX_URL_CHARS: usize = 2048;
/// Most patterns per webhook.
const MAX_PATTERNS: usize = 50;
/// Longest pattern.
const MAX_PATTERN_CHARS: usize = 200;

/// The event type of a bus subject: `worktruck.contacts.contact.created.v1` →
/// `contacts.contact.created`; `None` for a subject that is not a versioned Worktruck event.
pub fn event_type(subject: &str) -> Option<&str> {
    let t = subject.strip_prefix("worktruck.")?.strip_suffix(".v1")?;
    (t.split('.').count() >= 2 && t.split('.').all(|s| !s.is_empty())).then_some(t)
}

/// Whether the event type `t` matches `pattern`, segment by segment, where `*` stands for one
/// or more segments (`contacts.*` matches every contacts event, `*.deleted` every delete, `*`
/// everything).
pub fn matches(pattern: &str, t: &str) -> bool {
    fn go(p: &[&str], s: &[&str]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((&"*", rest)) => (1..=s.len()).any(|k| go(rest, &s[k..])),
            Some((seg, rest)) => s.first() == Some(seg) && go(rest, &s[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = t.split('.').collect();
    go(&p, &s)
}

/// Validates the event type patterns of a webhook: 1 to 50, each of segments of lower-case
/// letters, digits and `_`, or `*`; duplicates dropped, order kept.
pub fn check_patterns(list: &[String]) -> Result<Vec<String>> {
    if list.is_empty() || list.len() > MAX_PATTERNS {
        return Err(Error::validation(format!(
            "event_types must hold 1 to {MAX_PATTERNS} patterns such as contacts.* or crm.deal.won"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for p in list {
        let ok = !p.is_empty()
            && p.len() <= MAX_PATTERN_CHARS
            && p.split('.').all(|seg| {
                seg == "*"
                    || (!seg.is_empty()
                        && seg
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            });
        if !ok {
            return Err(Error::validation(format!(
                "event_types: {} is not a pattern: dot-separated segments of lower-case letters, digits and _, or * for one or more segments (contacts.*, crm.deal.won, *)",
                quote(p)
            )));
        }
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The patterns of a PATCH's `event_types`: a list of strings.
pub fn patterns_of(list: &prost_types::ListValue) -> Result<Vec<String>> {
    list.values
        .iter()
        .map(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => Ok(s.clone()),
            _ => Err(Error::validation("event_types must be a list of patterns")),
        })
        .collect::<Result<Vec<_>>>()
        .and_then(|l| check_patterns(&l))
}

/// The length check of a URL (the SSRF guard checks the rest).
pub fn check_url_length(v: &str) -> Result<String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_URL_CHARS {
        return Err(Error::validation(format!(
            "url must be 1 to {MAX_URL_CHARS} characters"
        )));
    }
    Ok(v.to_owned())
}

/// The `metadata` of a request, validated (an empty object when absent).
pub fn metadata(m: Option<&prost_types::Struct>) -> Result<Value> {
    let v = m
        .map(from_struct)
        .unwrap_or_else(|| Value::Object(Default::default()));
    check_metadata(&v)?;
    Ok(v)
}

fn webhook_status(s: &str) -> pb::WebhookStatus {
    match s {
        "active" => pb::WebhookStatus::Active,
        _ => pb::WebhookStatus::Disabled,
    }
}

/// The wire status of a stored delivery status.
pub fn delivery_status(s: &str) -> pb::DeliveryStatus {
    match s {
        "pending" => pb::DeliveryStatus::Pending,
        "delivered" => pb::DeliveryStatus::Delivered,
        _ => pb::DeliveryStatus::Failed,
    }
}

/// The stored name of a wire delivery status.
pub fn delivery_status_name(s: pb::DeliveryStatus) -> Option<&'static str> {
    match s {
        pb::DeliveryStatus::Pending => Some("pending"),
        pb::DeliveryStatus::Delivered => Some("delivered"),
        pb::DeliveryStatus::Failed => Some("failed"),
        pb::DeliveryStatus::Unspecified => None,
    }
}

/// A webhook on the wire (never its secrets).
pub fn webhook_to_pb(w: &WebhookRow, now: chrono::DateTime<chrono::Utc>) -> pb::Webhook {
    pb::Webhook {
        id: w.id.to_string(),
        tenant_id: w.tenant_id.to_string(),
        url: w.url.clone(),
        event_types: w.patterns(),
        description: w.description.clone(),
        status: webhook_status(&w.status) as i32,
        disabled_reason: w.disabled_reason.clone(),
        secret_hint: w.secret_hint.clone(),
        previous_secret_expires_at: w.previous_expires_at.filter(|t| *t > now).map(timestamp),
        consecutive_failures: w.consecutive_failures,
        failing_since: w.failing_since.map(timestamp),
        last_success_at: w.last_success_at.map(timestamp),
        metadata: Some(to_struct(&w.metadata)),
        version: w.version,
        created_at: Some(timestamp(w.created_at)),
        updated_at: Some(timestamp(w.updated_at)),
    }
}

/// A delivery on the wire.
pub fn delivery_to_pb(d: &DeliveryRow) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        id: d.id.to_string(),
        webhook_id: d.webhook_id.to_string(),
        event_id: d.event_id.to_string(),
        event_type: d.event_type.clone(),
        entity_key: d.entity_key.clone(),
        status: delivery_status(&d.status) as i32,
        attempts: d.attempts,
        next_attempt_at: (d.status == "pending").then(|| timestamp(d.next_attempt_at)),
        last_error: d.last_error.clone(),
        last_status_code: d.last_status_code,
        created_at: Some(timestamp(d.created_at)),
        last_attempt_at: d.last_attempt_at.map(timestamp),
        delivered_at: d.delivered_at.map(timestamp),
        payload: Some(to_struct(&d.payload)),
    }
}

/// The first `max` characters of `s`.
pub fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_come_from_subjects() {
        assert_eq!(
            event_type("worktruck.contacts.contact.created.v1"),
            Some("contacts.contact.created")
        );
        assert_eq!(
            event_type("worktruck.webhooks.webhook.disabled.v1"),
            Some("webhooks.webhook.disabled")
        );
        assert_eq!(event_type("worktruck.contacts.v1"), None);
        assert_eq!(event_type("other.contacts.contact.created.v1"), None);
        assert_eq!(event_type("worktruck.contacts.contact.created.v2"), None);
    }

    #[test]
    fn a_star_is_one_or_more_segments() {
        assert!(matches("contacts.*", "contacts.contact.created"));
        assert!(matches("contacts.*", "contacts.tag.attached"));
        assert!(!matches("contacts.*", "crm.deal.won"));
        assert!(!matches("contacts.*", "contacts"));
        assert!(matches("*", "crm.deal.won"));
        assert!(matches("*.deleted", "notes.note.deleted"));
        assert!(!matches("*.deleted", "notes.note.restored"));
        assert!(matches("crm.deal.won", "crm.deal.won"));
        assert!(!matches("crm.deal.won", "crm.deal.lost"));
        assert!(matches("contacts.*.created", "contacts.contact.created"));
        assert!(!matches("contacts.*.created", "contacts.created"));
    }

    #[test]
    fn patterns_are_checked() {
        assert_eq!(
            check_patterns(&["contacts.*".into(), "contacts.*".into(), "*".into()]).unwrap(),
            vec!["contacts.*", "*"]
        );
        for bad in [
            "",
            "Contacts.*",
            "contacts..x",
            "contacts.**",
            "contacts.con tact",
            "a.b-c",
        ] {
            assert!(check_patterns(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(check_patterns(&[]).is_err());
        assert!(check_patterns(&vec!["x".to_owned(); 51]).is_err());
    }
}
