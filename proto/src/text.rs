//! The rules every request obeys whatever its domain, checked on the message itself so that
//! both gateways (after [`crate::json::from_value`]) and every service (in [`crate::codec`])
//! apply the same ones:
//!
//! - no string anywhere holds NUL (PostgreSQL `text` and `jsonb` cannot store it);
//! - a string field is a single line, free of every control character, unless the proto marks
//!   it `[(worktruck.common.v1.free_text) = true]`, which lets it hold line feeds and tabs too;
//!   map keys and `google.protobuf.Struct` keys are single-line, `Struct` string values free text;
//! - a message's JSON form is at most [`MAX_DEPTH`] containers deep.
//!
//! And [`quote`], the one way an error message echoes what a caller sent: a bounded prefix.

use prost_reflect::{DynamicMessage, FieldDescriptor, MapKey, ReflectMessage, Value};

/// The deepest JSON document (objects and arrays, the request body's own object counting as
/// one) any surface accepts, so that whatever is written can be read back.
///
/// Why 32: prost (and prost-reflect, which decodes on the gateways) refuse a message nested
/// more than 100 messages deep. Stored documents come back inside `google.protobuf.Struct`,
/// where one JSON object costs three message levels (`Struct`, its map entry, `Value`), and
/// the deepest envelope that carries a whole document, `HistoryResponse` → `Version` →
/// `Struct`, starts it two levels down: a document `d` deep reaches level `3d + 1`, and leaves
/// some headroom at `d = 32` (97; 33 would be exactly 100). The tests in this module decode
/// every read envelope at this depth.
pub const MAX_DEPTH: usize = 32;

/// How many characters of a caller's value an error message quotes.
pub const QUOTE_CHARS: usize = 64;

const FREE_TEXT_EXTENSION: &str = "worktruck.common.v1.free_text";

/// A caller's value for an error message: debug-quoted, at most [`QUOTE_CHARS`] characters of
/// it, and its length when cut, so that no echo can outgrow a header or a log line.
pub fn quote(s: &str) -> String {
    let count = s.chars().count();
    if count <= QUOTE_CHARS {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(QUOTE_CHARS).collect();
    format!("{head:?}… ({count} characters)")
}

/// Cuts an error message to at most `max` bytes on a character boundary (a last-resort bound
/// for messages that travel in headers, e.g. `grpc-message`).
pub fn bounded(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// What a string may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A name, an id, a URL: no control character at all.
    SingleLine,
    /// Prose: line feeds and tabs allowed, no other control character.
    FreeText,
}

/// The kind of a string field, from its `free_text` option.
pub fn kind_of(field: &FieldDescriptor) -> TextKind {
    let pool = field.parent_pool();
    let Some(ext) = pool.get_extension_by_name(FREE_TEXT_EXTENSION) else {
        return TextKind::SingleLine;
    };
    let options = field.options();
    if options.has_extension(&ext) && options.get_extension(&ext).as_bool() == Some(true) {
        TextKind::FreeText
    } else {
        TextKind::SingleLine
    }
}

/// Why `s` may not be stored as `kind`, if it may not.
pub fn check_str(s: &str, kind: TextKind) -> Result<(), &'static str> {
    if s.contains('\0') {
        return Err("must not contain NUL characters");
    }
    let allowed = |c: char| kind == TextKind::FreeText && (c == '\n' || c == '\t');
    if s.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(match kind {
            TextKind::SingleLine => "must be a single line without control characters",
            TextKind::FreeText => "must not contain control characters other than line feeds and tabs",
        });
    }
    Ok(())
}

/// How deep a JSON value nests: 0 for a scalar, 1 for `{}` or `[]`, one more per container.
/// Iterative, so a value of any depth is measured without recursion.
pub fn json_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// A rule broken at a dotted field path (`display_name`, `metadata.a.b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a dotted proto path; empty for the whole message.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Checks every string and the depth of `msg` (see the module doc).
pub fn check_message(msg: &DynamicMessage) -> Result<(), Violation> {
    let depth = walk_message(msg, "")?;
    if depth > MAX_DEPTH {
        return Err(Violation {
            field: String::new(),
            reason: format!("the document nests {depth} levels deep; at most {MAX_DEPTH} are accepted"),
        });
    }
    Ok(())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn violation(field: String, reason: &str) -> Violation {
    Violation { field, reason: reason.to_owned() }
}

/// Returns the JSON depth of the message (see [`json_depth`]).
fn walk_message(msg: &DynamicMessage, path: &str) -> Result<usize, Violation> {
    let desc = msg.descriptor();
    match desc.full_name() {
        "google.protobuf.Struct" => {
            let mut deepest = 0;
            if let Some(Value::Map(fields)) = msg.get_field_by_name("fields").as_deref() {
                for (key, value) in fields {
                    let here = match key {
                        MapKey::String(k) => {
                            check_str(k, TextKind::SingleLine).map_err(|r| violation(join(path, &quote(k)), r))?;
                            join(path, k)
                        }
                        _ => path.to_owned(),
                    };
                    if let Value::Message(v) = value {
                        deepest = deepest.max(walk_message(v, &here)?);
                    }
                }
            }
            return Ok(deepest + 1);
        }
        "google.protobuf.ListValue" => {
            let mut deepest = 0;
            if let Some(Value::List(items)) = msg.get_field_by_name("values").as_deref() {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(v) = item {
                        deepest = deepest.max(walk_message(v, &format!("{path}[{i}]"))?);
                    }
                }
            }
            return Ok(deepest + 1);
        }
        "google.protobuf.Value" => {
            // A `Value` is transparent in JSON: only what it holds counts.
            let mut deepest = 0;
            for (_, value) in msg.fields() {
                match value {
                    Value::String(s) => check_str(s, TextKind::FreeText).map_err(|r| violation(path.to_owned(), r))?,
                    Value::Message(m) => deepest = deepest.max(walk_message(m, path)?),
                    _ => {}
                }
            }
            return Ok(deepest);
        }
        _ if crate::json::is_well_known(&desc) => {
            // Timestamps, wrappers, field masks: scalars in JSON. A `StringValue` is a single line.
            for (_, value) in msg.fields() {
                if let Value::String(s) = value {
                    check_str(s, TextKind::SingleLine).map_err(|r| violation(path.to_owned(), r))?;
                }
            }
            return Ok(0);
        }
        _ => {}
    }
    let mut deepest = 0;
    for (field, value) in msg.fields() {
        let here = join(path, field.name());
        let depth = match value {
            Value::List(items) => {
                let mut d = 0;
                for (i, item) in items.iter().enumerate() {
                    d = d.max(walk_single(&field, item, &format!("{here}[{i}]"))?);
                }
                d + 1
            }
            Value::Map(entries) => {
                let mut d = 0;
                for (key, item) in entries {
                    let at = match key {
                        MapKey::String(k) => {
                            check_str(k, TextKind::SingleLine).map_err(|r| violation(join(&here, &quote(k)), r))?;
                            join(&here, k)
                        }
                        _ => here.clone(),
                    };
                    d = d.max(walk_single(&field, item, &at)?);
                }
                d + 1
            }
            single => walk_single(&field, single, &here)?,
        };
        deepest = deepest.max(depth);
    }
    Ok(deepest + 1)
}

fn walk_single(field: &FieldDescriptor, value: &Value, path: &str) -> Result<usize, Violation> {
    match value {
        Value::String(s) => {
            // A map's value string follows the map field's own option.
            check_str(s, kind_of(field)).map_err(|r| violation(path.to_owned(), r))?;
            Ok(0)
        }
        Value::Message(m) => walk_message(m, path),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    fn pool() -> prost_reflect::DescriptorPool {
        crate::registry::Registry::embedded().unwrap().pool().clone()
    }

    /// `{"k": {"k": … 1 …}}`, `depth` objects deep.
    fn nested(depth: usize) -> serde_json::Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!({ "k": v });
        }
        v
    }

    fn message(name: &str, value: serde_json::Value) -> DynamicMessage {
        let desc = pool().get_message_by_name(name).unwrap();
        DynamicMessage::deserialize(desc, value).unwrap()
    }

    #[test]
    fn quotes_are_bounded() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "x".repeat(6812);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("(6812 characters)"), "{q}");
        assert_eq!(bounded("ééé", 4), "…");
        assert_eq!(bounded("short", 100), "short");
        assert!(bounded(&"é".repeat(1000), 101).len() <= 101);
    }

    #[test]
    fn strings_follow_their_kind() {
        assert!(check_str("a\0b", TextKind::FreeText).is_err());
        assert!(check_str("a\nb\tc", TextKind::FreeText).is_ok());
        assert!(check_str("a\nb", TextKind::SingleLine).is_err());
        assert!(check_str("a\u{1b}b", TextKind::FreeText).is_err());
        assert!(check_str("a\u{7f}b", TextKind::SingleLine).is_err());
        assert!(check_str("Ada Lovelace ✓", TextKind::SingleLine).is_ok());
    }

    #[test]
    fn the_free_text_option_marks_bio_only() {
        let create = pool().get_message_by_name("worktruck.contacts.v1.CreateContactRequest").unwrap();
        assert_eq!(kind_of(&create.get_field_by_name("bio").unwrap()), TextKind::FreeText);
        assert_eq!(kind_of(&create.get_field_by_name("display_name").unwrap()), TextKind::SingleLine);
        let ok = message(
            "worktruck.contacts.v1.CreateContactRequest",
            json!({"display_name": "Ada", "bio": "line one\nline\ttwo", "metadata": {"note": "a\nb"}}),
        );
        check_message(&ok).unwrap();
        for (bad, field) in [
            (json!({"display_name": "a\u{0}b"}), "display_name"),
            (json!({"display_name": "a\nb"}), "display_name"),
            (json!({"bio": "a\u{0}b"}), "bio"),
            (json!({"metadata": {"k": "a\u{0}b"}}), "metadata.k"),
            (json!({"metadata": {"list": ["ok", "a\u{0}"]}}), "metadata.list[1]"),
            (json!({"metadata": {"a\u{0}b": 1}}), "metadata.\"a\\0b\""),
        ] {
            let msg = message("worktruck.contacts.v1.CreateContactRequest", bad.clone());
            let err = check_message(&msg).unwrap_err();
            assert_eq!(err.field, field, "{bad}");
        }
    }

    #[test]
    fn depth_is_the_json_forms() {
        let desc = "worktruck.contacts.v1.CreateContactRequest";
        // The body's object is one level, `metadata` another, then each nested object.
        for d in [1, 5, 31] {
            let doc = json!({"display_name": "Ada", "metadata": nested(d)});
            let depth = walk_message(&message(desc, doc.clone()), "").unwrap();
            assert_eq!(depth, json_depth(&doc), "metadata {d} deep");
            assert_eq!(depth, d + 1);
        }
        let lists = json!({"metadata": {"a": [[{"b": [1]}]]}});
        assert_eq!(walk_message(&message(desc, lists.clone()), "").unwrap(), json_depth(&lists));
        assert_eq!(json_depth(&lists), 6);
        check_message(&message(desc, json!({"metadata": nested(MAX_DEPTH - 1)}))).unwrap();
        let err = check_message(&message(desc, json!({"metadata": nested(MAX_DEPTH)}))).unwrap_err();
        assert!(err.reason.contains("at most 32"), "{err:?}");
    }

    /// The deepest accepted document decodes in every envelope that carries it back, with both
    /// decoders: the generated types (consumers, services) and prost-reflect (gateways).
    #[test]
    fn the_deepest_accepted_document_reads_back_everywhere() {
        use crate::common::v1 as common;
        let doc = json!({"kind": "CONTACT_KIND_PERSON", "display_name": "Ada", "metadata": nested(MAX_DEPTH - 1)});
        assert_eq!(json_depth(&doc), MAX_DEPTH);
        let envelopes = [
            ("worktruck.common.v1.HistoryResponse", json!({"data": [{"version": 1, "data": doc}]})),
            ("worktruck.contacts.v1.ListContactsResponse", json!({"data": [doc]})),
            ("worktruck.contacts.v1.Contact", doc.clone()),
            ("worktruck.common.v1.DiffResponse", json!({"changes": [{"field": "metadata", "before": doc["metadata"], "after": doc["metadata"]}]})),
            ("worktruck.common.v1.TimelineResponse", json!({"data": [{"field": "metadata", "before": doc["metadata"], "after": doc["metadata"]}]})),
        ];
        for (name, value) in envelopes {
            let msg = message(name, value);
            let bytes = msg.encode_to_vec();
            DynamicMessage::decode(msg.descriptor(), bytes.as_slice()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let history = message("worktruck.common.v1.HistoryResponse", json!({"data": [{"data": doc}]})).encode_to_vec();
        common::HistoryResponse::decode(history.as_slice()).unwrap();
        // Events carry the entity as `Any` bytes, which a consumer decodes on its own.
        let contact = message("worktruck.contacts.v1.Contact", doc.clone()).encode_to_vec();
        let event = common::Event {
            data: Some(prost_types::Any { type_url: "type.googleapis.com/worktruck.contacts.v1.Contact".into(), value: contact }),
            ..Default::default()
        };
        let event = common::Event::decode(event.encode_to_vec().as_slice()).unwrap();
        crate::contacts::v1::Contact::decode(event.data.unwrap().value.as_slice()).unwrap();
        // And the limit is the decoder's, not an arbitrary one: a document two levels deeper
        // than the limit cannot be read back in history.
        let deeper = json!({"data": [{"data": {"metadata": nested(MAX_DEPTH + 1)}}]});
        let bytes = message("worktruck.common.v1.HistoryResponse", deeper).encode_to_vec();
        assert!(common::HistoryResponse::decode(bytes.as_slice()).is_err());
    }
}
