//! Notes, notebooks and tags as domain code sees them: validated documents built only through
//! parsing, and their mapping to the wire types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct};
use worktruck_kit::store::Record;
use worktruck_kit::{Error, Result};
use worktruck_proto::notes::v1 as pb;

use crate::markdown::{self, Frontmatter};
pub use worktruck_kit::check::{check_metadata};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most tags on one note.
const MAX_TAGS: usize = 50;

/// The stored fields of a note (the bitemporal document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NoteDoc {
    /// The title.
    pub title: String,
    /// [`markdown::title_key`] of the title: what links resolve by (not on the wire).
    pub title_key: String,
    /// Raw markdown.
    pub body: String,
    /// Metadata set through the API.
    pub metadata: Value,
    /// The parsed frontmatter (an empty object when none or invalid).
    pub frontmatter: Value,
    /// Why the frontmatter did not parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontmatter_error: Option<String>,
    /// The notebook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notebook_id: Option<String>,
    /// Tag ids.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Pinned.
    pub is_pinned: bool,
    /// Archived.
    pub is_archived: bool,
    /// Source URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// Words in the body.
    pub word_count: i32,
}

/// Fields kept for queries, hidden from history entries.
pub const NOTE_HIDDEN: &[&str] = &["title_key"];

/// Validates a title: trimmed, 1 to 500 characters, no line breaks or `[`/`]` (which would
/// make it unlinkable), no `|` or `#` (which a wikilink reads as alias and heading).
pub fn check_title(s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Error::validation("title must not be empty"));
    }
    if s.chars().count() > 500 {
        return Err(Error::validation("title must be at most 500 characters"));
    }
    if s.chars().any(|c| c.is_control() || matches!(c, '[' | ']' | '|' | '#')) {
        return Err(Error::validation("title must not contain line breaks, control characters, [, ], | or #"));
    }
    Ok(s.to_owned())
}

fn check_body(s: &str) -> Result<()> {
    if s.len() > MAX_BODY_BYTES {
        return Err(Error::validation("body must be at most 1 MiB"));
    }
    if s.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(Error::validation("body must not contain control characters other than tab and line breaks"));
    }
    Ok(())
}

/// Validates an http(s) URL of at most 2,048 characters; `None` for an empty string.
pub fn check_url(field: &str, v: &str) -> Result<Option<String>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let ok = (v.starts_with("https://") || v.starts_with("http://"))
        && v.len() > "https://".len()
        && v.chars().count() <= 2048
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(Error::validation(format!("{field} must be an http or https URL of at most 2048 characters")));
    }
    Ok(Some(v.to_owned()))
}

/// Merges `patch` into `base`: a null value removes the key.
pub fn merge(base: &Value, patch: &Value) -> Value {
    let mut merged = base.as_object().cloned().unwrap_or_default();
    for (k, v) in patch.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    Value::Object(merged)
}

/// Validates an optional id field; `None` for an empty string.
pub fn check_id(field: &str, v: &str) -> Result<Option<Uuid>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(v).map(Some).map_err(|_| Error::validation(format!("{field} must be a UUID")))
}

/// Validates tag names: trimmed, 1 to 100 characters, no `,` or `#` or control characters;
/// duplicates (case-insensitive) dropped.
pub fn check_tag_names(names: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = check_tag_name(n)?;
        if !out.iter().any(|o| markdown::title_key(o) == markdown::title_key(&n)) {
            out.push(n);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::validation(format!("a note has at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

/// Validates one tag name.
pub fn check_tag_name(n: &str) -> Result<String> {
    let n = n.trim().trim_start_matches('#').trim();
    if n.is_empty() || n.chars().count() > 100 {
        return Err(Error::validation("a tag name must be 1 to 100 characters"));
    }
    if n.chars().any(|c| c.is_control() || c == ',' || c == '#') {
        return Err(Error::validation("a tag name must not contain , # or control characters"));
    }
    Ok(n.to_owned())
}

impl NoteDoc {
    /// A note from its user-given fields; the derived ones (key, frontmatter, word count) are
    /// computed here and nowhere else.
    pub fn new(title: String, body: String, metadata: Value) -> Result<NoteDoc> {
        let mut d = NoteDoc { title, metadata, ..Default::default() };
        check_metadata(&d.metadata)?;
        d.set_body(body)?;
        d.set_title(&d.title.clone())?;
        Ok(d)
    }

    /// Sets the title and its key.
    pub fn set_title(&mut self, t: &str) -> Result<()> {
        self.title = check_title(t)?;
        self.title_key = markdown::title_key(&self.title);
        Ok(())
    }

    /// Sets the body and what derives from it.
    pub fn set_body(&mut self, body: String) -> Result<()> {
        check_body(&body)?;
        let (fm, err) = match markdown::frontmatter(&body) {
            Frontmatter::None => (Map::new(), None),
            Frontmatter::Parsed(m, _) => (m, None),
            Frontmatter::Invalid(e) => (Map::new(), Some(e)),
        };
        self.frontmatter = Value::Object(fm);
        check_metadata(&self.frontmatter).map_err(|_| Error::validation("the frontmatter must be at most 64 KiB"))?;
        self.frontmatter_error = err;
        self.word_count = markdown::word_count(&body);
        self.body = body;
        Ok(())
    }

    /// The text full-text search covers.
    pub fn search_text(&self) -> String {
        format!("{}\n{}", self.title, self.body)
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a note serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<NoteDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }

    /// What the wire calls `metadata`: the frontmatter, then the API's keys over it.
    pub fn wire_metadata(&self) -> Value {
        merge(&self.frontmatter, &self.metadata)
    }
}

/// The wire note for a stored record; `tags` are the note's tags, resolved.
pub fn note_pb(tenant: &str, r: &Record, d: &NoteDoc, tags: Vec<pb::Tag>) -> pb::Note {
    pb::Note {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        title: d.title.clone(),
        body: d.body.clone(),
        metadata: Some(to_struct(&d.wire_metadata())),
        frontmatter_error: d.frontmatter_error.clone(),
        notebook_id: d.notebook_id.clone(),
        is_pinned: d.is_pinned,
        is_archived: d.is_archived,
        source_url: d.source_url.clone(),
        word_count: d.word_count,
        tags,
        backlink_count: 0,
        outgoing_link_count: 0,
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        deleted_at: r.deleted_at.map(timestamp),
        snippet: None,
        temporal: r.temporal.as_ref().map(worktruck_kit::pbjson::temporal),
    }
}

/// The stored fields of a notebook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NotebookDoc {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The enclosing notebook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
}

/// Validates a notebook or tag name of at most `max` characters.
pub fn check_name(field: &str, s: &str, max: usize) -> Result<String> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > max {
        return Err(Error::validation(format!("{field} must be 1 to {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::validation(format!("{field} must not contain control characters")));
    }
    Ok(s.to_owned())
}

/// Validates a description; `None` for an empty one.
pub fn check_description(s: &str) -> Result<Option<String>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > 2000 {
        return Err(Error::validation("description must be at most 2000 characters"));
    }
    Ok(Some(s.to_owned()))
}

impl NotebookDoc {
    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a notebook serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<NotebookDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// The wire notebook.
pub fn notebook_pb(tenant: &str, r: &Record, note_count: i64) -> Result<pb::Notebook> {
    let d = NotebookDoc::from_value(&r.doc)?;
    Ok(pb::Notebook {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        name: d.name,
        description: d.description,
        parent_id: d.parent_id,
        note_count: i32::try_from(note_count).unwrap_or(i32::MAX),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    })
}

/// The stored fields of a tag definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TagDoc {
    /// Name as written.
    pub name: String,
    /// The name's key (unique per tenant; not on the wire).
    pub key: String,
    /// `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free JSON.
    pub metadata: Value,
}

/// Validates a colour: `#rrggbb` (lower-cased); `None` for an empty string.
pub fn check_color(s: &str) -> Result<Option<String>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let ok = s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit());
    if !ok {
        return Err(Error::validation("color must be #rrggbb"));
    }
    Ok(Some(s.to_ascii_lowercase()))
}

impl TagDoc {
    /// A tag named `name`.
    pub fn named(name: &str) -> Result<TagDoc> {
        let name = check_tag_name(name)?;
        Ok(TagDoc { key: markdown::title_key(&name), name, metadata: Value::Object(Map::new()), ..Default::default() })
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a tag serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<TagDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// The wire tag.
pub fn tag_pb(tenant: &str, r: &Record) -> Result<pb::Tag> {
    let d = TagDoc::from_value(&r.doc)?;
    Ok(pb::Tag {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        name: d.name,
        color: d.color,
        description: d.description,
        metadata: Some(to_struct(&d.metadata)),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    })
}

/// Reads an optional `Struct` as a JSON object (empty when absent).
pub fn struct_or_empty(s: Option<&prost_types::Struct>) -> Value {
    s.map(from_struct).unwrap_or_else(|| Value::Object(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_derives_key_frontmatter_and_word_count() {
        let d = NoteDoc::new("  Big   Idea ".into(), "---\nstatus: draft\n---\nOne two three.".into(), serde_json::json!({"status": "final", "x": 1}))
            .unwrap();
        assert_eq!(d.title, "Big   Idea");
        assert_eq!(d.title_key, "big idea");
        assert_eq!(d.word_count, 3);
        assert_eq!(d.wire_metadata(), serde_json::json!({"status": "final", "x": 1}));
        let bad = NoteDoc::new("t".into(), "---\n[oops\n---\nbody".into(), serde_json::json!({})).unwrap();
        assert!(bad.frontmatter_error.is_some());
        assert_eq!(bad.body, "---\n[oops\n---\nbody", "a bad frontmatter stays in the body");
        assert!(NoteDoc::new(" ".into(), String::new(), serde_json::json!({})).is_err());
        assert!(NoteDoc::new("a [[b]]".into(), String::new(), serde_json::json!({})).is_err());
        assert!(NoteDoc::new("t".into(), "\u{0}".into(), serde_json::json!({})).is_err());
    }

    #[test]
    fn names_colours_and_urls_are_checked() {
        assert_eq!(check_color("#A0b1C2").unwrap().as_deref(), Some("#a0b1c2"));
        assert!(check_color("red").is_err());
        assert!(check_url("source_url", "javascript:alert(1)").is_err());
        assert!(check_url("source_url", "https://example.com/a b").is_err());
        assert_eq!(check_tag_names(&["#Rust".into(), "rust".into(), "Go".into()]).unwrap(), ["Rust", "Go"]);
        assert!(check_tag_names(&["a,b".into()]).is_err());
    }
}
