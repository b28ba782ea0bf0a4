//! Field masks: `fields=id,display_name,channels.value` trims an answer to the named fields, so
//! that an agent's context holds only what it asked for. One implementation for REST (the
//! `fields` query parameter) and MCP (the `fields` argument of read tools), checked against the
//! answer's descriptor: an unknown field is an error naming it.
//!
//! Paths are proto field names joined by `.`, descending into message fields (singular or
//! repeated: `channels.value` keeps `value` of every channel). On a list answer (a message
//! whose `data` is a repeated message) the paths name fields of each item, and the page's own
//! fields (`has_more`, `next_cursor`, …) always stay.

use std::collections::BTreeMap;

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::Value;

use crate::json::is_well_known;
use crate::text;

/// At most this many paths in one mask.
pub const MAX_PATHS: usize = 100;

/// A parsed, checked field mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMask {
    /// The answer is a list page: the mask applies to each item of `data`.
    list: bool,
    tree: Tree,
}

/// Field name → what to keep of it (empty: all of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tree(BTreeMap<String, Tree>);

impl FieldMask {
    /// Whether requests of `input` may carry a mask: those with a `fields` field of their own
    /// (a timeline's "only these fields") mean something else by it.
    pub fn applies(input: &MessageDescriptor) -> bool {
        input.get_field_by_name("fields").is_none()
    }

    /// Parses the `fields` values (each comma-separated) against the answer `output`; `None`
    /// when no path was given. An unknown field, a subfield of a scalar or too many paths is
    /// an error saying which.
    pub fn parse<'a>(output: &MessageDescriptor, values: impl IntoIterator<Item = &'a str>) -> Result<Option<FieldMask>, String> {
        let (list, root) = match list_item(output) {
            Some(item) => (true, item),
            None => (false, output.clone()),
        };
        let mut tree = Tree::default();
        let mut count = 0;
        for path in values.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
            count += 1;
            if count > MAX_PATHS {
                return Err(format!("fields: at most {MAX_PATHS} paths"));
            }
            let mut desc = Some(root.clone());
            let mut node = &mut tree;
            for segment in path.split('.') {
                let Some(d) = desc else {
                    return Err(format!("fields: {} has no subfields", text::quote(path)));
                };
                let Some(field) = d.get_field_by_name(segment) else {
                    return Err(format!(
                        "fields: unknown field {} in {}{}",
                        text::quote(segment),
                        text::quote(path),
                        if list { " (paths name fields of each item)" } else { "" }
                    ));
                };
                desc = match field.kind() {
                    Kind::Message(m) if !field.is_map() && !is_well_known(&m) => Some(m),
                    _ => None,
                };
                node = node.0.entry(segment.to_owned()).or_default();
            }
            // A shorter path keeps the whole field, whatever longer paths under it say.
            node.0.clear();
            node.0.insert(String::new(), Tree::default());
        }
        if tree.0.is_empty() {
            return Ok(None);
        }
        tree.settle();
        Ok(Some(FieldMask { list, tree }))
    }

    /// Trims a rendered answer to the mask.
    pub fn apply(&self, value: &mut Value) {
        if self.list {
            if let Some(Value::Array(items)) = value.get_mut("data") {
                for item in items {
                    self.tree.apply(item);
                }
            }
        } else {
            self.tree.apply(value);
        }
    }
}

/// The item type of a list page: its `data`, a repeated message.
fn list_item(output: &MessageDescriptor) -> Option<MessageDescriptor> {
    let data = output.get_field_by_name("data")?;
    match data.kind() {
        Kind::Message(m) if data.is_list() => Some(m),
        _ => None,
    }
}

impl Tree {
    /// Turns the "whole field" marker (an empty key) into an empty subtree, after every path
    /// is in: a field asked for whole stays whole even when a longer path came later.
    fn settle(&mut self) {
        for sub in self.0.values_mut() {
            if sub.0.contains_key("") {
                sub.0.clear();
            } else {
                sub.settle();
            }
        }
    }

    fn apply(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|k, _| self.0.contains_key(k));
                for (k, v) in map.iter_mut() {
                    let sub = &self.0[k];
                    if !sub.0.is_empty() {
                        sub.apply(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.apply(i)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::Registry;

    fn desc(name: &str) -> MessageDescriptor {
        Registry::embedded().unwrap().pool().get_message_by_name(name).unwrap()
    }

    #[test]
    fn a_mask_keeps_the_named_fields_and_descends_into_repeated_messages() {
        let m = FieldMask::parse(&desc("worktruck.contacts.v1.Contact"), ["id,display_name", "channels.value"]).unwrap().unwrap();
        let mut v = json!({"id": "1", "display_name": "Ada", "kind": "person",
            "channels": [{"type": "email", "value": "a@x"}, {"type": "phone", "value": "1"}]});
        m.apply(&mut v);
        assert_eq!(v, json!({"id": "1", "display_name": "Ada", "channels": [{"value": "a@x"}, {"value": "1"}]}));
    }

    #[test]
    fn a_whole_field_wins_over_a_path_inside_it() {
        let m = FieldMask::parse(&desc("worktruck.contacts.v1.Contact"), ["channels.value,channels"]).unwrap().unwrap();
        let mut v = json!({"id": "1", "channels": [{"type": "email", "value": "a@x"}]});
        m.apply(&mut v);
        assert_eq!(v, json!({"channels": [{"type": "email", "value": "a@x"}]}));
    }

    #[test]
    fn a_list_page_masks_each_item_and_keeps_its_own_fields() {
        let m = FieldMask::parse(&desc("worktruck.contacts.v1.ListContactsResponse"), ["id"]).unwrap().unwrap();
        let mut v = json!({"data": [{"id": "1", "display_name": "Ada"}], "has_more": true, "next_cursor": "c"});
        m.apply(&mut v);
        assert_eq!(v, json!({"data": [{"id": "1"}], "has_more": true, "next_cursor": "c"}));
    }

    #[test]
    fn unknown_fields_and_subfields_of_scalars_are_errors_naming_them() {
        let c = desc("worktruck.contacts.v1.Contact");
        assert!(FieldMask::parse(&c, ["id,bogus"]).unwrap_err().contains("\"bogus\""));
        assert!(FieldMask::parse(&c, ["display_name.first"]).unwrap_err().contains("no subfields"));
        assert!(FieldMask::parse(&c, ["metadata.x"]).unwrap_err().contains("no subfields"));
        let many = vec!["id"; MAX_PATHS + 1].join(",");
        assert!(FieldMask::parse(&c, [many.as_str()]).unwrap_err().contains("at most"));
        assert_eq!(FieldMask::parse(&c, [" , "]).unwrap(), None);
    }

    #[test]
    fn requests_with_a_fields_field_of_their_own_take_no_mask() {
        assert!(!FieldMask::applies(&desc("worktruck.common.v1.TimelineRequest")));
        assert!(FieldMask::applies(&desc("worktruck.contacts.v1.GetContactRequest")));
    }
}
