//! The checks every domain's validation shares: names, free text, dates, colours, ids, URLs
//! and `metadata` objects (and their merge-patch). A rule that names a domain stays in its
//! service.

use chrono::NaiveDate;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result, quote};

/// Largest accepted `metadata`, serialised.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Validates a trimmed name of 1 to `max` characters without control characters.
pub fn check_name(field: &str, v: &str, max: usize) -> Result<String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(Error::validation(format!("{field} must be 1 to {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(Error::validation(format!("{field} must not contain control characters")));
    }
    Ok(v.to_owned())
}

/// Validates free text of at most `max` characters; `None` for an empty string.
pub fn check_text(field: &str, v: &str, max: usize) -> Result<Option<String>> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    if v.chars().count() > max {
        return Err(Error::validation(format!("{field} must be at most {max} characters")));
    }
    Ok(Some(v.to_owned()))
}

/// Validates a calendar date `YYYY-MM-DD`; `None` for an empty string.
pub fn check_date(field: &str, v: &str) -> Result<Option<String>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let ok = v.len() == 10 && NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
    if !ok {
        return Err(Error::validation(format!("{field} {} is not a calendar date YYYY-MM-DD", quote(v))));
    }
    Ok(Some(v.to_owned()))
}

/// Validates a colour `#rrggbb`; `None` for an empty string.
pub fn check_color(v: &str) -> Result<Option<String>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let ok = v.len() == 7 && v.starts_with('#') && v[1..].chars().all(|c| c.is_ascii_hexdigit());
    if !ok {
        return Err(Error::validation("color must be #rrggbb"));
    }
    Ok(Some(v.to_ascii_lowercase()))
}

/// Validates an optional id field; `None` for an empty string.
pub fn check_id(field: &str, v: &str) -> Result<Option<Uuid>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(v).map(Some).map_err(|_| Error::validation(format!("{field} must be a UUID")))
}

/// Validates a metadata object.
pub fn check_metadata(m: &Value) -> Result<()> {
    if !m.is_object() {
        return Err(Error::validation("metadata must be a JSON object"));
    }
    if serde_json::to_vec(m).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_METADATA_BYTES {
        return Err(Error::validation("metadata must be at most 64 KiB"));
    }
    Ok(())
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
        return Err(Error::validation(format!(
            "{field} {} must be an http or https URL of at most 2048 characters",
            quote(v)
        )));
    }
    Ok(Some(v.to_owned()))
}
