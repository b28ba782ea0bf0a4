//! Conversions between kit's native types and the shared protobuf types: timestamps, free JSON
//! (`google.protobuf.Struct`/`Value`), and the temporal, history, diff and timeline messages.

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use serde_json::Value;
use uuid::Uuid;
use worktruck_proto::common::v1 as pb;

use crate::error::{Error, Result};
use crate::store::{Diff, Page, Temporal, TimelineEvent};

/// `DateTime<Utc>` → `Timestamp`.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// `Timestamp` → `DateTime<Utc>`, refusing out-of-range values.
pub fn datetime(t: &prost_types::Timestamp, field: &str) -> Result<DateTime<Utc>> {
    let nanos = u32::try_from(t.nanos).map_err(|_| Error::invalid(format!("{field}: invalid timestamp")))?;
    DateTime::from_timestamp(t.seconds, nanos)
        .map(|d| d.trunc_subsecs_micros())
        .ok_or_else(|| Error::invalid(format!("{field}: timestamp out of range")))
}

trait TruncMicros {
    fn trunc_subsecs_micros(self) -> Self;
}
impl TruncMicros for DateTime<Utc> {
    fn trunc_subsecs_micros(self) -> Self {
        chrono::SubsecRound::trunc_subsecs(self, 6)
    }
}

/// An optional `Timestamp` field → optional `DateTime<Utc>`.
pub fn opt_datetime(t: Option<&prost_types::Timestamp>, field: &str) -> Result<Option<DateTime<Utc>>> {
    t.map(|t| datetime(t, field)).transpose()
}

/// Parses a UUID path or body field, naming the field in the error.
pub fn uuid(s: &str, field: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim()).map_err(|_| Error::invalid(format!("{field} must be a UUID, got {}", crate::error::quote(s))))
}

/// JSON → protobuf `Value`.
pub fn to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(to_value).collect() }),
        Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// JSON object → protobuf `Struct` (a non-object gives an empty struct).
pub fn to_struct(v: &Value) -> prost_types::Struct {
    prost_types::Struct {
        fields: v
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
            .unwrap_or_default(),
    }
}

/// Protobuf `Value` → JSON; integral numbers become JSON integers.
pub fn from_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// Protobuf `Struct` → JSON object, keys sorted (protobuf maps have no order).
pub fn from_struct(s: &prost_types::Struct) -> Value {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    Value::Object(keys.into_iter().map(|k| (k.clone(), from_value(&s.fields[k]))).collect())
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null)
    }
}

/// The `_temporal` block.
pub fn temporal(t: &Temporal) -> pb::Temporal {
    pb::Temporal {
        as_of: t.as_of.map(timestamp),
        valid_at: t.valid_at.map(timestamp),
        sys_from: Some(timestamp(t.sys_from)),
        sys_to: t.sys_to.map(timestamp),
        valid_from: Some(timestamp(t.valid_from)),
        valid_to: t.valid_to.map(timestamp),
        captured_by: t.captured_by.clone(),
        capture_reason: t.capture_reason.clone(),
    }
}

/// A history page as its response. `render` turns a stored document into the entity's JSON.
pub fn history_response(
    page: Page<(i64, bool, Value, Temporal)>,
    cursor_scope: &str,
    render: impl Fn(&Value) -> Value,
) -> pb::HistoryResponse {
    pb::HistoryResponse {
        has_more: page.next.is_some(),
        next_cursor: page.next.map(|c| c.encode(cursor_scope)).unwrap_or_default(),
        data: page
            .rows
            .into_iter()
            .map(|(version, deleted, doc, t)| pb::Version {
                version,
                deleted,
                data: Some(to_struct(&render(&doc))),
                temporal: Some(temporal(&t)),
            })
            .collect(),
    }
}

/// A diff as its response.
pub fn diff_response(id: Uuid, from: DateTime<Utc>, to: DateTime<Utc>, d: Diff) -> pb::DiffResponse {
    pb::DiffResponse {
        id: id.to_string(),
        from: Some(timestamp(from)),
        to: Some(timestamp(to)),
        created_in_window: d.created_in_window,
        deleted_in_window: d.deleted_in_window,
        intermediate_versions: d.intermediate_versions,
        changes: d
            .changes
            .into_iter()
            .map(|c| pb::FieldChange { field: c.field, before: Some(to_value(&c.before)), after: Some(to_value(&c.after)) })
            .collect(),
    }
}

/// Timeline events as their response.
pub fn timeline_response(events: Vec<TimelineEvent>) -> pb::TimelineResponse {
    pb::TimelineResponse {
        data: events
            .into_iter()
            .map(|e| pb::TimelineEvent {
                at: Some(timestamp(e.at)),
                valid_from: Some(timestamp(e.valid_from)),
                version: e.version,
                change: e.change,
                field: e.field,
                before: Some(to_value(&e.before)),
                after: Some(to_value(&e.after)),
                captured_by: e.captured_by,
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_a_struct_round_trip_with_integers_intact() {
        let v = json!({"born": 1815, "pi": 3.5, "tags": ["a", null, true], "nested": {"x": -2}});
        assert_eq!(from_struct(&to_struct(&v)), v);
    }
}
