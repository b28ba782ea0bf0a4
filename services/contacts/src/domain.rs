//! The contact as domain code sees it: a validated document, built only through parsing, and its
//! mapping to and from the wire type.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct};
use worktruck_kit::store::Record;
use worktruck_kit::{Error, Result};
use worktruck_proto::contacts::v1 as pb;

use crate::children::{AddressDoc, AffiliationDoc, ChannelDoc, DateDoc, check_region};


/// The stored fields of a contact (the bitemporal document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContactDoc {
    /// person, organization or group.
    pub kind: String,
    /// Name to show.
    pub display_name: String,
    /// Emails, phones, URLs, handles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelDoc>,
    /// Postal addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddressDoc>,
    /// Significant dates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dates: Vec<DateDoc>,
    /// Affiliations with organizations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affiliations: Vec<AffiliationDoc>,
    /// Tag ids, in the order they were attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_ids: Vec<String>,
    /// Group ids, in the order they were joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_ids: Vec<String>,
    /// Wanted days between two contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stay_in_touch_days: Option<i32>,
    /// The latest interaction's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contacted_at: Option<DateTime<Utc>>,
    /// Optional fields, by name; absent means null.
    #[serde(flatten)]
    pub optional: Map<String, Value>,
    /// Free JSON object.
    #[serde(default)]
    pub metadata: Value,
}

/// The optional text fields, their wire names, and their length limits.
pub const OPTIONAL_FIELDS: &[(&str, usize)] = &[
    ("given_name", 200),
    ("middle_name", 200),
    ("family_name", 200),
    ("prefix", 50),
    ("suffix", 50),
    ("nickname", 200),
    ("bio", 10_000),
    ("avatar_url", 2048),
    ("language", 35),
    ("timezone", 64),
    ("vcard_uid", 255),
    ("default_region", 2),
];

/// The short name of a kind.
pub fn kind_str(k: pb::ContactKind) -> Option<&'static str> {
    match k {
        pb::ContactKind::Person => Some("person"),
        pb::ContactKind::Organization => Some("organization"),
        pb::ContactKind::Group => Some("group"),
        pb::ContactKind::Unspecified => None,
    }
}

fn kind_pb(s: &str) -> pb::ContactKind {
    match s {
        "person" => pb::ContactKind::Person,
        "organization" => pb::ContactKind::Organization,
        "group" => pb::ContactKind::Group,
        _ => pb::ContactKind::Unspecified,
    }
}

/// Parses a kind number from the wire.
pub fn parse_kind(k: i32) -> Result<&'static str> {
    pb::ContactKind::try_from(k)
        .ok()
        .and_then(kind_str)
        .ok_or_else(|| Error::validation("kind must be person, organization or group"))
}

fn check_display_name(s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Error::validation("display_name must not be empty"));
    }
    if s.chars().count() > 500 {
        return Err(Error::validation("display_name must be at most 500 characters"));
    }
    Ok(s.to_owned())
}

/// Validates one optional field; `Ok(None)` clears it (empty string).
fn check_optional(field: &str, max: usize, value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.chars().count() > max {
        return Err(Error::validation(format!("{field} must be at most {max} characters")));
    }
    // Control characters and NUL never get here: the gRPC codec refuses them in every
    // single-line field (and NUL everywhere) for every service (`worktruck_proto::text`).
    match field {
        "avatar_url" if !(v.starts_with("https://") || v.starts_with("http://")) || v.contains(char::is_whitespace) => {
            return Err(Error::validation("avatar_url must be an http or https URL"));
        }
        "language" if !is_language_tag(v) => {
            return Err(Error::validation("language must be a BCP 47 tag such as en or en-GB"));
        }
        "timezone" if !is_timezone(v) => {
            return Err(Error::validation("timezone must be an IANA name such as Europe/Oslo or UTC"));
        }
        "default_region" => return check_region(v).map(Some),
        _ => {}
    }
    Ok(Some(v.to_owned()))
}

fn is_language_tag(v: &str) -> bool {
    let mut parts = v.split('-');
    let first = parts.next().unwrap_or_default();
    (2..=3).contains(&first.len())
        && first.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A name in the IANA time zone database (as shipped by `chrono-tz`), spelled exactly.
fn is_timezone(v: &str) -> bool {
    v.parse::<chrono_tz::Tz>().is_ok()
}

/// Checks a stay-in-touch cadence; 0 clears it.
fn check_cadence(days: i32) -> Result<Option<i32>> {
    match days {
        0 => Ok(None),
        1..=3650 => Ok(Some(days)),
        _ => Err(Error::validation("stay_in_touch_days must be between 1 and 3650 (0 clears it)")),
    }
}

impl ContactDoc {
    /// Validates a create request into a document.
    pub fn from_create(r: &pb::CreateContactRequest) -> Result<ContactDoc> {
        let mut doc = ContactDoc {
            kind: parse_kind(r.kind)?.to_owned(),
            display_name: check_display_name(&r.display_name)?,
            optional: Map::new(),
            metadata: r.metadata.as_ref().map(from_struct).unwrap_or_else(|| Value::Object(Map::new())),
            ..Default::default()
        };
        if let Some(d) = r.stay_in_touch_days {
            doc.stay_in_touch_days = check_cadence(d)?;
        }
        check_metadata(&doc.metadata)?;
        for (field, value) in optionals!(r) {
            doc.set_optional(field, value)?;
        }
        Ok(doc)
    }

    /// Applies an update request: set fields change, empty strings clear, `metadata` merges.
    pub fn apply(&self, r: &pb::UpdateContactRequest) -> Result<ContactDoc> {
        let mut doc = self.clone();
        if let Some(k) = r.kind {
            doc.kind = parse_kind(k)?.to_owned();
        }
        if let Some(n) = &r.display_name {
            doc.display_name = check_display_name(n)?;
        }
        if let Some(d) = r.stay_in_touch_days {
            doc.stay_in_touch_days = check_cadence(d)?;
        }
        for (field, value) in optionals!(r) {
            doc.set_optional(field, value)?;
        }
        if let Some(m) = &r.metadata {
            let mut merged = doc.metadata.as_object().cloned().unwrap_or_default();
            for (k, v) in from_struct(m).as_object().cloned().unwrap_or_default() {
                if v.is_null() {
                    merged.remove(&k);
                } else {
                    merged.insert(k, v);
                }
            }
            doc.metadata = Value::Object(merged);
            check_metadata(&doc.metadata)?;
        }
        Ok(doc)
    }

    fn set_optional(&mut self, field: &'static str, value: Option<&String>) -> Result<()> {
        let Some(value) = value else { return Ok(()) };
        let max = OPTIONAL_FIELDS.iter().find(|(f, _)| *f == field).map(|(_, m)| *m).unwrap_or(200);
        match check_optional(field, max, value)? {
            Some(v) => {
                self.optional.insert(field.to_owned(), Value::String(v));
            }
            None => {
                self.optional.remove(field);
            }
        }
        Ok(())
    }

    /// The text full-text search covers: names, nickname, bio, channel values, and the names
    /// given for the contact's organizations and tags (`extra`).
    pub fn search_text_with(&self, extra: &[String]) -> String {
        let mut parts = vec![self.display_name.as_str()];
        for f in ["given_name", "middle_name", "family_name", "nickname", "bio"] {
            if let Some(v) = self.optional.get(f).and_then(Value::as_str) {
                parts.push(v);
            }
        }
        // PostgreSQL's parser keeps an email or URL as one token, so channel values are also
        // given as their words (`ada lovelace example org`), which both engines match by prefix.
        let words: Vec<String> = self
            .channels
            .iter()
            .flat_map(|c| [c.value.as_str(), c.canonical_value.as_str()])
            .map(|v| v.chars().map(|ch| if ch.is_alphanumeric() { ch } else { ' ' }).collect())
            .collect();
        parts.extend(words.iter().map(String::as_str));
        parts.extend(extra.iter().map(String::as_str));
        parts.join(" ")
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        // Field order follows the wire type, so history and diffs read naturally.
        let mut m = Map::new();
        m.insert("kind".into(), Value::String(self.kind.clone()));
        m.insert("display_name".into(), Value::String(self.display_name.clone()));
        for (f, _) in OPTIONAL_FIELDS {
            if let Some(v) = self.optional.get(*f) {
                m.insert((*f).to_owned(), v.clone());
            }
        }
        if let Some(d) = self.stay_in_touch_days {
            m.insert("stay_in_touch_days".into(), Value::from(d));
        }
        if let Some(t) = self.last_contacted_at {
            m.insert("last_contacted_at".into(), serde_json::to_value(t).unwrap_or(Value::Null));
        }
        let arrays: [(&str, Value); 6] = [
            ("channels", serde_json::to_value(&self.channels).unwrap_or_default()),
            ("addresses", serde_json::to_value(&self.addresses).unwrap_or_default()),
            ("dates", serde_json::to_value(&self.dates).unwrap_or_default()),
            ("affiliations", serde_json::to_value(&self.affiliations).unwrap_or_default()),
            ("tag_ids", serde_json::to_value(&self.tag_ids).unwrap_or_default()),
            ("group_ids", serde_json::to_value(&self.group_ids).unwrap_or_default()),
        ];
        for (k, v) in arrays {
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                m.insert(k.into(), v);
            }
        }
        m.insert("metadata".into(), self.metadata.clone());
        Value::Object(m)
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<ContactDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// The optional fields of a request, by wire name (create and update name them alike).
macro_rules! optionals {
    ($r:expr) => {
        [
            ("given_name", $r.given_name.as_ref()),
            ("middle_name", $r.middle_name.as_ref()),
            ("family_name", $r.family_name.as_ref()),
            ("prefix", $r.prefix.as_ref()),
            ("suffix", $r.suffix.as_ref()),
            ("nickname", $r.nickname.as_ref()),
            ("bio", $r.bio.as_ref()),
            ("avatar_url", $r.avatar_url.as_ref()),
            ("language", $r.language.as_ref()),
            ("timezone", $r.timezone.as_ref()),
            ("vcard_uid", $r.vcard_uid.as_ref()),
            ("default_region", $r.default_region.as_ref()),
        ]
    };
}
use optionals;
pub use worktruck_kit::check::{check_metadata};

/// Names a contact's wire form shows beside its stored ids: tags and organizations, as they are
/// now.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Tags by id.
    pub tags: std::collections::HashMap<String, pb::Tag>,
    /// Organization display names by id.
    pub orgs: std::collections::HashMap<String, String>,
}

/// The wire contact for a stored record.
pub fn contact_pb(tenant: &str, r: &Record, names: &Names) -> Result<pb::Contact> {
    let d = ContactDoc::from_value(&r.doc)?;
    let opt = |f: &str| d.optional.get(f).and_then(Value::as_str).map(str::to_owned);
    let id = r.id.to_string();
    Ok(pb::Contact {
        id: id.clone(),
        tenant_id: tenant.to_owned(),
        kind: kind_pb(&d.kind) as i32,
        display_name: d.display_name.clone(),
        given_name: opt("given_name"),
        middle_name: opt("middle_name"),
        family_name: opt("family_name"),
        prefix: opt("prefix"),
        suffix: opt("suffix"),
        nickname: opt("nickname"),
        bio: opt("bio"),
        avatar_url: opt("avatar_url"),
        language: opt("language"),
        timezone: opt("timezone"),
        vcard_uid: opt("vcard_uid"),
        metadata: Some(to_struct(&d.metadata)),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        deleted_at: r.deleted_at.map(timestamp),
        temporal: r.temporal.as_ref().map(worktruck_kit::pbjson::temporal),
        channels: d.channels.iter().map(|c| c.to_pb(&id)).collect(),
        addresses: d.addresses.iter().map(|a| a.to_pb(&id)).collect(),
        dates: d.dates.iter().map(|x| x.to_pb(&id)).collect(),
        tags: d.tag_ids.iter().filter_map(|t| names.tags.get(t).cloned()).collect(),
        affiliations: d
            .affiliations
            .iter()
            .map(|a| a.to_pb(&id, names.orgs.get(&a.organization_id).map(String::as_str).unwrap_or_default()))
            .collect(),
        group_ids: d.group_ids.clone(),
        stay_in_touch_days: d.stay_in_touch_days,
        last_contacted_at: d.last_contacted_at.map(timestamp),
        default_region: opt("default_region"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(kind: pb::ContactKind, name: &str) -> pb::CreateContactRequest {
        pb::CreateContactRequest { kind: kind as i32, display_name: name.into(), ..Default::default() }
    }

    #[test]
    fn create_validates_and_normalises() {
        let d = ContactDoc::from_create(&create(pb::ContactKind::Person, "  Ada  ")).unwrap();
        assert_eq!(d.display_name, "Ada");
        assert!(ContactDoc::from_create(&create(pb::ContactKind::Unspecified, "Ada")).is_err());
        assert!(ContactDoc::from_create(&create(pb::ContactKind::Person, "   ")).is_err());
        let mut r = create(pb::ContactKind::Person, "Ada");
        for bad in ["Mars/Olympus Mons", "Mars/Olympus", "Europe/Atlantis", "europe/oslo"] {
            r.timezone = Some(bad.into());
            assert!(ContactDoc::from_create(&r).is_err(), "{bad}");
        }
        for good in ["UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+5"] {
            r.timezone = Some(good.into());
            assert!(ContactDoc::from_create(&r).is_ok(), "{good}");
        }
        r.timezone = Some("Europe/London".into());
        r.language = Some("en-GB".into());
        r.avatar_url = Some("javascript:alert(1)".into());
        assert!(ContactDoc::from_create(&r).is_err());
        r.avatar_url = Some("https://example.com/a.png".into());
        assert!(ContactDoc::from_create(&r).is_ok());
    }

    #[test]
    fn update_sets_clears_and_merges() {
        let mut r = create(pb::ContactKind::Person, "Ada");
        r.nickname = Some("Countess".into());
        r.metadata = Some(to_struct(&serde_json::json!({"a": 1, "b": 2})));
        let d = ContactDoc::from_create(&r).unwrap();
        let u = pb::UpdateContactRequest {
            nickname: Some(String::new()),
            family_name: Some("Lovelace".into()),
            metadata: Some(to_struct(&serde_json::json!({"a": null, "c": 3}))),
            ..Default::default()
        };
        let d2 = d.apply(&u).unwrap();
        assert!(!d2.optional.contains_key("nickname"));
        assert_eq!(d2.optional["family_name"], "Lovelace");
        assert_eq!(d2.metadata, serde_json::json!({"b": 2, "c": 3}));
        let bad = pb::UpdateContactRequest { display_name: Some(" ".into()), ..Default::default() };
        assert!(d.apply(&bad).is_err());
    }
}
