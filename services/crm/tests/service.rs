//! The CRM service over real gRPC (its table definition on a loopback port, calling a real
//! contacts service), on SQLite and PostgreSQL: pipelines and stages, deals and their bad input,
//! deal contacts checked across services, moves and the stage-change log, bitemporal reads,
//! analytics on a seeded back-dated history computed independently here, the forecast as known
//! then, and events.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use prost::Message as _;
use rust_decimal::Decimal;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_kit::bus::Bus;
use worktruck_kit::config::Config;
use worktruck_kit::pbjson::{datetime, timestamp, to_struct};
use worktruck_kit::testing::{TestData, TestService, backends};
use worktruck_proto::common::v1::{DiffRequest, Event, HistoryRequest, TimelineRequest};
use worktruck_proto::contacts::v1 as cpb;
use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;
use worktruck_proto::crm::v1 as pb;
use worktruck_proto::crm::v1::crm_service_client::CrmServiceClient;

struct Env {
    crm: CrmServiceClient<Channel>,
    contacts: ContactsServiceClient<Channel>,
    service: TestService,
    _contacts_service: TestService,
    tenant: Uuid,
}

async fn start_with(data: &TestData, bus: Bus, config: Config) -> Env {
    let contacts_service = TestService::start(&worktruck_contacts::DEFINITION, data, bus.clone()).await;
    let mut clients = BTreeMap::new();
    clients.insert("contacts", contacts_service.channel.clone());
    let service = TestService::start_with(&worktruck_crm::DEFINITION, data, bus, config, clients).await;
    Env {
        crm: CrmServiceClient::new(service.channel.clone()),
        contacts: ContactsServiceClient::new(contacts_service.channel.clone()),
        service,
        _contacts_service: contacts_service,
        tenant: Uuid::now_v7(),
    }
}

async fn start(data: &TestData, bus: Bus) -> Env {
    start_with(data, bus, Config::default()).await
}

fn kind(k: pb::StageKind) -> i32 {
    k as i32
}

impl Env {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        self.service.request(self.tenant, msg)
    }

    async fn contact(&mut self, tenant: Uuid, name: &str, k: cpb::ContactKind) -> String {
        let r = self.service.request(tenant, cpb::CreateContactRequest { kind: k as i32, display_name: name.into(), ..Default::default() });
        self.contacts.create_contact(r).await.unwrap().into_inner().id
    }

    async fn pipeline(&mut self, name: &str, currency: Option<&str>, stages: &[(&str, i32, pb::StageKind, i32)]) -> pb::Pipeline {
        let r = self.req(pb::CreatePipelineRequest {
            name: name.into(),
            currency: currency.map(Into::into),
            stages: stages
                .iter()
                .map(|(n, p, k, rot)| pb::StageInput { name: (*n).into(), probability: Some(*p), kind: kind(*k), rotting_days: Some(*rot) })
                .collect(),
            ..Default::default()
        });
        self.crm.create_pipeline(r).await.unwrap().into_inner()
    }

    async fn deal(&mut self, d: pb::CreateDealRequest) -> pb::Deal {
        let r = self.req(d);
        self.crm.create_deal(r).await.unwrap().into_inner()
    }

    async fn try_deal(&mut self, d: pb::CreateDealRequest) -> Result<pb::Deal, tonic::Status> {
        let r = self.req(d);
        self.crm.create_deal(r).await.map(|r| r.into_inner())
    }

    async fn mv(&mut self, id: &str, stage: &str, at: Option<DateTime<Utc>>) -> pb::Deal {
        let r =
            self.req(pb::MoveDealRequest { id: id.into(), stage_id: stage.into(), valid_from: at.map(timestamp), ..Default::default() });
        self.crm.move_deal(r).await.unwrap().into_inner()
    }

    async fn list(&mut self, q: pb::ListDealsRequest) -> Vec<pb::Deal> {
        let r = self.req(q);
        self.crm.list_deals(r).await.unwrap().into_inner().data
    }

    async fn analytics(&mut self, id: &str, from: DateTime<Utc>, to: DateTime<Utc>, as_of: Option<DateTime<Utc>>) -> pb::PipelineAnalytics {
        let r = self.req(pb::GetPipelineAnalyticsRequest {
            id: id.into(),
            from: Some(timestamp(from)),
            to: Some(timestamp(to)),
            as_of: as_of.map(timestamp),
        });
        self.crm.get_pipeline_analytics(r).await.unwrap().into_inner()
    }
}

fn invalid(e: &tonic::Status) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[tokio::test]
async fn pipelines_have_one_default_and_ordered_stages() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        // First use makes the default pipeline.
        let r = s.req(pb::ListPipelinesRequest {});
        let first = s.crm.list_pipelines(r).await.unwrap().into_inner().data;
        assert_eq!(first.len(), 1, "{backend:?}");
        assert!(first[0].is_default);
        let names: Vec<_> = first[0].stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Lead", "Qualified", "Proposal", "Negotiation", "Won", "Lost"]);
        let r = s.req(pb::ListPipelinesRequest {});
        assert_eq!(s.crm.list_pipelines(r).await.unwrap().into_inner().data.len(), 1, "made once");

        // A new default takes over; the default cannot simply be unset.
        let r = s.req(pb::CreatePipelineRequest {
            name: "Enterprise".into(),
            is_default: true,
            currency: Some("eur".into()),
            ..Default::default()
        });
        let ent = s.crm.create_pipeline(r).await.unwrap().into_inner();
        assert_eq!(ent.currency.as_deref(), Some("EUR"));
        let r = s.req(pb::ListPipelinesRequest {});
        let all = s.crm.list_pipelines(r).await.unwrap().into_inner().data;
        assert_eq!(all.iter().filter(|p| p.is_default).map(|p| p.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&ent.id));
        let r = s.req(pb::UpdatePipelineRequest { id: ent.id.clone(), is_default: Some(false), ..Default::default() });
        invalid(&s.crm.update_pipeline(r).await.unwrap_err());
        let r = s.req(pb::UpdatePipelineRequest { id: first[0].id.clone(), is_default: Some(true), ..Default::default() });
        assert!(s.crm.update_pipeline(r).await.unwrap().into_inner().is_default);
        let r = s.req(pb::GetPipelineRequest { id: ent.id.clone() });
        assert!(!s.crm.get_pipeline(r).await.unwrap().into_inner().is_default);

        // Stages: inserted at a position, probability checked, reordered as a full permutation.
        for (name, pos) in [("Discovery", None), ("Intro", Some(0)), ("Demo", Some(1))] {
            let r = s.req(pb::CreateStageRequest {
                pipeline_id: ent.id.clone(),
                name: name.into(),
                position: pos,
                probability: Some(30),
                ..Default::default()
            });
            s.crm.create_stage(r).await.unwrap();
        }
        let r = s.req(pb::ListStagesRequest { pipeline_id: ent.id.clone() });
        let st = s.crm.list_stages(r).await.unwrap().into_inner().data;
        assert_eq!(st.iter().map(|s| (s.name.as_str(), s.position)).collect::<Vec<_>>(), [("Intro", 0), ("Demo", 1), ("Discovery", 2)]);
        let r =
            s.req(pb::CreateStageRequest { pipeline_id: ent.id.clone(), name: "Bad".into(), probability: Some(101), ..Default::default() });
        invalid(&s.crm.create_stage(r).await.unwrap_err());
        let r = s.req(pb::UpdateStageRequest {
            pipeline_id: ent.id.clone(),
            id: st[0].id.clone(),
            probability: Some(-1),
            ..Default::default()
        });
        invalid(&s.crm.update_stage(r).await.unwrap_err());
        for ids in [
            vec![st[2].id.clone(), st[0].id.clone()],
            vec![st[2].id.clone(), st[0].id.clone(), st[0].id.clone()],
            vec![st[2].id.clone(), st[0].id.clone(), first[0].stages[0].id.clone()],
        ] {
            let r = s.req(pb::ReorderStagesRequest { pipeline_id: ent.id.clone(), stage_ids: ids });
            invalid(&s.crm.reorder_stages(r).await.unwrap_err());
        }
        let r = s.req(pb::ListStagesRequest { pipeline_id: ent.id.clone() });
        let unchanged = s.crm.list_stages(r).await.unwrap().into_inner().data;
        assert_eq!(
            unchanged.iter().map(|s| s.version).collect::<Vec<_>>(),
            st.iter().map(|s| s.version).collect::<Vec<_>>(),
            "a refused reorder writes nothing"
        );
        let r = s.req(pb::ReorderStagesRequest {
            pipeline_id: ent.id.clone(),
            stage_ids: vec![st[2].id.clone(), st[0].id.clone(), st[1].id.clone()],
        });
        let re = s.crm.reorder_stages(r).await.unwrap().into_inner().data;
        assert_eq!(re.iter().map(|s| (s.name.as_str(), s.position)).collect::<Vec<_>>(), [("Discovery", 0), ("Intro", 1), ("Demo", 2)]);
        let r =
            s.req(pb::UpdateStageRequest { pipeline_id: ent.id.clone(), id: re[0].id.clone(), position: Some(9), ..Default::default() });
        assert_eq!(s.crm.update_stage(r).await.unwrap().into_inner().position, 2, "a position past the end goes last");

        // A stage holding deals is deleted only with a stage of the same pipeline to move them to.
        let d = s
            .deal(pb::CreateDealRequest {
                name: "Big one".into(),
                pipeline_id: Some(ent.id.clone()),
                stage_id: Some(re[1].id.clone()),
                ..Default::default()
            })
            .await;
        let r = s.req(pb::DeleteStageRequest { pipeline_id: ent.id.clone(), id: re[1].id.clone(), move_to_stage_id: None });
        assert_eq!(s.crm.delete_stage(r).await.unwrap_err().code(), Code::Aborted);
        let r = s.req(pb::DeleteStageRequest {
            pipeline_id: ent.id.clone(),
            id: re[1].id.clone(),
            move_to_stage_id: Some(first[0].stages[0].id.clone()),
        });
        invalid(&s.crm.delete_stage(r).await.unwrap_err());
        let r =
            s.req(pb::DeleteStageRequest { pipeline_id: ent.id.clone(), id: re[1].id.clone(), move_to_stage_id: Some(re[2].id.clone()) });
        assert_eq!(s.crm.delete_stage(r).await.unwrap().into_inner().moved_deals, 1);
        let r = s.req(pb::GetDealRequest { id: d.id.clone(), ..Default::default() });
        assert_eq!(s.crm.get_deal(r).await.unwrap().into_inner().stage_id, re[2].id);
        let r = s.req(pb::GetDealStageHistoryRequest { id: d.id.clone() });
        let h = s.crm.get_deal_stage_history(r).await.unwrap().into_inner().data;
        assert_eq!(h.len(), 2);
        assert_eq!((h[1].from_stage_id.as_deref(), h[1].to_stage_id.as_str()), (Some(re[1].id.as_str()), re[2].id.as_str()));
        let r = s.req(pb::ListStagesRequest { pipeline_id: ent.id.clone() });
        let left = s.crm.list_stages(r).await.unwrap().into_inner().data;
        assert_eq!(left.iter().map(|s| s.position).collect::<Vec<_>>(), [0, 1], "positions close up");
        let r = s.req(pb::DeletePipelineRequest { id: ent.id.clone() });
        assert_eq!(s.crm.delete_pipeline(r).await.unwrap_err().code(), Code::Aborted, "a pipeline with deals stays");

        // Another tenant sees none of it.
        let r = s.service.request(Uuid::now_v7(), pb::GetPipelineRequest { id: ent.id.clone() });
        assert_eq!(s.crm.get_pipeline(r).await.unwrap_err().code(), Code::NotFound);
        s.service.stop();
    }
}

#[tokio::test]
async fn concurrent_first_uses_make_one_default_pipeline() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let s = start(&data, Bus::memory()).await;
        // Eight callers of a fresh tenant at once: half list the pipelines, half create a deal
        // in "the default pipeline"; one default is made and every deal lands in it.
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..8 {
            let mut crm = s.crm.clone();
            let (list, deal) =
                (s.req(pb::ListPipelinesRequest {}), s.req(pb::CreateDealRequest { name: format!("d{i}"), ..Default::default() }));
            calls.spawn(async move {
                if i % 2 == 0 {
                    crm.list_pipelines(list).await.map(|_| None)
                } else {
                    crm.create_deal(deal).await.map(|d| Some(d.into_inner().pipeline_id))
                }
            });
        }
        let mut pipelines = std::collections::HashSet::new();
        while let Some(r) = calls.join_next().await {
            if let Some(p) = r.unwrap().unwrap() {
                pipelines.insert(p);
            }
        }
        let r = s.req(pb::ListPipelinesRequest {});
        let all = s.crm.clone().list_pipelines(r).await.unwrap().into_inner().data;
        assert_eq!(all.len(), 1, "{backend:?}: {all:?}");
        assert!(all[0].is_default);
        assert_eq!(pipelines.into_iter().collect::<Vec<_>>(), [all[0].id.clone()]);
        s.service.stop();
    }
}

#[tokio::test]
async fn deals_take_exact_amounts_checked_contacts_and_refuse_bad_input_whole() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let p = s.pipeline("Sales", Some("EUR"), &[("New", 20, pb::StageKind::Open, 0), ("Won", 100, pb::StageKind::Won, 0)]).await;
        let other = s.pipeline("Other", None, &[("Elsewhere", 10, pb::StageKind::Open, 0)]).await;
        let tenant = s.tenant;
        let ana = s.contact(tenant, "Ana", cpb::ContactKind::Person).await;
        let acme = s.contact(tenant, "Acme", cpb::ContactKind::Organization).await;
        let stranger = s.contact(Uuid::now_v7(), "Stranger", cpb::ContactKind::Person).await;

        let d = s
            .deal(pb::CreateDealRequest {
                name: "Acme renewal".into(),
                pipeline_id: Some(p.id.clone()),
                amount: Some("12500.10".into()),
                confidence: Some(40),
                value_period: pb::ValuePeriod::Annual as i32,
                expected_close_date: Some("2026-12-31".into()),
                next_step: Some("Send the quote".into()),
                source: Some("referral".into()),
                description: Some("Three-year deal.\nSigned soon.".into()),
                contact_id: Some(ana.clone()),
                organization_id: Some(acme.clone()),
                metadata: Some(to_struct(&serde_json::json!({"region": "north"}))),
                ..Default::default()
            })
            .await;
        assert_eq!((d.amount.as_deref(), d.currency.as_deref()), (Some("12500.10"), Some("EUR")), "{backend:?}: the pipeline's currency");
        assert_eq!(d.stage_id, p.stages[0].id, "the first open stage");
        assert_eq!(d.status, pb::DealStatus::Open as i32);
        assert_eq!((d.pipeline_name.as_str(), d.stage_name.as_str()), ("Sales", "New"));

        // Bad input: each a 400 with a reason, and nothing written.
        let base = || pb::CreateDealRequest { name: "x".into(), pipeline_id: Some(p.id.clone()), ..Default::default() };
        let cases: Vec<(pb::CreateDealRequest, &str)> = vec![
            (pb::CreateDealRequest { amount: Some("-5".into()), ..base() }, "amount"),
            (pb::CreateDealRequest { amount: Some("12,5".into()), ..base() }, "amount"),
            (pb::CreateDealRequest { amount: Some("1e3".into()), ..base() }, "amount"),
            (pb::CreateDealRequest { amount: Some("10".into()), currency: Some("ABC".into()), ..base() }, "ISO 4217"),
            (pb::CreateDealRequest { confidence: Some(101), ..base() }, "confidence"),
            (pb::CreateDealRequest { stage_id: Some(other.stages[0].id.clone()), ..base() }, "another pipeline"),
            (pb::CreateDealRequest { contact_id: Some(stranger.clone()), ..base() }, &stranger),
            (pb::CreateDealRequest { contact_id: Some(Uuid::now_v7().to_string()), ..base() }, "no contact"),
            (pb::CreateDealRequest { organization_id: Some(ana.clone()), ..base() }, "not an organization"),
            (pb::CreateDealRequest { expected_close_date: Some("2026-02-30".into()), ..base() }, "expected_close_date"),
            (pb::CreateDealRequest { name: " ".into(), ..base() }, "name"),
        ];
        for (req, says) in cases {
            let e = s.try_deal(req).await.unwrap_err();
            invalid(&e);
            assert!(e.message().contains(says), "{says}: {e:?}");
        }
        let r = s.req(pb::CreateDealRequest {
            name: "x".into(),
            amount: Some("5".into()),
            pipeline_id: Some(other.id.clone()),
            ..Default::default()
        });
        invalid(&s.crm.create_deal(r).await.unwrap_err());
        assert_eq!(s.list(pb::ListDealsRequest::default()).await.len(), 1, "no refused deal was written");

        // Deal contacts: checked with the contacts service, as the caller's tenant.
        let r = s.req(pb::CreateDealContactRequest { deal_id: d.id.clone(), contact_id: stranger.clone(), ..Default::default() });
        let e = s.crm.create_deal_contact(r).await.unwrap_err();
        invalid(&e);
        assert!(e.message().contains(&stranger), "{e:?}");
        let bob = s.contact(tenant, "Bob", cpb::ContactKind::Person).await;
        for (who, primary) in [(&ana, true), (&bob, false), (&bob, true)] {
            let r = s.req(pb::CreateDealContactRequest {
                deal_id: d.id.clone(),
                contact_id: who.clone(),
                role: Some("champion".into()),
                is_primary: Some(primary),
                introduced_by: Some(ana.clone()).filter(|_| who == &bob),
                ..Default::default()
            });
            s.crm.create_deal_contact(r).await.unwrap();
        }
        let r = s.req(pb::GetDealRequest { id: d.id.clone(), ..Default::default() });
        let got = s.crm.get_deal(r).await.unwrap().into_inner();
        let cs: Vec<_> = got.contacts.iter().map(|c| (c.contact_id.as_str(), c.is_primary)).collect();
        assert_eq!(cs, [(bob.as_str(), true), (ana.as_str(), false)], "one primary, first");
        assert_eq!(got.contacts[0].introduced_by.as_deref(), Some(ana.as_str()));
        let r = s.req(pb::RemoveDealContactRequest { deal_id: d.id.clone(), contact_id: ana.clone() });
        s.crm.remove_deal_contact(r).await.unwrap();
        let r = s.req(pb::ListDealContactsRequest { deal_id: d.id.clone() });
        assert_eq!(s.crm.list_deal_contacts(r).await.unwrap().into_inner().data.len(), 1);

        // The contact's side: main contact, organization or deal contact.
        let second =
            s.deal(pb::CreateDealRequest { name: "Side deal".into(), pipeline_id: Some(p.id.clone()), ..Default::default() }).await;
        let r = s.req(pb::CreateDealContactRequest { deal_id: second.id.clone(), contact_id: bob.clone(), ..Default::default() });
        s.crm.create_deal_contact(r).await.unwrap();
        for (who, want) in [(&ana, vec![d.id.clone()]), (&acme, vec![d.id.clone()]), (&bob, vec![second.id.clone(), d.id.clone()])] {
            let r = s.req(pb::ListContactDealsRequest { id: who.clone(), ..Default::default() });
            let ids: Vec<_> = s.crm.list_contact_deals(r).await.unwrap().into_inner().data.into_iter().map(|d| d.id).collect();
            assert_eq!(ids, want);
        }

        // Filters.
        let f = |q: pb::ListDealsRequest| q;
        let cases = [
            (f(pb::ListDealsRequest { q: Some("renewal".into()), ..Default::default() }), 1),
            (f(pb::ListDealsRequest { organization_id: Some(acme.clone()), ..Default::default() }), 1),
            (f(pb::ListDealsRequest { expected_close_before: Some("2026-12-30".into()), ..Default::default() }), 0),
            (f(pb::ListDealsRequest { expected_close_after: Some("2026-12-31".into()), ..Default::default() }), 1),
            (f(pb::ListDealsRequest { status: pb::DealStatus::Won as i32, ..Default::default() }), 0),
            (f(pb::ListDealsRequest { stage_id: Some(p.stages[0].id.clone()), ..Default::default() }), 2),
        ];
        for (q, n) in cases {
            assert_eq!(s.list(q.clone()).await.len(), n, "{q:?}");
        }

        // Updates: amounts stay exact, a bad one changes nothing; history, diff and timeline.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let between = Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = s.req(pb::UpdateDealRequest { id: d.id.clone(), amount: Some("0.1".into()), ..Default::default() });
        let u = s.crm.update_deal(r).await.unwrap().into_inner();
        assert_eq!(u.amount.as_deref(), Some("0.1"));
        let r = s.req(pb::UpdateDealRequest {
            id: d.id.clone(),
            amount: Some("abc".into()),
            name: Some("changed".into()),
            ..Default::default()
        });
        invalid(&s.crm.update_deal(r).await.unwrap_err());
        let r = s.req(pb::UpdateDealRequest { id: d.id.clone(), currency: Some(String::new()), ..Default::default() });
        invalid(&s.crm.update_deal(r).await.unwrap_err());
        let r = s.req(pb::GetDealRequest { id: d.id.clone(), as_of: Some(timestamp(between)), ..Default::default() });
        let old = s.crm.get_deal(r).await.unwrap().into_inner();
        assert_eq!((old.amount.as_deref(), old.name.as_str()), (Some("12500.10"), "Acme renewal"));
        assert!(old.temporal.is_some());
        let r = s.req(HistoryRequest { id: d.id.clone(), ..Default::default() });
        assert_eq!(s.crm.get_deal_version_history(r).await.unwrap().into_inner().data.len(), 2);
        let r = s.req(DiffRequest { id: d.id.clone(), from: Some(timestamp(between)), ..Default::default() });
        let diff = s.crm.diff_deal(r).await.unwrap().into_inner();
        assert_eq!(diff.changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), ["amount"]);
        let r = s.req(TimelineRequest { id: d.id.clone(), fields: vec!["amount".into()], ..Default::default() });
        assert_eq!(s.crm.get_deal_timeline(r).await.unwrap().into_inner().data.len(), 2);
        let past = s.list(pb::ListDealsRequest { as_of: Some(timestamp(between)), ..Default::default() }).await;
        let then = past.iter().find(|x| x.id == d.id).unwrap();
        assert_eq!(then.amount.as_deref(), Some("12500.10"), "the list as of then shows the amount of then");
        let r = s.req(pb::ListDealsRequest { as_of: Some(timestamp(between)), q: Some("renewal".into()), ..Default::default() });
        invalid(&s.crm.list_deals(r).await.unwrap_err());

        // Another tenant: 404 for the deal.
        let r = s.service.request(Uuid::now_v7(), pb::GetDealRequest { id: d.id.clone(), ..Default::default() });
        assert_eq!(s.crm.get_deal(r).await.unwrap_err().code(), Code::NotFound);
        s.service.stop();
    }
}

#[tokio::test]
async fn moves_close_and_reopen_deals_and_reasons_are_required_where_configured() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut config = Config::default();
        config.settings.insert("crm".into(), serde_json::json!({"require_lost_reason": true}));
        let mut s = start_with(&data, Bus::memory(), config).await;
        let p = s
            .pipeline(
                "P",
                Some("USD"),
                &[("Open", 30, pb::StageKind::Open, 0), ("Won", 100, pb::StageKind::Won, 0), ("Lost", 0, pb::StageKind::Lost, 0)],
            )
            .await;
        let other = s.pipeline("Q", None, &[("Elsewhere", 10, pb::StageKind::Open, 0)]).await;
        let d = s
            .deal(pb::CreateDealRequest {
                name: "D".into(),
                pipeline_id: Some(p.id.clone()),
                amount: Some("100".into()),
                ..Default::default()
            })
            .await;
        let r = s.req(pb::MoveDealRequest { id: d.id.clone(), stage_id: other.stages[0].id.clone(), ..Default::default() });
        invalid(&s.crm.move_deal(r).await.unwrap_err());
        let r = s.req(pb::MoveDealRequest { id: d.id.clone(), stage_id: p.stages[2].id.clone(), ..Default::default() });
        let e = s.crm.move_deal(r).await.unwrap_err();
        invalid(&e);
        assert!(e.message().contains("lost_reason"), "{e:?}");
        let r = s.req(pb::MoveDealRequest {
            id: d.id.clone(),
            stage_id: p.stages[2].id.clone(),
            reason: Some("budget".into()),
            ..Default::default()
        });
        let lost = s.crm.move_deal(r).await.unwrap().into_inner();
        assert_eq!((lost.status, lost.lost_reason.as_deref()), (pb::DealStatus::Lost as i32, Some("budget")), "{backend:?}");
        assert!(lost.closed_at.is_some());
        let reopened = s.mv(&d.id, &p.stages[0].id, None).await;
        assert_eq!(reopened.status, pb::DealStatus::Open as i32);
        assert!(reopened.closed_at.is_none() && reopened.lost_reason.is_none());
        let won = s.mv(&d.id, &p.stages[1].id, None).await;
        assert_eq!(won.status, pb::DealStatus::Won as i32);
        // A move back-dated before the last one is refused: moves are recorded in order.
        let r = s.req(pb::MoveDealRequest {
            id: d.id.clone(),
            stage_id: p.stages[0].id.clone(),
            valid_from: Some(timestamp(Utc::now() - chrono::Duration::days(1))),
            ..Default::default()
        });
        invalid(&s.crm.move_deal(r).await.unwrap_err());
        let r = s.req(pb::MoveDealRequest {
            id: d.id.clone(),
            stage_id: p.stages[0].id.clone(),
            valid_from: Some(timestamp(Utc::now() + chrono::Duration::days(1))),
            ..Default::default()
        });
        invalid(&s.crm.move_deal(r).await.unwrap_err());
        let r = s.req(pb::GetDealStageHistoryRequest { id: d.id.clone() });
        let h = s.crm.get_deal_stage_history(r).await.unwrap().into_inner().data;
        let kinds: Vec<_> = h.iter().map(|c| c.to_kind).collect();
        assert_eq!(kinds, [kind(pb::StageKind::Open), kind(pb::StageKind::Lost), kind(pb::StageKind::Open), kind(pb::StageKind::Won)]);
        assert!(h.iter().all(|c| c.amount.as_deref() == Some("100") && c.currency.as_deref() == Some("USD") && c.actor == "key:test"));
        assert_eq!(h[1].reason.as_deref(), Some("budget"));
        s.service.stop();
    }
}

/// One recorded transition, as the test wrote it.
#[derive(Clone)]
struct Move {
    deal: String,
    stage: usize,
    at: DateTime<Utc>,
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn days(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap() as f64 / 86_400_000_000.0
}

#[tokio::test]
async fn analytics_on_a_seeded_history_match_figures_computed_from_the_raw_moves() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        // stage index: 0 Lead (20%), 1 Proposal (60%, rots after 10 days), 2 Won, 3 Lost.
        let spec = [
            ("Lead", 20, pb::StageKind::Open, 0),
            ("Proposal", 60, pb::StageKind::Open, 10),
            ("Won", 100, pb::StageKind::Won, 0),
            ("Lost", 0, pb::StageKind::Lost, 0),
        ];
        let p = s.pipeline("Seeded", None, &spec).await;
        let stage_ids: Vec<String> = p.stages.iter().map(|s| s.id.clone()).collect();
        let now = Utc::now();
        let base = now - chrono::Duration::days(42);
        let day = chrono::Duration::days(1);
        let hour = chrono::Duration::hours(1);
        let mut moves: Vec<Move> = Vec::new();
        let mut deals: Vec<(String, String, String, Option<i32>)> = Vec::new(); // id, amount, currency, confidence
        for i in 0..16i64 {
            let currency = if i % 3 == 0 { "USD" } else { "EUR" };
            let amount = format!("{}.{:02}", 1000 + i * 250, i * 7 % 100);
            let confidence = (i % 5 == 0).then_some(90);
            let created = base + day * (i as i32 * 2) + hour * (i as i32);
            let d = s
                .deal(pb::CreateDealRequest {
                    name: format!("Deal {i}"),
                    pipeline_id: Some(p.id.clone()),
                    amount: Some(amount.clone()),
                    currency: Some(currency.into()),
                    confidence,
                    expected_close_date: Some(format!("2027-{:02}-15", 1 + i % 3)),
                    valid_from: Some(timestamp(created)),
                    ..Default::default()
                })
                .await;
            moves.push(Move { deal: d.id.clone(), stage: 0, at: created });
            let path: &[(usize, i64)] = match i % 4 {
                0 => &[(1, 3), (2, 10)],
                1 => &[(1, 5), (3, 8)],
                2 => &[(1, 2)],
                _ => &[],
            };
            for (stage, after) in path {
                let at = created + day * (*after as i32) + hour * 3;
                if at >= now {
                    continue;
                }
                s.mv(&d.id, &stage_ids[*stage], Some(at)).await;
                moves.push(Move { deal: d.id.clone(), stage: *stage, at });
            }
            deals.push((d.id, amount, currency.into(), confidence));
        }
        let from = base + day * 7;
        let to = Utc::now();
        let a = s.analytics(&p.id, from, to, None).await;

        // The same figures, from the raw moves.
        let prob = [20, 60, 100, 0];
        let position = [0, 1, 2, 3];
        let in_window = |t: DateTime<Utc>| t >= from && t < to;
        let mut per_deal: HashMap<&str, Vec<&Move>> = HashMap::new();
        for m in &moves {
            per_deal.entry(m.deal.as_str()).or_default().push(m);
        }
        let (mut entered, mut converted, mut stays) = ([0; 4], [0; 4], vec![Vec::<f64>::new(); 4]);
        let (mut won, mut lost) = (0, 0);
        for seq in per_deal.values() {
            for (k, m) in seq.iter().enumerate() {
                if let Some(next) = seq.get(k + 1)
                    && in_window(next.at)
                {
                    stays[m.stage].push(days(next.at - m.at));
                }
                if in_window(m.at) {
                    entered[m.stage] += 1;
                    if seq[k + 1..].iter().any(|l| l.stage != 3 && position[l.stage] > position[m.stage]) {
                        converted[m.stage] += 1;
                    }
                    match m.stage {
                        2 => won += 1,
                        3 => lost += 1,
                        _ => {}
                    }
                }
            }
        }
        let mut totals: Vec<BTreeMap<String, (i32, Decimal, Decimal)>> = vec![BTreeMap::new(); 4];
        for (id, amount, currency, confidence) in &deals {
            let last = per_deal[id.as_str()].last().unwrap().stage;
            let e = totals[last].entry(currency.clone()).or_default();
            e.0 += 1;
            e.1 += dec(amount);
            e.2 += dec(amount) * Decimal::from(confidence.unwrap_or(prob[last])) / Decimal::from(100);
        }
        assert_eq!(a.stages.len(), 4, "{backend:?}");
        for (i, st) in a.stages.iter().enumerate() {
            assert_eq!(st.stage_id, stage_ids[i]);
            assert_eq!((st.entered, st.converted), (entered[i], converted[i]), "stage {i}: entered, converted");
            let got: BTreeMap<String, (i32, Decimal, Decimal)> =
                st.totals.iter().map(|t| (t.currency.clone(), (t.count, dec(&t.amount), dec(&t.weighted_amount)))).collect();
            assert_eq!(got, totals[i], "stage {i}: per-currency totals");
            assert_eq!(st.count, totals[i].values().map(|v| v.0).sum::<i32>());
            let mut v = stays[i].clone();
            v.sort_by(f64::total_cmp);
            let median =
                (!v.is_empty()).then(|| if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 });
            assert_eq!(st.stays as usize, v.len());
            match (st.median_days_in_stage, median) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "stage {i}: median {x} vs {y}"),
                (x, y) => assert_eq!(x, y, "stage {i}"),
            }
            if entered[i] > 0 {
                assert!((st.conversion_rate.unwrap() - f64::from(converted[i]) / f64::from(entered[i])).abs() < 1e-12);
            }
        }
        assert!(entered.iter().sum::<i32>() > 0 && won > 0 && lost > 0, "the seed covers the window");
        assert_eq!((a.won, a.lost), (won, lost));
        assert!((a.win_rate.unwrap() - f64::from(won) / f64::from(won + lost)).abs() < 1e-12);
        // Never one figure across currencies.
        for t in a.stages.iter().flat_map(|s| s.totals.iter()).chain(&a.open_totals).chain(a.forecast.iter().map(|_| &a.open_totals[0])) {
            assert!(t.currency == "EUR" || t.currency == "USD", "{t:?}");
        }
        let mut seen = std::collections::HashSet::new();
        for f in &a.forecast {
            assert!(seen.insert((f.month.clone(), f.currency.clone())), "one row per month and currency");
        }
        // Rotting: open deals in Proposal for more than 10 days.
        let mut rotting: Vec<String> = Vec::new();
        for (id, ..) in &deals {
            let last = *per_deal[id.as_str()].last().unwrap();
            if last.stage == 1 && days(to - last.at) > 10.0 {
                rotting.push(id.clone());
            }
        }
        let mut got: Vec<String> = a.rotting.iter().map(|r| r.deal_id.clone()).collect();
        got.sort();
        rotting.sort();
        assert_eq!(got, rotting);
        assert!(!rotting.is_empty());

        // A current read (no `to`, no `as_of`: the heads, projected in SQL) gives the same
        // snapshot and the same window figures as the read of the versions at `to`.
        let r = s.req(pb::GetPipelineAnalyticsRequest { id: p.id.clone(), from: Some(timestamp(from)), ..Default::default() });
        let cur = s.crm.get_pipeline_analytics(r).await.unwrap().into_inner();
        let figures = |a: &pb::PipelineAnalytics| {
            (
                a.stages.iter().map(|s| (s.count, s.totals.clone(), s.entered, s.converted)).collect::<Vec<_>>(),
                a.forecast.clone(),
                a.won,
                a.lost,
            )
        };
        assert_eq!(figures(&cur), figures(&a));

        // The service's own log agrees with what was written.
        let (id, ..) = &deals[0];
        let r = s.req(pb::GetDealStageHistoryRequest { id: id.clone() });
        let h = s.crm.get_deal_stage_history(r).await.unwrap().into_inner().data;
        let want: Vec<(String, DateTime<Utc>)> = per_deal[id.as_str()].iter().map(|m| (stage_ids[m.stage].clone(), m.at)).collect();
        let got: Vec<(String, DateTime<Utc>)> =
            h.iter().map(|c| (c.to_stage_id.clone(), datetime(c.changed_at.as_ref().unwrap(), "t").unwrap())).collect();
        let trunc = |v: Vec<(String, DateTime<Utc>)>| v.into_iter().map(|(s, t)| (s, t.timestamp_micros())).collect::<Vec<_>>();
        assert_eq!(trunc(got), trunc(want));
        s.service.stop();
    }
}

#[tokio::test]
async fn the_forecast_as_of_then_is_what_was_answered_then_and_currencies_never_mix() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let p = s
            .pipeline(
                "F",
                None,
                &[("Open", 50, pb::StageKind::Open, 0), ("Won", 100, pb::StageKind::Won, 0), ("Lost", 0, pb::StageKind::Lost, 0)],
            )
            .await;
        let week_ago = Utc::now() - chrono::Duration::days(7);
        let mut ids = Vec::new();
        for (amount, currency) in [("100.50", "EUR"), ("200", "USD"), ("300.25", "EUR")] {
            let d = s
                .deal(pb::CreateDealRequest {
                    name: format!("{amount} {currency}"),
                    pipeline_id: Some(p.id.clone()),
                    amount: Some(amount.into()),
                    currency: Some(currency.into()),
                    expected_close_date: Some("2027-03-10".into()),
                    valid_from: Some(timestamp(week_ago - chrono::Duration::days(14))),
                    ..Default::default()
                })
                .await;
            ids.push(d.id);
        }
        let from = week_ago - chrono::Duration::days(30);
        let to = Utc::now() - chrono::Duration::days(1);
        let then = s.analytics(&p.id, from, to, None).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let seen_at = Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let eur = then.forecast.iter().find(|f| f.currency == "EUR").unwrap();
        let usd = then.forecast.iter().find(|f| f.currency == "USD").unwrap();
        assert_eq!(
            (eur.month.as_str(), eur.count, dec(&eur.amount), dec(&eur.weighted_amount)),
            ("2027-03", 2, dec("400.75"), dec("200.375")),
            "{backend:?}"
        );
        assert_eq!((usd.count, dec(&usd.amount), dec(&usd.weighted_amount)), (1, dec("200"), dec("100")));
        assert_eq!(then.forecast.len(), 2, "EUR and USD stay apart");

        // Learn, later, that one deal was won five days ago, and that another is worth more.
        let r = s.req(pb::MoveDealRequest {
            id: ids[0].clone(),
            stage_id: p.stages[1].id.clone(),
            valid_from: Some(timestamp(week_ago + chrono::Duration::days(2))),
            ..Default::default()
        });
        s.crm.move_deal(r).await.unwrap();
        let r = s.req(pb::UpdateDealRequest { id: ids[2].clone(), amount: Some("1000".into()), ..Default::default() });
        s.crm.update_deal(r).await.unwrap();

        let known_then = s.analytics(&p.id, from, to, Some(seen_at)).await;
        let strip = |mut a: pb::PipelineAnalytics| {
            a.as_of = None;
            a
        };
        assert_eq!(strip(known_then.clone()), strip(then.clone()), "as of then: exactly what was answered then");
        let now = s.analytics(&p.id, from, to, None).await;
        assert_ne!(now.forecast, then.forecast, "today's forecast differs");
        assert_eq!((now.won, then.won), (1, 0), "the back-dated win counts in valid time only as known now");
        let eur_now = now.forecast.iter().find(|f| f.currency == "EUR").unwrap();
        assert_eq!((eur_now.count, dec(&eur_now.amount)), (1, dec("300.25")), "the amount change is recorded now, after `to`");
        let today = s.analytics(&p.id, from, Utc::now(), None).await;
        let eur_today = today.forecast.iter().find(|f| f.currency == "EUR").unwrap();
        assert_eq!(dec(&eur_today.amount), dec("1000"));
        let r =
            s.req(pb::GetPipelineAnalyticsRequest { id: p.id.clone(), from: Some(timestamp(to)), to: Some(timestamp(from)), as_of: None });
        invalid(&s.crm.get_pipeline_analytics(r).await.unwrap_err());
        s.service.stop();
    }
}

#[tokio::test]
async fn every_change_is_an_event() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let bus = Bus::memory();
        let mut events = Box::pin(bus.subscribe_memory().unwrap());
        let mut s = start(&data, bus).await;
        tokio::spawn(s.service.relay.clone().run(std::future::pending()));
        let p = s
            .pipeline(
                "E",
                Some("EUR"),
                &[("Open", 50, pb::StageKind::Open, 0), ("Won", 100, pb::StageKind::Won, 0), ("Lost", 0, pb::StageKind::Lost, 0)],
            )
            .await;
        let d = s
            .deal(pb::CreateDealRequest {
                name: "D".into(),
                pipeline_id: Some(p.id.clone()),
                amount: Some("1".into()),
                ..Default::default()
            })
            .await;
        s.mv(&d.id, &p.stages[1].id, None).await;
        s.mv(&d.id, &p.stages[2].id, None).await;
        let r = s.req(pb::UpdateDealRequest { id: d.id.clone(), name: Some("D2".into()), ..Default::default() });
        s.crm.update_deal(r).await.unwrap();
        let mut subjects = Vec::new();
        // 3 stage created + pipeline created + deal created + 2 × (stage_changed + won/lost) + updated.
        for _ in 0..10 {
            let m = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event in time").unwrap();
            let e = Event::decode(m.payload).unwrap();
            assert_eq!(e.tenant_id, s.tenant.to_string());
            if m.subject.ends_with("stage_changed.v1") {
                let ch = pb::StageChange::decode(e.data.unwrap().value.as_slice()).unwrap();
                assert_eq!(ch.deal_id, d.id);
            }
            subjects.push(m.subject);
        }
        assert_eq!(
            subjects,
            [
                "worktruck.crm.stage.created.v1",
                "worktruck.crm.stage.created.v1",
                "worktruck.crm.stage.created.v1",
                "worktruck.crm.pipeline.created.v1",
                "worktruck.crm.deal.created.v1",
                "worktruck.crm.deal.stage_changed.v1",
                "worktruck.crm.deal.won.v1",
                "worktruck.crm.deal.stage_changed.v1",
                "worktruck.crm.deal.lost.v1",
                "worktruck.crm.deal.updated.v1",
            ],
            "{backend:?}"
        );
        s.service.stop();
    }
}
