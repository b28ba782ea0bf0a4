//! JSON Schema (draft 2020-12) for messages, derived from descriptors so that OpenAPI documents
//! and MCP tool schemas describe exactly what [`crate::json`] accepts and emits.
//!
//! Proto names as keys; inputs `additionalProperties: false` (the gateway refuses unknown
//! fields), outputs open (a field added to an answer must not break a strict client);
//! `required` from `field_behavior = REQUIRED` on inputs, and on outputs in components style
//! (OpenAPI) every field [`crate::json`] always writes; `OUTPUT_ONLY` fields dropped from input
//! schemas, comments as descriptions, enums as their short names without `*_UNSPECIFIED`.
//! Components are named readably: a message's own name (`Contact`), prefixed with its domain
//! where two packages share it (`ContactsDeleteResponse`).

use std::collections::{HashMap, HashSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::json::{enum_value_json_name, is_unspecified};
use crate::registry::Registry;

/// The JSON Schema dialect every schema here follows.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Which direction a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// What a caller sends: `OUTPUT_ONLY` fields are left out, `REQUIRED` fields are required.
    Input,
    /// What a caller receives: `INPUT_ONLY` fields are left out, `OUTPUT_ONLY` ones are `readOnly`.
    Output,
}

enum Style {
    /// Self-contained: nested messages inline, recursion through `#/$defs/…`.
    Inline,
    /// Every message is a named definition referenced as `<prefix><name>` (OpenAPI components).
    Components(String),
}

/// Builds schemas for messages and fields, collecting the named definitions they reference.
pub struct SchemaGenerator<'r> {
    registry: &'r Registry,
    style: Style,
    definitions: Map<String, Value>,
    /// Inline style: messages being expanded, to detect recursion.
    stack: Vec<String>,
    /// Inline style: recursive messages still to be written to `$defs`.
    pending: Vec<(MessageDescriptor, Mode)>,
    /// How many messages of the pool share each local name (a name's uniqueness).
    local_names: HashMap<String, usize>,
}

/// A message's name within its package, nesting flattened: `Outer.Inner` → `OuterInner`.
fn local_name(desc: &MessageDescriptor) -> String {
    let package = desc.package_name();
    let full = desc.full_name();
    full.strip_prefix(package).unwrap_or(full).trim_start_matches('.').replace('.', "")
}

/// The domain a package names, for a shared local name: `worktruck.contacts.v1` → `Contacts`,
/// `google.api` → `GoogleApi`.
fn domain_prefix(package: &str) -> String {
    let parts: Vec<&str> = package.split('.').filter(|p| !(p.len() >= 2 && p.starts_with('v') && p[1..].chars().all(|c| c.is_ascii_digit()))).collect();
    let parts = match parts.as_slice() {
        ["worktruck", rest @ ..] if !rest.is_empty() => rest.to_vec(),
        other => other.to_vec(),
    };
    parts
        .iter()
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// A self-contained schema for a message (with `$schema`, and `$defs` only when the message is
/// recursive), as MCP tool `inputSchema`/`outputSchema` want it.
pub fn message_schema(registry: &Registry, desc: &MessageDescriptor, mode: Mode) -> Value {
    let mut generator = SchemaGenerator::inline(registry);
    let mut root = generator.message(desc, mode);
    while let Some((pending, mode)) = generator.pending.pop() {
        let name = generator.definition_name(&pending, mode);
        if generator.definitions.contains_key(&name) {
            continue;
        }
        generator.definitions.insert(name.clone(), Value::Null);
        let schema = generator.message(&pending, mode);
        generator.definitions.insert(name, schema);
    }
    let object = root.as_object_mut().expect("a message schema is an object");
    object.insert("$schema".into(), Value::String(DIALECT.into()));
    if !generator.definitions.is_empty() {
        object.insert("$defs".into(), Value::Object(generator.definitions));
    }
    root
}

impl<'r> SchemaGenerator<'r> {
    /// A generator of self-contained schemas (see [`message_schema`]).
    pub fn inline(registry: &'r Registry) -> Self {
        Self::new(registry, Style::Inline)
    }

    /// A generator that references every message as `<prefix><definition name>`, e.g. with
    /// prefix `#/components/schemas/`; [`SchemaGenerator::into_definitions`] returns them.
    pub fn components(registry: &'r Registry, prefix: impl Into<String>) -> Self {
        Self::new(registry, Style::Components(prefix.into()))
    }

    fn new(registry: &'r Registry, style: Style) -> Self {
        Self {
            registry,
            style,
            definitions: Map::new(),
            stack: Vec::new(),
            pending: Vec::new(),
            local_names: registry.pool().all_messages().fold(HashMap::new(), |mut m, d| {
                *m.entry(local_name(&d)).or_insert(0) += 1;
                m
            }),
        }
    }

    /// The definitions collected so far, by name.
    pub fn into_definitions(self) -> Map<String, Value> {
        self.definitions
    }

    /// The name a message's definition has: its own name (`Contact`), prefixed with its domain
    /// when another package has a message of that name (`ContactsDeleteResponse`), with `Input`
    /// appended for the input variant of a message whose two variants differ.
    pub fn definition_name(&self, desc: &MessageDescriptor, mode: Mode) -> String {
        let local = local_name(desc);
        let base = if self.local_names.get(&local).copied().unwrap_or(0) > 1 {
            format!("{}{local}", domain_prefix(desc.package_name()))
        } else {
            local
        };
        if mode == Mode::Input && self.differs_by_mode(desc, &mut HashSet::new()) {
            format!("{base}Input")
        } else {
            base
        }
    }

    /// The object schema of a message itself (never a reference).
    pub fn message(&mut self, desc: &MessageDescriptor, mode: Mode) -> Value {
        self.stack.push(desc.full_name().to_owned());
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in desc.fields() {
            let behaviors = self.registry.field_behaviors(&field);
            let skip = match mode {
                Mode::Input => behaviors.output_only,
                Mode::Output => behaviors.input_only,
            };
            if skip {
                continue;
            }
            if mode == Mode::Input && behaviors.required {
                required.push(Value::String(field.name().to_owned()));
            }
            if mode == Mode::Output && matches!(self.style, Style::Components(_)) && always_written(desc, &field) {
                required.push(Value::String(field.name().to_owned()));
            }
            let mut schema = self.field(&field, mode);
            if mode == Mode::Output && crate::json::always_named(desc, &field) {
                // Rendered as `null` when open (`json::to_value`).
                schema["type"] = json!(["string", "null"]);
            }
            properties.insert(field.name().to_owned(), schema);
        }
        self.stack.pop();
        let mut schema = Map::new();
        schema.insert("type".into(), json!("object"));
        if let Some(text) = self.registry.message_comment(desc) {
            schema.insert("description".into(), json!(text));
        }
        schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
        if mode == Mode::Input {
            schema.insert("additionalProperties".into(), json!(false));
        }
        Value::Object(schema)
    }

    /// The schema of one field (repeated → array, map → object), with its comment.
    pub fn field(&mut self, field: &FieldDescriptor, mode: Mode) -> Value {
        let mut schema = if field.is_map() {
            let entry = field.kind();
            let value_field = entry
                .as_message()
                .expect("a map field is a message")
                .map_entry_value_field();
            let values = self.kind(&value_field.kind(), mode);
            json!({"type": "object", "additionalProperties": values})
        } else if field.is_list() {
            json!({"type": "array", "items": self.kind(&field.kind(), mode)})
        } else {
            self.kind(&field.kind(), mode)
        };
        let object = schema
            .as_object_mut()
            .expect("every schema here is an object");
        if let Some(text) = self.registry.field_comment(field) {
            object.insert("description".into(), json!(text));
        }
        if mode == Mode::Output && self.registry.field_behaviors(field).output_only {
            object.insert("readOnly".into(), json!(true));
        }
        schema
    }

    /// A schema that stands for a message where it is used: a `$ref` in components style, the
    /// message inline in inline style (a `$ref` into `$defs` when it recurses).
    pub fn message_ref(&mut self, desc: &MessageDescriptor, mode: Mode) -> Value {
        if let Some(schema) = well_known(desc) {
            return schema;
        }
        let name = self.definition_name(desc, mode);
        match &self.style {
            Style::Components(prefix) => {
                let reference = json!({"$ref": format!("{prefix}{name}")});
                if !self.definitions.contains_key(&name) {
                    // A placeholder first, so that a recursive message refers to itself.
                    self.definitions.insert(name.clone(), Value::Null);
                    let schema = self.message(desc, mode);
                    self.definitions.insert(name, schema);
                }
                reference
            }
            Style::Inline if self.stack.iter().any(|s| s == desc.full_name()) => {
                if !self.definitions.contains_key(&name) {
                    self.pending.push((desc.clone(), mode));
                }
                json!({"$ref": format!("#/$defs/{name}")})
            }
            Style::Inline => self.message(desc, mode),
        }
    }

    fn kind(&mut self, kind: &Kind, mode: Mode) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "integer", "format": "int64"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "uint32", "minimum": 0})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "integer", "format": "uint64", "minimum": 0})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(desc) if desc.full_name() == "google.protobuf.NullValue" => {
                json!({"type": "null"})
            }
            Kind::Enum(desc) => {
                let names: Vec<String> = desc
                    .values()
                    .filter(|v| !is_unspecified(v))
                    .map(|v| enum_value_json_name(&v))
                    .collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(desc) => self.message_ref(desc, mode),
        }
    }

    /// True when the input and output variants of `desc` differ anywhere beneath it.
    fn differs_by_mode(&self, desc: &MessageDescriptor, seen: &mut HashSet<String>) -> bool {
        if !seen.insert(desc.full_name().to_owned()) {
            return false;
        }
        desc.fields().any(|field| {
            let b = self.registry.field_behaviors(&field);
            if b.required || b.output_only || b.input_only {
                return true;
            }
            let kind = if field.is_map() {
                field.kind().as_message().map(|m| m.map_entry_value_field().kind())
            } else {
                Some(field.kind())
            };
            matches!(kind, Some(Kind::Message(m)) if well_known(&m).is_none() && self.differs_by_mode(&m, seen))
        })
    }
}

/// Whether [`crate::json::to_value`] writes `field` of `desc` in every answer: a field without
/// presence (a plain scalar, a list, a map) that is not an enum (an unset enum is left out),
/// or a `_temporal` axis (written as `null` when open).
fn always_written(desc: &MessageDescriptor, field: &FieldDescriptor) -> bool {
    crate::json::always_named(desc, field)
        || field.is_list()
        || field.is_map()
        || (!field.supports_presence() && !matches!(field.kind(), Kind::Enum(_)))
}

/// The JSON forms of the well-known types, as prost-reflect reads and writes them.
fn well_known(desc: &MessageDescriptor) -> Option<Value> {
    Some(match desc.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "required": ["@type"]
        }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        "google.protobuf.Int64Value" => json!({"type": "integer", "format": "int64"}),
        "google.protobuf.UInt64Value" => {
            json!({"type": "integer", "format": "uint64", "minimum": 0})
        }
        "google.protobuf.Int32Value" => json!({"type": "integer", "format": "int32"}),
        "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "format": "uint32", "minimum": 0})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "contentEncoding": "base64"}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::embedded().unwrap()
    }

    fn keys(schema: &Value) -> Vec<&str> {
        schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn create_contact_input_schema() {
        let r = registry();
        let desc = r
            .pool()
            .get_message_by_name("worktruck.contacts.v1.CreateContactRequest")
            .unwrap();
        let s = message_schema(&r, &desc, Mode::Input);
        assert_eq!(s["$schema"], DIALECT);
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], json!(["kind", "display_name"]));
        assert_eq!(
            s["properties"]["kind"]["enum"],
            json!(["person", "organization", "group"])
        );
        assert_eq!(
            s["properties"]["kind"]["description"],
            "Person, organization or group."
        );
        assert_eq!(s["properties"]["valid_from"]["format"], "date-time");
        assert_eq!(s["properties"]["metadata"]["type"], "object");
        assert_eq!(s["description"], "Creates a contact.");
        assert!(s.get("$defs").is_none());
        assert!(
            !s["required"]
                .as_array()
                .unwrap()
                .contains(&json!("given_name")),
            "optional is not required"
        );
    }

    #[test]
    fn output_only_fields_are_input_exclusions_only() {
        let r = registry();
        let contact = r
            .pool()
            .get_message_by_name("worktruck.contacts.v1.Contact")
            .unwrap();
        let input = message_schema(&r, &contact, Mode::Input);
        for gone in [
            "id",
            "tenant_id",
            "version",
            "created_at",
            "updated_at",
            "deleted_at",
            "_temporal",
        ] {
            assert!(!keys(&input).contains(&gone), "{gone}");
        }
        let output = message_schema(&r, &contact, Mode::Output);
        assert!(keys(&output).contains(&"id"));
        assert_eq!(output["properties"]["id"]["readOnly"], true);
        assert_eq!(
            output["properties"]["version"],
            json!({
                "type": "integer", "format": "int64",
                "description": "Version number; grows by one per change.", "readOnly": true
            })
        );
        assert_eq!(
            output["properties"]["_temporal"]["properties"]["sys_from"]["format"],
            "date-time"
        );
        // An open axis is rendered as null, and the schema says so.
        assert_eq!(output["properties"]["_temporal"]["properties"]["sys_to"]["type"], json!(["string", "null"]));
        assert_eq!(output["properties"]["_temporal"]["properties"]["as_of"]["type"], "string");
        assert!(output.get("required").is_none());
        let list = r
            .pool()
            .get_message_by_name("worktruck.contacts.v1.ListContactsResponse")
            .unwrap();
        let list = message_schema(&r, &list, Mode::Output);
        assert_eq!(list["properties"]["data"]["type"], "array");
        assert_eq!(
            list["properties"]["data"]["items"]["properties"]["kind"]["enum"][0],
            "person"
        );
        let version = r
            .pool()
            .get_message_by_name("worktruck.common.v1.FieldChange")
            .unwrap();
        assert_eq!(
            message_schema(&r, &version, Mode::Output)["properties"]["before"]["description"],
            "Its value before (null when absent)."
        );
    }

    #[test]
    fn components_style_names_and_references_messages() {
        let r = registry();
        let list = r
            .pool()
            .get_message_by_name("worktruck.contacts.v1.ListContactsResponse")
            .unwrap();
        let mut g = SchemaGenerator::components(&r, "#/components/schemas/");
        let reference = g.message_ref(&list, Mode::Output);
        assert_eq!(reference["$ref"], "#/components/schemas/ListContactsResponse");
        let create = r
            .pool()
            .get_message_by_name("worktruck.contacts.v1.CreateContactRequest")
            .unwrap();
        assert_eq!(g.definition_name(&create, Mode::Input), "CreateContactRequestInput");
        // A name two packages share is prefixed with its domain.
        let deleted = r.pool().get_message_by_name("worktruck.contacts.v1.DeleteResponse");
        if let Some(d) = deleted {
            assert_eq!(g.definition_name(&d, Mode::Output), "ContactsDeleteResponse");
        }
        let defs = g.into_definitions();
        let list = &defs["ListContactsResponse"];
        assert_eq!(list["properties"]["data"]["items"]["$ref"], "#/components/schemas/Contact");
        assert_eq!(list["required"], json!(["data", "next_cursor", "has_more"]), "what every answer holds: {list}");
        assert!(list.get("additionalProperties").is_none(), "answers may grow");
        let contact = &defs["Contact"];
        let required: Vec<&str> = contact["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        for field in ["id", "display_name", "version", "channels"] {
            assert!(required.contains(&field), "{field}: {required:?}");
        }
        assert!(!required.contains(&"kind"), "an enum may be unset and left out");
        assert!(defs.contains_key("Temporal"));
        let mut names: Vec<&String> = defs.keys().collect();
        names.sort();
        assert!(names.iter().all(|n| !n.contains('.')), "{names:?}");
    }

    /// The local names two packages share, which OpenAPI names with a domain prefix. A new
    /// message that takes a name another package already uses renames the other's schema too
    /// (and the types generated clients made of it): give it another name, or add it here
    /// knowing that.
    #[test]
    fn the_shared_message_names_are_known() {
        let r = registry();
        let g = SchemaGenerator::components(&r, "#/components/schemas/");
        let mut shared: Vec<&str> = g.local_names.iter().filter(|(_, n)| **n > 1).map(|(k, _)| k.as_str()).collect();
        shared.sort();
        assert_eq!(
            shared,
            ["CreateTagRequest", "DeleteResponse", "Event", "ListTagsRequest", "ListTagsResponse", "Tag", "UpdateTagRequest"]
        );
    }

    #[test]
    fn recursive_messages_go_through_defs() {
        use prost::Message;
        use prost_types::field_descriptor_proto::{Label, Type};
        use prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        };
        let field = |name: &str, number, label: Label| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(label as i32),
            r#type: Some(Type::Message as i32),
            type_name: Some(".t.v1.Node".into()),
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t.v1".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("Node".into()),
                field: vec![
                    field("child", 1, Label::Optional),
                    field("kids", 2, Label::Repeated),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = FileDescriptorSet { file: vec![file] }.encode_to_vec();
        let r = Registry::load(&bytes).unwrap();
        let node = r.pool().get_message_by_name("t.v1.Node").unwrap();
        let s = message_schema(&r, &node, Mode::Input);
        assert_eq!(s["properties"]["child"]["$ref"], "#/$defs/Node");
        assert_eq!(s["properties"]["kids"]["items"]["$ref"], "#/$defs/Node");
        assert_eq!(s["$defs"]["Node"]["properties"]["child"]["$ref"], "#/$defs/Node");
    }
}
