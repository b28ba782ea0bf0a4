//! A contact's children that live inside its versioned document — channels, addresses, dates and
//! affiliations — so that `as_of`, history, diff and timeline cover them with no code of their
//! own: their stored shape, their validation and canonicalisation, and their wire mapping.

use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use worktruck_kit::error::quote;
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct};
use worktruck_kit::{Error, Result};
use worktruck_proto::contacts::v1 as pb;

use crate::domain::check_metadata;

/// Most children of one kind a contact holds.
pub const MAX_CHILDREN: usize = 100;

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A trimmed optional text of at most `max` characters; `Ok(None)` for an empty one.
pub fn text(field: &str, value: &str, max: usize) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.chars().count() > max {
        return Err(Error::validation(format!("{field} must be at most {max} characters")));
    }
    Ok(Some(v.to_owned()))
}

/// Sets `slot` from an update's optional text: absent keeps, empty clears.
fn set_text(slot: &mut Option<String>, field: &str, value: Option<&String>, max: usize) -> Result<()> {
    if let Some(v) = value {
        *slot = text(field, v, max)?;
    }
    Ok(())
}

/// Merges an update's `metadata` into `current` (a null value removes a key).
pub fn merge_metadata(current: &Value, patch: Option<&prost_types::Struct>) -> Result<Value> {
    let Some(patch) = patch else { return Ok(current.clone()) };
    let mut merged = current.as_object().cloned().unwrap_or_default();
    for (k, v) in from_struct(patch).as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    let merged = Value::Object(merged);
    check_metadata(&merged)?;
    Ok(merged)
}

fn new_metadata(m: Option<&prost_types::Struct>) -> Result<Value> {
    let v = m.map(from_struct).unwrap_or_else(empty_object);
    check_metadata(&v)?;
    Ok(v)
}

/// An ISO 3166-1 alpha-2 region the phone-number metadata knows, upper-cased.
pub fn check_region(v: &str) -> Result<String> {
    let up = v.trim().to_ascii_uppercase();
    if up.len() == 2 && up.chars().all(|c| c.is_ascii_alphabetic()) && phonenumber::country::Id::from_str(&up).is_ok() {
        Ok(up)
    } else {
        Err(Error::validation(format!("{} is not an ISO 3166-1 alpha-2 region such as GB or US", quote(v))))
    }
}

/// The short name of a channel type.
pub fn channel_type_str(t: pb::ChannelType) -> Option<&'static str> {
    Some(match t {
        pb::ChannelType::Email => "email",
        pb::ChannelType::Phone => "phone",
        pb::ChannelType::Url => "url",
        pb::ChannelType::Twitter => "twitter",
        pb::ChannelType::Linkedin => "linkedin",
        pb::ChannelType::Im => "im",
        pb::ChannelType::Custom => "custom",
        pb::ChannelType::Unspecified => return None,
    })
}

/// Parses a channel type number from the wire.
pub fn parse_channel_type(t: i32) -> Result<&'static str> {
    pb::ChannelType::try_from(t)
        .ok()
        .and_then(channel_type_str)
        .ok_or_else(|| Error::validation("type must be email, phone, url, twitter, linkedin, im or custom"))
}

fn channel_type_pb(s: &str) -> pb::ChannelType {
    match s {
        "email" => pb::ChannelType::Email,
        "phone" => pb::ChannelType::Phone,
        "url" => pb::ChannelType::Url,
        "twitter" => pb::ChannelType::Twitter,
        "linkedin" => pb::ChannelType::Linkedin,
        "im" => pb::ChannelType::Im,
        "custom" => pb::ChannelType::Custom,
        _ => pb::ChannelType::Unspecified,
    }
}

/// The canonical form of a channel value, the one matching and duplicate detection use:
/// emails trimmed and lower-cased, phones in E.164 (a national number read in `region`),
/// handles lower-cased without `@`. A value that cannot be canonicalised is a
/// `validation_failed` that says why.
pub fn canonical(kind: &str, value: &str, region: Option<&str>) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::validation("value must not be empty"));
    }
    if v.chars().count() > 500 {
        return Err(Error::validation("value must be at most 500 characters"));
    }
    match kind {
        "email" => {
            let e = v.to_lowercase();
            let (local, domain) = e.rsplit_once('@').unwrap_or(("", ""));
            let ok = !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.chars().any(char::is_whitespace)
                && !domain.contains('@');
            if !ok {
                return Err(Error::validation(format!("{} is not an email address (name@example.com)", quote(value))));
            }
            Ok(e)
        }
        "phone" => canonical_phone(v, region),
        "twitter" => {
            let h = v
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_start_matches("www.")
                .trim_start_matches("twitter.com/")
                .trim_start_matches("x.com/")
                .trim_start_matches('@')
                .trim_end_matches('/')
                .to_lowercase();
            if h.is_empty() || h.len() > 15 || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::validation(format!("{} is not a Twitter handle (1 to 15 letters, digits or _)", quote(value))));
            }
            Ok(h)
        }
        "url" | "linkedin" => {
            let lower = v.to_lowercase();
            let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
            let rest = match (kind, rest) {
                (_, Some(r)) => r.to_owned(),
                ("linkedin", None) if !lower.contains("://") => lower.clone(),
                _ => return Err(Error::validation(format!("{} must be an http or https URL", quote(value)))),
            };
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(Error::validation(format!("{} is not a URL", quote(value))));
            }
            Ok(rest.trim_start_matches("www.").trim_end_matches('/').to_owned())
        }
        _ => Ok(v.to_lowercase()),
    }
}

/// A phone number in E.164 through the `phonenumber` crate (libphonenumber's metadata).
fn canonical_phone(v: &str, region: Option<&str>) -> Result<String> {
    let international = v.starts_with('+') || v.starts_with("00");
    let id = match region {
        Some(r) => Some(phonenumber::country::Id::from_str(r).map_err(|_| Error::validation(format!("unknown region {}", quote(r))))?),
        None if international => None,
        None => {
            return Err(Error::validation(format!(
                "phone number {} has no country code and no region is known: write it as +<country code>…, \
                 or pass `region`, or set `default_region` on the contact or the tenant's contacts settings",
                quote(v)
            )));
        }
    };
    // Without a region the international call prefix is unknown; 00 is the ITU's recommended
    // one (most of Europe, Asia, Africa), so `00 44 …` reads as `+44 …`.
    let v = match (id, v.strip_prefix("00")) {
        (None, Some(rest)) => format!("+{rest}"),
        _ => v.to_owned(),
    };
    let n = phonenumber::parse(id, &v).map_err(|e| Error::validation(format!("phone number {} cannot be read: {e}", quote(&v))))?;
    if !phonenumber::is_valid(&n) {
        let place = region.map(|r| format!(" for region {r}")).unwrap_or_default();
        return Err(Error::validation(format!("phone number {} is not a valid number{place}", quote(&v))));
    }
    Ok(n.format().mode(phonenumber::Mode::E164).to_string())
}

/// A stored channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelDoc {
    /// Channel id.
    pub id: String,
    /// email, phone, …
    #[serde(rename = "type")]
    pub kind: String,
    /// As given.
    pub value: String,
    /// As matched.
    pub canonical_value: String,
    /// Free label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Primary of its type.
    #[serde(default)]
    pub is_primary: bool,
    /// Verified.
    #[serde(default)]
    pub is_verified: bool,
    /// Order among its type.
    #[serde(default)]
    pub preference_order: i32,
    /// Free JSON.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Added at.
    pub created_at: DateTime<Utc>,
    /// Changed at.
    pub updated_at: DateTime<Utc>,
}

impl ChannelDoc {
    /// Validates an add request; `region` reads national phone numbers.
    pub fn new(r: &pb::AddChannelRequest, region: Option<&str>, now: DateTime<Utc>) -> Result<ChannelDoc> {
        let kind = parse_channel_type(r.r#type)?;
        let own = r.region.as_deref().map(check_region).transpose()?;
        let region = own.as_deref().or(region);
        Ok(ChannelDoc {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.to_owned(),
            canonical_value: canonical(kind, &r.value, region)?,
            value: r.value.trim().to_owned(),
            label: r.label.as_deref().map(|l| text("label", l, 100)).transpose()?.flatten(),
            is_primary: r.is_primary.unwrap_or(false),
            is_verified: r.is_verified.unwrap_or(false),
            preference_order: r.preference_order.unwrap_or(0),
            metadata: new_metadata(r.metadata.as_ref())?,
            created_at: now,
            updated_at: now,
        })
    }

    /// Applies an update request.
    pub fn apply(&self, r: &pb::UpdateChannelRequest, region: Option<&str>, now: DateTime<Utc>) -> Result<ChannelDoc> {
        let mut c = self.clone();
        let own = r.region.as_deref().map(check_region).transpose()?;
        let region = own.as_deref().or(region);
        if let Some(v) = &r.value {
            c.canonical_value = canonical(&c.kind, v, region)?;
            c.value = v.trim().to_owned();
        }
        set_text(&mut c.label, "label", r.label.as_ref(), 100)?;
        if let Some(p) = r.is_primary {
            c.is_primary = p;
        }
        if let Some(v) = r.is_verified {
            c.is_verified = v;
        }
        if let Some(o) = r.preference_order {
            c.preference_order = o;
        }
        c.metadata = merge_metadata(&c.metadata, r.metadata.as_ref())?;
        if c != *self {
            c.updated_at = now;
        }
        Ok(c)
    }

    /// The wire channel.
    pub fn to_pb(&self, contact_id: &str) -> pb::Channel {
        pb::Channel {
            id: self.id.clone(),
            contact_id: contact_id.to_owned(),
            r#type: channel_type_pb(&self.kind) as i32,
            value: self.value.clone(),
            canonical_value: self.canonical_value.clone(),
            label: self.label.clone(),
            is_primary: self.is_primary,
            is_verified: self.is_verified,
            preference_order: self.preference_order,
            metadata: Some(to_struct(&self.metadata)),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
        }
    }
}

/// The rules over all of a contact's channels: at most one primary per type, one channel per
/// canonical value and type, at most [`MAX_CHILDREN`].
pub fn check_channels(channels: &[ChannelDoc]) -> Result<()> {
    if channels.len() > MAX_CHILDREN {
        return Err(Error::validation(format!("a contact has at most {MAX_CHILDREN} channels")));
    }
    for (i, c) in channels.iter().enumerate() {
        for d in &channels[..i] {
            if c.is_primary && d.is_primary && c.kind == d.kind {
                return Err(Error::validation(format!(
                    "the contact already has a primary {} ({}); unset it first",
                    c.kind,
                    quote(&d.value)
                )));
            }
            if c.kind == d.kind && c.canonical_value == d.canonical_value {
                return Err(Error::new(
                    worktruck_kit::ErrorCode::AlreadyExists,
                    format!("the contact already has the {} {}", c.kind, quote(&d.canonical_value)),
                ));
            }
        }
    }
    Ok(())
}

/// A stored address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AddressDoc {
    /// Address id.
    pub id: String,
    /// Street.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    /// Extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended: Option<String>,
    /// PO box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub po_box: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// Label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Primary.
    #[serde(default)]
    pub is_primary: bool,
    /// Free JSON.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Added at.
    pub created_at: Option<DateTime<Utc>>,
    /// Changed at.
    pub updated_at: Option<DateTime<Utc>>,
}

impl AddressDoc {
    /// Applies an add (`self` empty) or change request.
    pub fn apply(&self, r: &pb::AddressInput, now: DateTime<Utc>) -> Result<AddressDoc> {
        let mut a = self.clone();
        let adding = a.id.is_empty();
        for (slot, field, value, max) in [
            (&mut a.street, "street", r.street.as_ref(), 500),
            (&mut a.extended, "extended", r.extended.as_ref(), 500),
            (&mut a.po_box, "po_box", r.po_box.as_ref(), 100),
            (&mut a.city, "city", r.city.as_ref(), 200),
            (&mut a.region, "region", r.region.as_ref(), 200),
            (&mut a.postal_code, "postal_code", r.postal_code.as_ref(), 40),
            (&mut a.country, "country", r.country.as_ref(), 200),
            (&mut a.label, "label", r.label.as_ref(), 100),
        ] {
            set_text(slot, field, value, max)?;
        }
        if let Some(cc) = &r.country_code {
            a.country_code = if cc.trim().is_empty() {
                None
            } else {
                Some(check_region(cc).map_err(|_| {
                    Error::validation(format!("country_code {} is not an ISO 3166-1 alpha-2 code such as NO or US", quote(cc)))
                })?)
            };
        }
        if let Some(lat) = r.latitude {
            if !(-90.0..=90.0).contains(&lat) {
                return Err(Error::validation("latitude must be between -90 and 90"));
            }
            a.latitude = Some(lat);
        }
        if let Some(lon) = r.longitude {
            if !(-180.0..=180.0).contains(&lon) {
                return Err(Error::validation("longitude must be between -180 and 180"));
            }
            a.longitude = Some(lon);
        }
        if let Some(p) = r.is_primary {
            a.is_primary = p;
        }
        if adding {
            a.id = uuid::Uuid::now_v7().to_string();
            a.metadata = new_metadata(r.metadata.as_ref())?;
            a.created_at = Some(now);
            a.updated_at = Some(now);
        } else {
            a.metadata = merge_metadata(&a.metadata, r.metadata.as_ref())?;
            if a != *self {
                a.updated_at = Some(now);
            }
        }
        Ok(a)
    }

    /// The wire address.
    pub fn to_pb(&self, contact_id: &str) -> pb::Address {
        pb::Address {
            id: self.id.clone(),
            contact_id: contact_id.to_owned(),
            street: self.street.clone(),
            extended: self.extended.clone(),
            po_box: self.po_box.clone(),
            city: self.city.clone(),
            region: self.region.clone(),
            postal_code: self.postal_code.clone(),
            country: self.country.clone(),
            country_code: self.country_code.clone(),
            latitude: self.latitude,
            longitude: self.longitude,
            label: self.label.clone(),
            is_primary: self.is_primary,
            metadata: Some(to_struct(&self.metadata)),
            created_at: self.created_at.map(timestamp),
            updated_at: self.updated_at.map(timestamp),
        }
    }
}

/// At most one primary address, at most [`MAX_CHILDREN`].
pub fn check_addresses(addresses: &[AddressDoc]) -> Result<()> {
    if addresses.len() > MAX_CHILDREN {
        return Err(Error::validation(format!("a contact has at most {MAX_CHILDREN} addresses")));
    }
    if addresses.iter().filter(|a| a.is_primary).count() > 1 {
        return Err(Error::validation("the contact already has a primary address; unset it first"));
    }
    Ok(())
}

/// A stored significant date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DateDoc {
    /// Date id.
    pub id: String,
    /// birthday, anniversary, …
    pub date_type: String,
    /// Day.
    pub date_day: i32,
    /// Month.
    pub date_month: i32,
    /// Year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_year: Option<i32>,
    /// Label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_label: Option<String>,
    /// Free JSON.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Added at.
    pub created_at: DateTime<Utc>,
    /// Changed at.
    pub updated_at: DateTime<Utc>,
}

/// Days in `month` of `year` (a leap year when the year is unknown, so 29 February is fine).
pub fn days_in_month(month: u32, year: Option<i32>) -> Option<u32> {
    let y = year.unwrap_or(2000);
    let first = NaiveDate::from_ymd_opt(y, month, 1)?;
    let next = if month == 12 { NaiveDate::from_ymd_opt(y + 1, 1, 1)? } else { NaiveDate::from_ymd_opt(y, month + 1, 1)? };
    Some((next - first).num_days() as u32)
}

const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/// Checks a partial date.
pub fn check_partial_date(day: i32, month: i32, year: Option<i32>) -> Result<()> {
    if !(1..=12).contains(&month) {
        return Err(Error::validation(format!("date_month must be 1 to 12, got {month}")));
    }
    if let Some(y) = year
        && !(1..=9999).contains(&y)
    {
        return Err(Error::validation(format!("date_year must be 1 to 9999, got {y}")));
    }
    let max = days_in_month(month as u32, year).unwrap_or(31) as i32;
    if !(1..=max).contains(&day) {
        let of = match year {
            Some(y) => format!("{} {y}", MONTHS[month as usize - 1]),
            None => MONTHS[month as usize - 1].to_owned(),
        };
        return Err(Error::validation(format!("{of} has {max} days; date_day {day} is not a date")));
    }
    Ok(())
}

fn check_date_type(t: &str) -> Result<String> {
    let t = t.trim().to_lowercase();
    if t.is_empty() || t.len() > 32 || !t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(Error::validation("date_type must be birthday, anniversary, custom or another word of letters, digits and _"));
    }
    Ok(t)
}

impl DateDoc {
    /// Validates an add request.
    pub fn new(r: &pb::DateInput, now: DateTime<Utc>) -> Result<DateDoc> {
        let (Some(t), Some(day), Some(month)) = (&r.date_type, r.date_day, r.date_month) else {
            return Err(Error::validation("date_type, date_day and date_month are required"));
        };
        let year = r.date_year.filter(|y| *y != 0);
        check_partial_date(day, month, year)?;
        Ok(DateDoc {
            id: uuid::Uuid::now_v7().to_string(),
            date_type: check_date_type(t)?,
            date_day: day,
            date_month: month,
            date_year: year,
            date_label: r.date_label.as_deref().map(|l| text("date_label", l, 200)).transpose()?.flatten(),
            metadata: new_metadata(r.metadata.as_ref())?,
            created_at: now,
            updated_at: now,
        })
    }

    /// Applies a change request.
    pub fn apply(&self, r: &pb::DateInput, now: DateTime<Utc>) -> Result<DateDoc> {
        let mut d = self.clone();
        if let Some(t) = &r.date_type {
            d.date_type = check_date_type(t)?;
        }
        if let Some(x) = r.date_day {
            d.date_day = x;
        }
        if let Some(x) = r.date_month {
            d.date_month = x;
        }
        if let Some(y) = r.date_year {
            d.date_year = (y != 0).then_some(y);
        }
        check_partial_date(d.date_day, d.date_month, d.date_year)?;
        set_text(&mut d.date_label, "date_label", r.date_label.as_ref(), 200)?;
        d.metadata = merge_metadata(&d.metadata, r.metadata.as_ref())?;
        if d != *self {
            d.updated_at = now;
        }
        Ok(d)
    }

    /// The wire date.
    pub fn to_pb(&self, contact_id: &str) -> pb::ContactDate {
        pb::ContactDate {
            id: self.id.clone(),
            contact_id: contact_id.to_owned(),
            date_type: self.date_type.clone(),
            date_day: self.date_day,
            date_month: self.date_month,
            date_year: self.date_year,
            date_label: self.date_label.clone(),
            metadata: Some(to_struct(&self.metadata)),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
        }
    }

    /// The next day on or after `today` this date falls on (29 February on 28 February in
    /// common years).
    pub fn next_occurrence(&self, today: NaiveDate) -> Option<NaiveDate> {
        let on = |y: i32| {
            NaiveDate::from_ymd_opt(y, self.date_month as u32, self.date_day as u32)
                .or_else(|| NaiveDate::from_ymd_opt(y, self.date_month as u32, self.date_day as u32 - 1))
        };
        let this = on(today.year())?;
        if this >= today { Some(this) } else { on(today.year() + 1) }
    }
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(field: &str, v: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
        .map_err(|_| Error::validation(format!("{field} must be a date YYYY-MM-DD, got {}", quote(v))))
}

/// A stored affiliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AffiliationDoc {
    /// Affiliation id.
    pub id: String,
    /// The organization contact.
    pub organization_id: String,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// First day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// Last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// Holds now.
    #[serde(default)]
    pub is_current: bool,
    /// Free JSON.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Added at.
    pub created_at: Option<DateTime<Utc>>,
    /// Changed at.
    pub updated_at: Option<DateTime<Utc>>,
}

impl AffiliationDoc {
    /// Applies an add (`self` empty) or change request; the organization is checked by the caller.
    pub fn apply(&self, r: &pb::AffiliationInput, now: DateTime<Utc>) -> Result<AffiliationDoc> {
        let mut a = self.clone();
        let adding = a.id.is_empty();
        if let Some(o) = &r.organization_id {
            a.organization_id = worktruck_kit::pbjson::uuid(o, "organization_id")?.to_string();
        }
        if a.organization_id.is_empty() {
            return Err(Error::validation("organization_id is required"));
        }
        for (slot, field, value, max) in [
            (&mut a.title, "title", r.title.as_ref(), 200),
            (&mut a.role, "role", r.role.as_ref(), 200),
            (&mut a.department, "department", r.department.as_ref(), 200),
            (&mut a.description, "description", r.description.as_ref(), 2000),
        ] {
            set_text(slot, field, value, max)?;
        }
        for (slot, field, value) in [(&mut a.start_date, "start_date", &r.start_date), (&mut a.end_date, "end_date", &r.end_date)] {
            if let Some(v) = value {
                *slot = if v.trim().is_empty() { None } else { Some(parse_day(field, v)?.to_string()) };
            }
        }
        if let (Some(s), Some(e)) = (&a.start_date, &a.end_date)
            && e < s
        {
            return Err(Error::validation("end_date must not be before start_date"));
        }
        let ended = a.end_date.as_deref().is_some_and(|e| e < now.date_naive().to_string().as_str());
        match r.is_current {
            Some(c) => a.is_current = c,
            None if adding || r.end_date.is_some() => a.is_current = !ended,
            None => {}
        }
        if adding {
            a.id = uuid::Uuid::now_v7().to_string();
            a.metadata = new_metadata(r.metadata.as_ref())?;
            a.created_at = Some(now);
            a.updated_at = Some(now);
        } else {
            a.metadata = merge_metadata(&a.metadata, r.metadata.as_ref())?;
            if a != *self {
                a.updated_at = Some(now);
            }
        }
        Ok(a)
    }

    /// The wire affiliation.
    pub fn to_pb(&self, contact_id: &str, organization_name: &str) -> pb::Affiliation {
        pb::Affiliation {
            id: self.id.clone(),
            contact_id: contact_id.to_owned(),
            organization_id: self.organization_id.clone(),
            organization_name: organization_name.to_owned(),
            title: self.title.clone(),
            role: self.role.clone(),
            department: self.department.clone(),
            description: self.description.clone(),
            start_date: self.start_date.clone(),
            end_date: self.end_date.clone(),
            is_current: self.is_current,
            metadata: Some(to_struct(&self.metadata)),
            created_at: self.created_at.map(timestamp),
            updated_at: self.updated_at.map(timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_phones_canonicalise_from_real_world_formats() {
        assert_eq!(canonical("email", "  Ada.Lovelace@Example.ORG ", None).unwrap(), "ada.lovelace@example.org");
        assert!(canonical("email", "ada at example", None).is_err());
        assert!(canonical("email", "a b@example.org", None).is_err());
        for (raw, region, e164) in [
            ("+1 (415) 555-0100", None, "+14155550100"),
            ("(415) 555-0100", Some("US"), "+14155550100"),
            ("020 7946 0958", Some("GB"), "+442079460958"),
            ("+44 20 7946 0958", Some("US"), "+442079460958"),
            ("0044 20 7946 0958", None, "+442079460958"),
            ("22 12 34 56", Some("NO"), "+4722123456"),
            ("030 123456", Some("DE"), "+4930123456"),
            ("03-1234-5678", Some("JP"), "+81312345678"),
        ] {
            assert_eq!(canonical("phone", raw, region).unwrap(), e164, "{raw} in {region:?}");
        }
        let e = canonical("phone", "555-0100", None).unwrap_err();
        assert!(e.message.contains("no country code"), "{}", e.message);
        assert!(canonical("phone", "not a number", Some("US")).is_err());
        assert!(canonical("phone", "+1 12", None).is_err());
        assert_eq!(canonical("twitter", "@AdaL", None).unwrap(), "adal");
        assert_eq!(canonical("twitter", "https://x.com/AdaL/", None).unwrap(), "adal");
    }

    #[test]
    fn partial_dates_follow_the_calendar() {
        assert!(check_partial_date(29, 2, None).is_ok());
        assert!(check_partial_date(29, 2, Some(2024)).is_ok());
        assert!(check_partial_date(29, 2, Some(2023)).is_err());
        let e = check_partial_date(31, 4, None).unwrap_err();
        assert!(e.message.contains("April has 30 days"), "{}", e.message);
        assert!(check_partial_date(1, 13, None).is_err());
        let d = DateDoc {
            id: String::new(),
            date_type: "birthday".into(),
            date_day: 2,
            date_month: 1,
            date_year: None,
            date_label: None,
            metadata: empty_object(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let dec30 = NaiveDate::from_ymd_opt(2026, 12, 30).unwrap();
        assert_eq!(d.next_occurrence(dec30), NaiveDate::from_ymd_opt(2027, 1, 2));
        let leap = DateDoc { date_day: 29, date_month: 2, ..d };
        assert_eq!(leap.next_occurrence(dec30), NaiveDate::from_ymd_opt(2027, 2, 28));
    }
}
