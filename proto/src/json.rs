//! JSON ⇄ [`DynamicMessage`] the way every Worktruck surface writes it (brief §4): proto field
//! names, 64-bit integers as numbers, unknown fields refused, enums as the reference API spells
//! them (`"kind": "person"`, never `CONTACT_KIND_UNSPECIFIED`), integral numbers inside
//! `google.protobuf.Struct` as JSON integers, output keys in proto declaration order.
//!
//! Surface-agnostic: REST, MCP and agents all call [`from_value`] and [`to_value`].

use prost_reflect::{
    DeserializeOptions, DynamicMessage, EnumDescriptor, EnumValueDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde_json::{Map, Value};

use crate::text;

const DESERIALIZE: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .stringify_64_bit_integers(false)
    .skip_default_fields(false);

/// Why a JSON document is not a valid message. The message names the offending field by its
/// dotted proto path (`metadata`, `data[0].kind`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The bytes are not JSON at all.
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// The document is JSON but not an object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A key names no field of the message.
    #[error("unknown field '{field}'")]
    UnknownField {
        /// Dotted path of the key.
        field: String,
    },
    /// A field's value has the wrong type or form.
    #[error("invalid value for field '{field}': {reason}")]
    InvalidValue {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A failure that no single field explains (e.g. two members of one oneof).
    #[error("{0}")]
    Invalid(String),
}

impl JsonError {
    /// The dotted path of the offending field, when one is known.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownField { field } | Self::InvalidValue { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Parses bytes as a JSON object (the shape of every request message); see [`parse`].
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    match parse(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::NotAnObject),
    }
}

/// Parses bytes as one JSON value the way every surface reads a body: UTF-8 only, and an
/// object that names a key twice is refused (it would otherwise mean its last value, which a
/// proxy or signature check that read the first may not have seen). Nesting is bounded by
/// serde_json's recursion limit (128) here, and by [`text::MAX_DEPTH`] in [`from_value`].
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = UniqueKeys
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// A [`Value`] deserialiser that refuses duplicate object keys.
#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {}", text::quote(&key))));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Builds a message of type `desc` from a JSON object. Keys are proto names (JSON names are
/// tolerated); enums may be short lower-case names (`person`) or full proto names.
pub fn from_value(desc: &MessageDescriptor, mut value: Value) -> Result<DynamicMessage, JsonError> {
    if !value.is_object() {
        return Err(JsonError::NotAnObject);
    }
    let depth = text::json_depth(&value);
    if depth > text::MAX_DEPTH {
        return Err(JsonError::Invalid(format!(
            "the document nests {depth} levels deep; at most {} are accepted",
            text::MAX_DEPTH
        )));
    }
    normalize_message(desc, &mut value, "")?;
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), &value, &DESERIALIZE)
        .map_err(|e| locate(desc, &value, "").unwrap_or_else(|| JsonError::Invalid(bounded(e))))?;
    text::check_message(&msg).map_err(|v| match v.field.is_empty() {
        true => JsonError::Invalid(v.reason),
        false => JsonError::InvalidValue { field: v.field, reason: v.reason },
    })?;
    Ok(msg)
}

/// A decoder's own words, cut so that an echo of the input stays short.
fn bounded(e: impl std::fmt::Display) -> String {
    text::bounded(&e.to_string(), 512)
}

/// Renders a message as JSON: proto names, declaration order, every non-optional scalar present,
/// enums as short names with `*_UNSPECIFIED` omitted, integral `Struct` numbers as integers.
pub fn to_value(msg: &DynamicMessage) -> Result<Value, JsonError> {
    let mut value = msg
        .serialize_with_options(serde_json::value::Serializer, &SERIALIZE)
        .map_err(|e| JsonError::Invalid(e.to_string()))?;
    shape_message(&msg.descriptor(), &mut value);
    Ok(value)
}

/// The JSON spelling of an enum value: the enum's SCREAMING_SNAKE name as prefix stripped,
/// lower case. `CONTACT_KIND_PERSON` of `ContactKind` → `person`.
pub fn enum_value_json_name(value: &EnumValueDescriptor) -> String {
    let prefix = format!("{}_", screaming_snake(value.parent_enum().name()));
    let name = value.name();
    name.strip_prefix(prefix.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// Finds an enum value by its JSON spelling (`person`) or its full proto name.
pub fn enum_value_from_json(desc: &EnumDescriptor, name: &str) -> Option<EnumValueDescriptor> {
    desc.get_value_by_name(name)
        .or_else(|| desc.values().find(|v| enum_value_json_name(v) == name))
}

/// `*_UNSPECIFIED` values mean "not set": they are never emitted nor offered in schemas.
pub fn is_unspecified(value: &EnumValueDescriptor) -> bool {
    value.name() == "UNSPECIFIED" || value.name().ends_with("_UNSPECIFIED")
}

/// Well-known types whose JSON form is itself structured (an object, a list or anything), so
/// they can be neither a query parameter nor a path variable.
pub fn is_structured_well_known(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Any"
            | "google.protobuf.Empty"
    )
}

/// True for the `google.protobuf` types whose JSON form is special (a string, free JSON, …)
/// rather than an object of their fields.
pub fn is_well_known(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Empty"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// `ContactKind` → `CONTACT_KIND`, `HTTPMethod` → `HTTP_METHOD`.
fn screaming_snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn is_null_value(desc: &EnumDescriptor) -> bool {
    desc.full_name() == "google.protobuf.NullValue"
}

/// `path.name`; a name longer than an error may quote is shown as [`text::quote`] gives it.
fn join(path: &str, name: &str) -> String {
    let name = if name.chars().count() > text::QUOTE_CHARS {
        std::borrow::Cow::Owned(text::quote(name))
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    if path.is_empty() {
        name.into_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn find_field(desc: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(key)
        .or_else(|| desc.get_field_by_json_name(key))
}

/// Input pre-pass: refuses unknown keys with their path and rewrites short enum names to proto
/// names, so that prost-reflect sees only what it accepts.
fn normalize_message(
    desc: &MessageDescriptor,
    value: &mut Value,
    path: &str,
) -> Result<(), JsonError> {
    let Some(object) = value.as_object_mut() else {
        return Ok(());
    };
    for (key, v) in object.iter_mut() {
        let field = find_field(desc, key).ok_or_else(|| JsonError::UnknownField {
            field: join(path, key),
        })?;
        let here = join(path, field.name());
        if field.is_map() {
            let value_kind = field
                .kind()
                .as_message()
                .map(|m| m.map_entry_value_field().kind());
            if let (Some(kind), Some(entries)) = (value_kind, v.as_object_mut()) {
                for (k, entry) in entries.iter_mut() {
                    normalize_single(&kind, entry, &join(&here, k))?;
                }
            }
        } else if field.is_list() {
            if let Some(items) = v.as_array_mut() {
                for (i, item) in items.iter_mut().enumerate() {
                    normalize_single(&field.kind(), item, &format!("{here}[{i}]"))?;
                }
            }
        } else {
            normalize_single(&field.kind(), v, &here)?;
        }
    }
    Ok(())
}

fn normalize_single(kind: &Kind, value: &mut Value, path: &str) -> Result<(), JsonError> {
    match kind {
        Kind::Enum(desc) if !is_null_value(desc) => {
            if let Value::String(s) = value {
                let found = enum_value_from_json(desc, s).ok_or_else(|| {
                    let expected: Vec<String> = desc
                        .values()
                        .filter(|v| !is_unspecified(v))
                        .map(|v| enum_value_json_name(&v))
                        .collect();
                    JsonError::InvalidValue {
                        field: path.to_owned(),
                        reason: format!(
                            "unknown value {}, expected one of: {}",
                            text::quote(s),
                            expected.join(", ")
                        ),
                    }
                })?;
                *s = found.name().to_owned();
            }
            Ok(())
        }
        Kind::Message(desc) if !is_well_known(desc) => normalize_message(desc, value, path),
        _ => Ok(()),
    }
}

/// Only on failure: finds the first field whose value alone fails to deserialise, descending
/// into nested messages, so that the error names the field rather than just the problem.
fn locate(desc: &MessageDescriptor, value: &Value, path: &str) -> Option<JsonError> {
    let object = value.as_object()?;
    for (key, v) in object {
        let field = find_field(desc, key)?;
        let single = Value::Object(Map::from_iter([(key.clone(), v.clone())]));
        let Err(e) = DynamicMessage::deserialize_with_options(desc.clone(), &single, &DESERIALIZE)
        else {
            continue;
        };
        let here = join(path, field.name());
        if let Kind::Message(inner) = field.kind() {
            if !is_well_known(&inner) && !field.is_map() {
                let deeper = match v.as_array() {
                    Some(items) if field.is_list() => items
                        .iter()
                        .enumerate()
                        .find_map(|(i, item)| locate(&inner, item, &format!("{here}[{i}]"))),
                    _ => locate(&inner, v, &here),
                };
                if deeper.is_some() {
                    return deeper;
                }
            }
        }
        return Some(JsonError::InvalidValue {
            field: here,
            reason: bounded(e),
        });
    }
    None
}

/// Output pass over prost-reflect's rendering of a message of type `desc`.
fn shape_message(desc: &MessageDescriptor, value: &mut Value) {
    match desc.full_name() {
        "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue" => {
            integral_numbers(value)
        }
        "google.protobuf.Any" => shape_any(desc, value),
        _ if is_well_known(desc) => {}
        _ => {
            let Some(object) = value.as_object_mut() else {
                return;
            };
            // `retain` keeps declaration order, which `preserve_order` maps would lose on remove.
            object.retain(|key, v| match desc.get_field_by_name(key) {
                Some(field) => shape_field(&field, v),
                None => true,
            });
            if desc.full_name() == TEMPORAL {
                all_axes(desc, object);
            }
        }
    }
}

/// The `_temporal` block's message.
const TEMPORAL: &str = "worktruck.common.v1.Temporal";
/// The four axes a `_temporal` block always names, `null` for an open end.
const AXES: [&str; 4] = ["sys_from", "sys_to", "valid_from", "valid_to"];

/// Whether `field` of `desc` is always rendered, `null` when unset (a `_temporal` axis).
pub fn always_named(desc: &MessageDescriptor, field: &FieldDescriptor) -> bool {
    desc.full_name() == TEMPORAL && AXES.contains(&field.name())
}

/// Puts every axis into a `_temporal` block (`null` when open), in declaration order, so that
/// a client reads `sys_to: null` as "current" rather than guessing from a missing key.
fn all_axes(desc: &MessageDescriptor, object: &mut Map<String, Value>) {
    if AXES.iter().all(|k| object.contains_key(*k)) {
        return;
    }
    let mut old = std::mem::take(object);
    for field in desc.fields() {
        let name = field.name();
        match old.remove(name) {
            Some(v) => {
                object.insert(name.to_owned(), v);
            }
            None if AXES.contains(&name) => {
                object.insert(name.to_owned(), Value::Null);
            }
            None => {}
        }
    }
    object.extend(old);
}

/// Returns false when the field must be dropped (an unspecified enum).
fn shape_field(field: &FieldDescriptor, value: &mut Value) -> bool {
    if field.is_map() {
        if let (Some(entry), Some(entries)) = (field.kind().as_message(), value.as_object_mut()) {
            let kind = entry.map_entry_value_field().kind();
            entries.retain(|_, v| shape_single(&kind, v));
        }
        true
    } else if field.is_list() {
        if let Some(items) = value.as_array_mut() {
            let kind = field.kind();
            items.retain_mut(|v| shape_single(&kind, v));
        }
        true
    } else {
        shape_single(&field.kind(), value)
    }
}

fn shape_single(kind: &Kind, value: &mut Value) -> bool {
    match kind {
        Kind::Enum(desc) if !is_null_value(desc) => {
            if let Value::String(s) = value {
                match desc.get_value_by_name(s) {
                    Some(v) if is_unspecified(&v) => return false,
                    Some(v) => *s = enum_value_json_name(&v),
                    None => {}
                }
            }
            true
        }
        Kind::Message(desc) => {
            shape_message(desc, value);
            true
        }
        _ => true,
    }
}

/// An `Any` renders as `{"@type": url, ...fields}` (or `{"@type", "value"}` for well-known
/// types); shape the embedded message when its type is in the pool.
fn shape_any(desc: &MessageDescriptor, value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    let Some(name) = object
        .get("@type")
        .and_then(Value::as_str)
        .and_then(|u| u.rsplit('/').next())
    else {
        return;
    };
    let Some(inner) = desc.parent_pool().get_message_by_name(name) else {
        return;
    };
    if is_well_known(&inner) {
        if let Some(v) = object.get_mut("value") {
            shape_message(&inner, v);
        }
    } else {
        shape_message(&inner, value);
    }
}

/// `google.protobuf.Value` stores every number as a double; render integral ones as integers
/// (`1815`, not `1815.0`) when they are exactly representable.
fn integral_numbers(value: &mut Value) {
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                if f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_EXACT {
                    *n = serde_json::Number::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(name: &str) -> MessageDescriptor {
        crate::registry::Registry::embedded()
            .unwrap()
            .pool()
            .get_message_by_name(name)
            .unwrap()
    }

    #[test]
    fn enums_use_short_lower_case_names_both_ways() {
        let desc = message("worktruck.contacts.v1.CreateContactRequest");
        let msg = from_value(&desc, json!({"kind": "person", "display_name": "Ada"})).unwrap();
        assert_eq!(
            msg.get_field_by_name("kind").unwrap().as_enum_number(),
            Some(1)
        );
        let msg = from_value(
            &desc,
            json!({"kind": "CONTACT_KIND_GROUP", "display_name": "G"}),
        )
        .unwrap();
        assert_eq!(
            msg.get_field_by_name("kind").unwrap().as_enum_number(),
            Some(3)
        );
        let out = to_value(&msg).unwrap();
        assert_eq!(out["kind"], "group");

        let err = from_value(&desc, json!({"kind": "robot"})).unwrap_err();
        assert_eq!(err.field(), Some("kind"));
        assert!(
            err.to_string().contains("person, organization, group"),
            "{err}"
        );

        let kind = crate::registry::Registry::embedded().unwrap();
        let plan = kind
            .pool()
            .get_enum_by_name("worktruck.tenants.v1.Plan")
            .unwrap();
        assert_eq!(
            enum_value_json_name(&plan.get_value_by_name("PLAN_ENTERPRISE").unwrap()),
            "enterprise"
        );
        assert_eq!(screaming_snake("HTTPMethod"), "HTTP_METHOD");
        assert_eq!(screaming_snake("ContactKind"), "CONTACT_KIND");
    }

    #[test]
    fn unspecified_enums_are_never_emitted_and_order_is_the_protos() {
        let desc = message("worktruck.contacts.v1.Contact");
        let msg = from_value(
            &desc,
            json!({"display_name": "Ada", "id": "c1", "version": 3}),
        )
        .unwrap();
        let out = to_value(&msg).unwrap();
        let object = out.as_object().unwrap();
        assert!(!object.contains_key("kind"), "{out}");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(&keys[..3], ["id", "tenant_id", "display_name"]);
        assert_eq!(out["version"], json!(3), "int64 is a JSON number");
        assert!(!out.to_string().contains("UNSPECIFIED"));
    }

    #[test]
    fn struct_integers_stay_integers() {
        let desc = message("worktruck.contacts.v1.Contact");
        let metadata = json!({"born": 1815, "ratio": 0.5, "nested": {"list": [1, 2.5, -3]}});
        let msg = from_value(&desc, json!({"metadata": metadata})).unwrap();
        let out = to_value(&msg).unwrap();
        // Map equality ignores key order; Struct keys have no declared order.
        assert_eq!(out["metadata"], metadata);
        assert!(out["metadata"]["born"].is_i64());
        assert!(
            out["metadata"].to_string().contains("\"born\":1815"),
            "{out}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let desc = message("worktruck.contacts.v1.CreateContactRequest");
        let err = from_value(&desc, json!({"display_name": "Ada", "bogus": 1})).unwrap_err();
        assert_eq!(
            err,
            JsonError::UnknownField {
                field: "bogus".into()
            }
        );
        assert_eq!(err.to_string(), "unknown field 'bogus'");
        let nested = message("worktruck.common.v1.HistoryResponse");
        let err = from_value(&nested, json!({"data": [{"version": 1}, {"nope": 1}]})).unwrap_err();
        assert_eq!(err.to_string(), "unknown field 'data[1].nope'");
        assert_eq!(
            from_value(&desc, json!([1])).unwrap_err(),
            JsonError::NotAnObject
        );
        assert!(matches!(parse_object(b"{"), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn bad_values_name_the_field() {
        let desc = message("worktruck.contacts.v1.GetContactRequest");
        let err = from_value(&desc, json!({"id": "x", "as_of": "yesterday"})).unwrap_err();
        assert_eq!(err.field(), Some("as_of"));
        assert!(
            err.to_string()
                .starts_with("invalid value for field 'as_of': invalid rfc3339 timestamp"),
            "{err}"
        );
        let ok = from_value(&desc, json!({"id": "x", "as_of": "2025-01-01T00:00:00Z"})).unwrap();
        assert!(ok.has_field_by_name("as_of"));

        let nested = message("worktruck.common.v1.HistoryResponse");
        let err = from_value(
            &nested,
            json!({"data": [{"_temporal": {"sys_from": "nope"}}]}),
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("data[0]._temporal.sys_from"), "{err}");
        let err = from_value(&desc, json!({"id": 5})).unwrap_err();
        assert_eq!(err.field(), Some("id"), "{err}");
    }

    #[test]
    fn duplicate_keys_and_bad_bytes_are_refused() {
        for bad in [
            &br#"{"display_name": "a", "display_name": "b"}"#[..],
            br#"{"metadata": {"k": 1, "k": 2}}"#,
            br#"[{"a": 1, "a": 1}]"#,
            b"{\"display_name\": \"\xff\"}",
            b"{} {}",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, JsonError::Syntax(_)), "{err}");
        }
        assert!(parse(br#"{"a": 1}"#).is_ok());
        let err = parse(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"b\""), "{err}");
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(deep.as_bytes()).is_err());
        let same = parse(br#"{"n": 1.5, "i": -2, "u": 18446744073709551615, "s": "x", "z": null, "l": [true]}"#).unwrap();
        assert_eq!(same, json!({"n": 1.5, "i": -2, "u": 18446744073709551615u64, "s": "x", "z": null, "l": [true]}));
    }

    #[test]
    fn strings_and_depth_are_checked_on_the_way_in() {
        let desc = message("worktruck.contacts.v1.CreateContactRequest");
        let err = from_value(&desc, json!({"display_name": "a\u{0}b"})).unwrap_err();
        assert_eq!(err.field(), Some("display_name"), "{err}");
        assert!(err.to_string().contains("NUL"), "{err}");
        let err = from_value(&desc, json!({"display_name": "Ada", "metadata": {"a\u{0}": 1}})).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        let mut deep = json!(1);
        for _ in 0..text::MAX_DEPTH {
            deep = json!({ "k": deep });
        }
        let err = from_value(&desc, json!({"display_name": "Ada", "metadata": deep})).unwrap_err();
        assert!(err.to_string().contains("at most 32"), "{err}");
        let ok = from_value(&desc, json!({"display_name": "Ada", "metadata": deep["k"]}));
        assert!(ok.is_ok());
        let long = "x".repeat(6812);
        let err = from_value(&desc, json!({ long.clone(): 1 })).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        let err = from_value(&desc, json!({"kind": long})).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }

    #[test]
    fn temporal_keeps_its_leading_underscore() {
        let desc = message("worktruck.contacts.v1.Contact");
        let input =
            json!({"_temporal": {"captured_by": "key:1", "sys_from": "2025-01-01T00:00:00Z"}});
        let msg = from_value(&desc, input).unwrap();
        let out = to_value(&msg).unwrap();
        assert_eq!(out["_temporal"]["captured_by"], "key:1");
        assert_eq!(out["_temporal"]["sys_from"], "2025-01-01T00:00:00Z");
        assert!(out.get("Temporal").is_none());
        // Every axis is named, an open one as null, in declaration order.
        let keys: Vec<&str> = out["_temporal"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["sys_from", "sys_to", "valid_from", "valid_to", "captured_by", "capture_reason"]);
        assert!(out["_temporal"]["sys_to"].is_null() && out["_temporal"]["valid_to"].is_null());
    }
}
