//! Pipeline analytics in one pass over the stage changes (read in one query, by deal then in
//! the order they happened) and one over the deals as they stood at the window's end. Amounts
//! are exact decimals and are summed per currency only: figures in two currencies never meet.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;
use worktruck_kit::pbjson::timestamp;
use worktruck_proto::crm::v1 as pb;

use crate::domain::{Kind, decimal_string};
use crate::queries::Step;

/// A stage as the analytics see it.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Position.
    pub position: i32,
    /// Kind.
    pub kind: Kind,
    /// Probability.
    pub probability: i32,
    /// Rotting threshold.
    pub rotting_days: i32,
}

/// A deal as it stood at the window's end.
#[derive(Debug, Clone)]
pub struct DealInfo {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Stage.
    pub stage_id: Uuid,
    /// Status.
    pub status: Kind,
    /// Amount.
    pub amount: Option<Decimal>,
    /// Currency.
    pub currency: Option<String>,
    /// Confidence override.
    pub confidence: Option<i32>,
    /// `YYYY-MM-DD`.
    pub expected_close_date: Option<String>,
    /// When it entered its stage (from the deal itself, when no change says).
    pub stage_entered_at: DateTime<Utc>,
}

#[derive(Default)]
struct Totals(BTreeMap<String, (i32, Decimal, Decimal)>);

impl Totals {
    fn add(&mut self, currency: Option<&str>, amount: Option<Decimal>, probability: i32) {
        let e = self.0.entry(currency.unwrap_or_default().to_owned()).or_default();
        e.0 += 1;
        if let Some(a) = amount {
            e.1 += a;
            e.2 += a * Decimal::from(probability) / Decimal::from(100);
        }
    }

    fn out(self) -> Vec<pb::CurrencyTotal> {
        self.0
            .into_iter()
            .map(|(currency, (count, amount, weighted))| pb::CurrencyTotal {
                currency,
                count,
                amount: decimal_string(amount),
                weighted_amount: decimal_string(weighted),
            })
            .collect()
    }
}

fn days(d: chrono::Duration) -> f64 {
    d.num_microseconds().map(|m| m as f64 / 86_400_000_000.0).unwrap_or(f64::MAX)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[derive(Default)]
struct StageAcc {
    entered: i32,
    converted: i32,
    stays: Vec<f64>,
    count: i32,
    totals: Totals,
}

/// Computes the analytics of a pipeline over `[from, to)`.
///
/// * `stages`: the pipeline's stages as known then; `deals`: its live deals at `to`;
/// * `changes`: its stage changes that happened before `to`, by deal then in order.
///
/// Only the changes of the deals in `deals` count (a deleted deal leaves the figures).
#[allow(clippy::too_many_arguments)]
pub fn compute(
    pipeline: Uuid,
    stages: &[StageInfo],
    deals: &[DealInfo],
    changes: &[Step],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> pb::PipelineAnalytics {
    let by_id: HashMap<Uuid, &StageInfo> = stages.iter().map(|s| (s.id, s)).collect();
    let live: HashMap<Uuid, &DealInfo> = deals.iter().map(|d| (d.id, d)).collect();
    let mut acc: HashMap<Uuid, StageAcc> = stages.iter().map(|s| (s.id, StageAcc::default())).collect();
    let in_window = |t: DateTime<Utc>| t >= from && t < to;
    let (mut won, mut lost) = (0, 0);
    let mut won_totals = Totals::default();
    let mut to_close = Vec::new();
    let mut entered_current: HashMap<Uuid, DateTime<Utc>> = HashMap::new();

    // One pass: each deal's changes are consecutive and in order.
    let mut i = 0;
    while i < changes.len() {
        let deal = changes[i].deal_id;
        let mut j = i;
        while j < changes.len() && changes[j].deal_id == deal {
            j += 1;
        }
        let seq = &changes[i..j];
        i = j;
        if !live.contains_key(&deal) {
            continue;
        }
        let created = seq[0].changed_at;
        for (k, ch) in seq.iter().enumerate() {
            let stage = by_id.get(&ch.to_stage_id);
            // The stay in this stage, when it ended in the window.
            if let Some(next) = seq.get(k + 1)
                && in_window(next.changed_at)
                && let Some(a) = acc.get_mut(&ch.to_stage_id)
            {
                a.stays.push(days(next.changed_at - ch.changed_at));
            }
            if in_window(ch.changed_at) {
                if let (Some(s), Some(a)) = (stage, acc.get_mut(&ch.to_stage_id)) {
                    a.entered += 1;
                    let went_on = seq[k + 1..]
                        .iter()
                        .any(|later| later.to_kind != "lost" && by_id.get(&later.to_stage_id).is_some_and(|l| l.position > s.position));
                    if went_on {
                        a.converted += 1;
                    }
                }
                match Kind::parse(&ch.to_kind) {
                    Some(Kind::Won) => {
                        won += 1;
                        let amount = ch.amount.as_deref().and_then(|a| a.parse::<Decimal>().ok());
                        won_totals.add(ch.currency.as_deref(), amount, 100);
                        to_close.push(days(ch.changed_at - created));
                    }
                    Some(Kind::Lost) => {
                        lost += 1;
                        to_close.push(days(ch.changed_at - created));
                    }
                    _ => {}
                }
            }
        }
        if let Some(last) = seq.last() {
            entered_current.insert(deal, last.changed_at);
        }
    }

    // The snapshot at `to`: per stage, open totals, forecast and rotting.
    let mut open_totals = Totals::default();
    let mut forecast: BTreeMap<(String, String), (i32, Decimal, Decimal)> = BTreeMap::new();
    let mut rotting = Vec::new();
    for d in deals {
        let Some(stage) = by_id.get(&d.stage_id) else {
            continue;
        };
        let probability = d.confidence.unwrap_or(stage.probability);
        if let Some(a) = acc.get_mut(&d.stage_id) {
            a.count += 1;
            a.totals.add(d.currency.as_deref(), d.amount, probability);
        }
        if d.status != Kind::Open {
            continue;
        }
        open_totals.add(d.currency.as_deref(), d.amount, probability);
        if let Some(date) = &d.expected_close_date {
            let e = forecast.entry((date[..7].to_owned(), d.currency.clone().unwrap_or_default())).or_default();
            e.0 += 1;
            if let Some(a) = d.amount {
                e.1 += a;
                e.2 += a * Decimal::from(probability) / Decimal::from(100);
            }
        }
        let entered = entered_current.get(&d.id).copied().unwrap_or(d.stage_entered_at);
        let in_stage = days(to - entered);
        if stage.rotting_days > 0 && in_stage > f64::from(stage.rotting_days) {
            rotting.push(pb::RottingDeal {
                deal_id: d.id.to_string(),
                name: d.name.clone(),
                stage_id: d.stage_id.to_string(),
                entered_at: Some(timestamp(entered)),
                days_in_stage: in_stage,
                rotting_days: stage.rotting_days,
            });
        }
    }
    rotting.sort_by(|a, b| b.days_in_stage.total_cmp(&a.days_in_stage).then(a.deal_id.cmp(&b.deal_id)));

    let mut ordered: Vec<&StageInfo> = stages.iter().collect();
    ordered.sort_by_key(|s| (s.position, s.id));
    let stages_out = ordered
        .into_iter()
        .map(|s| {
            let mut a = acc.remove(&s.id).unwrap_or_default();
            pb::StageAnalytics {
                stage_id: s.id.to_string(),
                name: s.name.clone(),
                position: s.position,
                kind: s.kind.to_pb() as i32,
                probability: s.probability,
                count: a.count,
                totals: std::mem::take(&mut a.totals).out(),
                entered: a.entered,
                converted: a.converted,
                conversion_rate: (a.entered > 0).then(|| f64::from(a.converted) / f64::from(a.entered)),
                avg_days_in_stage: mean(&a.stays),
                median_days_in_stage: median(&mut a.stays),
                stays: a.stays.len() as i32,
            }
        })
        .collect();
    pb::PipelineAnalytics {
        pipeline_id: pipeline.to_string(),
        from: Some(timestamp(from)),
        to: Some(timestamp(to)),
        as_of: Some(timestamp(as_of)),
        stages: stages_out,
        open_totals: open_totals.out(),
        won,
        lost,
        win_rate: (won + lost > 0).then(|| f64::from(won) / f64::from(won + lost)),
        won_totals: won_totals.out(),
        avg_days_to_close: mean(&to_close),
        forecast: forecast
            .into_iter()
            .map(|((month, currency), (count, amount, weighted))| pb::ForecastMonth {
                month,
                currency,
                count,
                amount: decimal_string(amount),
                weighted_amount: decimal_string(weighted),
            })
            .collect(),
        rotting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
