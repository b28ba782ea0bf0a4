//! Pipelines, stages and deals as domain code sees them: validated documents built only through
//! parsing, exact decimal amounts, ISO 4217 currencies, and their mapping to the wire types.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worktruck_kit::pbjson::{timestamp, to_struct};
use worktruck_kit::store::Record;
use worktruck_kit::{Error, Result};
use worktruck_proto::crm::v1 as pb;
pub use worktruck_kit::check::{check_id, check_metadata, merge};

/// Digits an amount may have before its decimal point.
const MAX_INTEGER_DIGITS: usize = 15;
/// Digits an amount may have after its decimal point.
const MAX_FRACTION_DIGITS: usize = 6;

/// A stage's kind as stored: `open`, `won` or `lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Deals still being worked.
    Open,
    /// Won deals.
    Won,
    /// Lost deals.
    Lost,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Won => "won",
            Kind::Lost => "lost",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "open" => Some(Kind::Open),
            "won" => Some(Kind::Won),
            "lost" => Some(Kind::Lost),
            _ => None,
        }
    }

    /// From the wire enum; `None` for unspecified.
    pub fn from_pb(v: i32) -> Result<Option<Kind>> {
        match pb::StageKind::try_from(v) {
            Ok(pb::StageKind::Unspecified) => Ok(None),
            Ok(pb::StageKind::Open) => Ok(Some(Kind::Open)),
            Ok(pb::StageKind::Won) => Ok(Some(Kind::Won)),
            Ok(pb::StageKind::Lost) => Ok(Some(Kind::Lost)),
            Err(_) => Err(Error::validation("kind must be open, won or lost")),
        }
    }

    /// The wire stage kind.
    pub fn to_pb(self) -> pb::StageKind {
        match self {
            Kind::Open => pb::StageKind::Open,
            Kind::Won => pb::StageKind::Won,
            Kind::Lost => pb::StageKind::Lost,
        }
    }

    /// The wire deal status of a deal in a stage of this kind.
    pub fn status(self) -> pb::DealStatus {
        match self {
            Kind::Open => pb::DealStatus::Open,
            Kind::Won => pb::DealStatus::Won,
            Kind::Lost => pb::DealStatus::Lost,
        }
    }

    /// The kind named by a wire deal status; `None` for unspecified.
    pub fn from_status(v: i32) -> Result<Option<Kind>> {
        match pb::DealStatus::try_from(v) {
            Ok(pb::DealStatus::Unspecified) => Ok(None),
            Ok(pb::DealStatus::Open) => Ok(Some(Kind::Open)),
            Ok(pb::DealStatus::Won) => Ok(Some(Kind::Won)),
            Ok(pb::DealStatus::Lost) => Ok(Some(Kind::Lost)),
            Err(_) => Err(Error::validation("status must be open, won or lost")),
        }
    }
}

/// The stored fields of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDoc {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Default currency of its deals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The tenant's default pipeline.
    pub is_default: bool,
}

/// The stored fields of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDoc {
    /// Its pipeline.
    pub pipeline_id: String,
    /// Name.
    pub name: String,
    /// Place from 0.
    pub position: i32,
    /// 0 to 100.
    pub probability: i32,
    /// Open, won or lost.
    pub kind: Kind,
    /// Days before a deal in it rots (0: never).
    pub rotting_days: i32,
}

/// The stored fields of a deal (the bitemporal document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealDoc {
    /// Name.
    pub name: String,
    /// Its pipeline.
    pub pipeline_id: String,
    /// Its stage.
    pub stage_id: String,
    /// The stage's kind, kept for filters (`open`, `won`, `lost`).
    pub status: Kind,
    /// Exact decimal, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// ISO 4217 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<i32>,
    /// `one_time`, `monthly`, `quarterly` or `annual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_period: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_close_date: Option<String>,
    /// When it entered a won or lost stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Why it was won.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub won_reason: Option<String>,
    /// Why it was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_reason: Option<String>,
    /// What happens next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// Where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Main contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// Organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Free JSON.
    pub metadata: Value,
    /// When it entered its current stage (valid time).
    pub stage_entered_at: DateTime<Utc>,
}

macro_rules! doc_json {
    ($t:ty) => {
        impl $t {
            /// The stored JSON.
            pub fn to_value(&self) -> Value {
                serde_json::to_value(self).expect("a document serialises")
            }

            /// From the stored JSON.
            pub fn from_value(v: &Value) -> Result<Self> {
                serde_json::from_value(v.clone()).map_err(Error::internal)
            }
        }
    };
}
doc_json!(PipelineDoc);
doc_json!(StageDoc);
doc_json!(DealDoc);

impl DealDoc {
    /// The text full-text search covers.
    pub fn search_text(&self) -> String {
        [Some(&self.name), self.description.as_ref(), self.next_step.as_ref(), self.source.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The amount as a decimal.
    pub fn amount_decimal(&self) -> Option<Decimal> {
        self.amount.as_deref().and_then(|a| Decimal::from_str(a).ok())
    }
}

/// Validates a single-line name of 1 to `max` characters.
pub fn check_name(field: &str, s: &str, max: usize) -> Result<String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Error::validation(format!("{field} must not be empty")));
    }
    if s.chars().count() > max {
        return Err(Error::validation(format!("{field} must be at most {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::validation(format!("{field} must not contain control characters")));
    }
    Ok(s.to_owned())
}

/// Validates optional free text of at most `max` characters; `None` for an empty string.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<Option<String>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > max {
        return Err(Error::validation(format!("{field} must be at most {max} characters")));
    }
    Ok(Some(s.to_owned()))
}

/// Validates an optional single-line value of at most `max` characters; `None` when empty.
pub fn check_line(field: &str, s: &str, max: usize) -> Result<Option<String>> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    check_name(field, s, max).map(Some)
}

/// An ISO 4217 code, upper-cased; `None` for an empty string. `XXX` (no currency) and `XTS`
/// (testing) are refused.
pub fn check_currency(field: &str, s: &str) -> Result<Option<String>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let code = s.to_ascii_uppercase();
    match iso_currency::Currency::from_code(&code) {
        Some(c) if code != "XXX" && code != "XTS" => Ok(Some(c.code().to_owned())),
        _ => Err(Error::validation(format!("{field}: {} is not an ISO 4217 currency code", worktruck_proto::text::quote(s)))),
    }
}

/// An amount: a non-negative exact decimal written with digits and at most one point, at most
/// 15 digits before it and 6 after; `None` for an empty string. Kept as the caller wrote it
/// (leading zeros dropped), never through a float.
pub fn check_amount(s: &str) -> Result<Option<Decimal>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::validation(format!(
            "amount must be a non-negative decimal such as \"1250.00\" (at most {MAX_INTEGER_DIGITS} digits before the point and {MAX_FRACTION_DIGITS} after), got {}",
            worktruck_proto::text::quote(s)
        ))
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(bad());
    }
    if int.trim_start_matches('0').len() > MAX_INTEGER_DIGITS || frac.is_some_and(|f| f.len() > MAX_FRACTION_DIGITS) {
        return Err(bad());
    }
    Decimal::from_str(s).map(Some).map_err(|_| bad())
}

/// A percentage 0 to 100.
pub fn check_percent(field: &str, v: i32) -> Result<i32> {
    if (0..=100).contains(&v) { Ok(v) } else { Err(Error::validation(format!("{field} must be between 0 and 100, got {v}"))) }
}

/// Rotting days: 0 to 3650.
pub fn check_rotting(v: i32) -> Result<i32> {
    if (0..=3650).contains(&v) { Ok(v) } else { Err(Error::validation(format!("rotting_days must be between 0 and 3650, got {v}"))) }
}

/// A calendar date `YYYY-MM-DD`; `None` for an empty string.
pub fn check_date(field: &str, s: &str) -> Result<Option<String>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .map(|d| Some(d.format("%Y-%m-%d").to_string()))
        .ok_or_else(|| Error::validation(format!("{field} must be a date YYYY-MM-DD, got {}", worktruck_proto::text::quote(s))))
}

/// The stored value period of a wire one; `None` for unspecified.
pub fn value_period(v: i32) -> Result<Option<String>> {
    Ok(match pb::ValuePeriod::try_from(v) {
        Ok(pb::ValuePeriod::Unspecified) => None,
        Ok(pb::ValuePeriod::OneTime) => Some("one_time".into()),
        Ok(pb::ValuePeriod::Monthly) => Some("monthly".into()),
        Ok(pb::ValuePeriod::Quarterly) => Some("quarterly".into()),
        Ok(pb::ValuePeriod::Annual) => Some("annual".into()),
        Err(_) => {
            return Err(Error::validation("value_period must be one_time, monthly, quarterly or annual"));
        }
    })
}

fn value_period_pb(s: Option<&str>) -> pb::ValuePeriod {
    match s {
        Some("one_time") => pb::ValuePeriod::OneTime,
        Some("monthly") => pb::ValuePeriod::Monthly,
        Some("quarterly") => pb::ValuePeriod::Quarterly,
        Some("annual") => pb::ValuePeriod::Annual,
        _ => pb::ValuePeriod::Unspecified,
    }
}

/// The wire pipeline (stages given by the caller).
pub fn pipeline_pb(tenant: &str, r: &Record, stages: Vec<pb::Stage>) -> Result<pb::Pipeline> {
    let d = PipelineDoc::from_value(&r.doc)?;
    Ok(pb::Pipeline {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        name: d.name,
        description: d.description,
        currency: d.currency,
        is_default: d.is_default,
        stages,
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    })
}

/// The wire stage.
pub fn stage_pb(tenant: &str, r: &Record) -> Result<pb::Stage> {
    let d = StageDoc::from_value(&r.doc)?;
    Ok(pb::Stage {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        pipeline_id: d.pipeline_id,
        name: d.name,
        position: d.position,
        probability: d.probability,
        kind: d.kind.to_pb() as i32,
        rotting_days: d.rotting_days,
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    })
}

/// The wire deal (names and contacts filled in by the caller where the read gives them).
pub fn deal_pb(tenant: &str, r: &Record) -> Result<pb::Deal> {
    let d = DealDoc::from_value(&r.doc)?;
    Ok(pb::Deal {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        name: d.name,
        pipeline_id: d.pipeline_id,
        stage_id: d.stage_id,
        pipeline_name: String::new(),
        stage_name: String::new(),
        status: d.status.status() as i32,
        amount: d.amount,
        currency: d.currency,
        confidence: d.confidence,
        value_period: value_period_pb(d.value_period.as_deref()) as i32,
        expected_close_date: d.expected_close_date,
        closed_at: d.closed_at.map(timestamp),
        won_reason: d.won_reason,
        lost_reason: d.lost_reason,
        next_step: d.next_step,
        source: d.source,
        description: d.description,
        contact_id: d.contact_id,
        organization_id: d.organization_id,
        metadata: Some(to_struct(&d.metadata)),
        stage_entered_at: Some(timestamp(d.stage_entered_at)),
        contacts: Vec::new(),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        deleted_at: r.deleted_at.map(timestamp),
        temporal: r.temporal.as_ref().map(worktruck_kit::pbjson::temporal),
    })
}

/// A decimal for the wire: exact, without trailing zeros.
pub fn decimal_string(d: Decimal) -> String {
    d.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_non_negative_decimals() {
        assert_eq!(check_amount("1250.50").unwrap().unwrap().to_string(), "1250.50");
        assert_eq!(check_amount("007").unwrap().unwrap().to_string(), "7");
        assert_eq!(check_amount(" ").unwrap(), None);
        for bad in ["-1", "1e5", "1,5", "abc", ".5", "5.", "1.1234567", "1234567890123456", "NaN", "+3"] {
            assert!(check_amount(bad).is_err(), "{bad}");
        }
        // 0.1 + 0.2 is exactly 0.3: no float anywhere.
        let sum = check_amount("0.1").unwrap().unwrap() + check_amount("0.2").unwrap().unwrap();
        assert_eq!(decimal_string(sum), "0.3");
    }

    #[test]
    fn currencies_come_from_the_iso_4217_table() {
        assert_eq!(check_currency("c", "eur").unwrap().as_deref(), Some("EUR"));
        assert_eq!(check_currency("c", "CLF").unwrap().as_deref(), Some("CLF"));
        for bad in ["EURO", "ABC", "XXX", "€"] {
            assert!(check_currency("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_and_percentages_are_checked() {
        assert_eq!(check_date("d", "2026-02-28").unwrap().as_deref(), Some("2026-02-28"));
        for bad in ["2026-02-30", "2026-2-3", "tomorrow"] {
            assert!(check_date("d", bad).is_err(), "{bad}");
        }
        assert!(check_percent("p", 101).is_err());
        assert!(check_percent("p", -1).is_err());
        assert_eq!(check_percent("p", 100).unwrap(), 100);
    }
}
