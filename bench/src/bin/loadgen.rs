//! `loadgen`: load against Worktruck. By default it starts `worktruck dev` on a fresh data
//! directory (and, for Postgres, a fresh database), makes a tenant, runs a `create` and a `get`
//! phase over REST and an `mcp_get` phase (the `contacts_get` tool over Streamable HTTP) over
//! loopback, prints a summary per phase, and tears everything down.
//!
//! Exit status: 0 when every request succeeded, 2 when the run finished but some requests
//! failed (they are in the report), 1 when the harness itself could not run.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use reqwest::Url;
use std::sync::Arc;

use worktruck_bench::agents::{self, FakeAnthropic};
use worktruck_bench::ceiling::{self, RawStore};
use worktruck_bench::load::{self, Plan, Target};
use worktruck_kit::testing::TempDatabase;
use worktruck_bench::report::{self, RunInfo};
use worktruck_bench::server::{DevOptions, DevServer};
use worktruck_bench::stats::Summary;

/// Load harness: contact create and get over REST, get over MCP, with throughput and
/// p50/p90/p99/max latency.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// Storage of the server this harness starts.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Postgres admin URL (a role that may CREATE DATABASE); a fresh database is made from it
    /// and dropped afterwards. Needed with --backend postgres.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// NATS URL for the server's event bus (in-process bus when absent).
    #[arg(long)]
    nats_url: Option<String>,
    /// Concurrent workers, each with one request in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Requests per phase (upper bound).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    requests: u64,
    /// Time cap per phase, in seconds: no request starts after it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_seconds: u64,
    /// Per-request timeout, in seconds (a timed-out request is an error).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout_seconds: u64,
    /// The worktruck executable to start.
    #[arg(long, default_value = "target/release/worktruck")]
    worktruck: PathBuf,
    /// Plan of the tenant the harness creates (rate limits follow the plan).
    #[arg(long, default_value = "enterprise")]
    plan: String,
    /// Extra environment for the started server, e.g. WORKTRUCK_LOG__LEVEL=warn (repeatable).
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// Save the started server's output (API keys masked) to this file when the run ends.
    #[arg(long, value_name = "FILE")]
    server_log: Option<PathBuf>,
    /// Target an already-running server at this loopback URL instead of starting one.
    #[arg(long, requires = "key")]
    url: Option<Url>,
    /// API key for --url mode.
    #[arg(long, requires = "url")]
    key: Option<String>,
    /// The MCP endpoint in --url mode (e.g. http://127.0.0.1:8081/mcp/v1); without it the
    /// mcp_get phase is skipped there.
    #[arg(long, requires = "url")]
    mcp_url: Option<Url>,
    /// Also print one JSON line per phase on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Versions of the long-history contact the as_of and history phases read (beside a
    /// 10-version twin); 0 skips those phases.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    history_versions: u64,
    /// Contacts the list phases page through (made before they run, beyond those the create
    /// phase made); the deepest page is compared with the first.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    list_rows: u64,
    /// Deals in the pipeline the analytics phase reads (made before it runs, beyond those the
    /// deal_create phase made); 0 skips the CRM phases.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    deals: u64,
    /// Recurring series in the calendar the events_month phase expands one month of (made
    /// before it runs); 0 skips the calendar phases.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=1_000))]
    series: u64,
    /// Agent runs the agents phases enqueue against a fake Anthropic endpoint the harness starts
    /// (not with --url); 0 skips them.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    agent_runs: u64,
    /// Milliseconds the fake Anthropic endpoint waits before each answer (a model's think time).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    fake_llm_ms: u64,
    /// Runs the server's agent worker executes at once (`settings.agents.concurrency`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    agent_workers: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(summaries) => {
            print_report(&args, &summaries);
            if summaries.iter().any(|s| s.errors > 0) {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Vec<Summary>> {
    if let (Some(url), Some(key)) = (&args.url, &args.key) {
        require_loopback(url)?;
        let mut target = target(args, url.clone(), key.clone())?;
        if let Some(mcp) = &args.mcp_url {
            require_loopback(mcp)?;
            target = target.with_mcp(mcp.clone());
        }
        return tokio::select! {
            r = phases(args, &target, None, None, None) => r,
            () = worktruck_kit::ops::shutdown_signal() => bail!("interrupted"),
        };
    }
    let db = match args.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let admin = args.database_url.as_deref().context(
                "--backend postgres needs --database-url (or DATABASE_URL), e.g. postgres://postgres@127.0.0.1:5432/postgres",
            )?;
            if !(admin.starts_with("postgres://") || admin.starts_with("postgresql://")) {
                bail!("--database-url must be a postgres:// URL");
            }
            let db = TempDatabase::create(admin, "worktruck_bench").await.context("creating the benchmark database")?;
            eprintln!("loadgen: created database {}", db.name());
            Some(db)
        }
    };
    // Dropping `with_server` on a signal kills the child (kill_on_drop).
    let result = tokio::select! {
        r = with_server(args, db.as_ref().map(|d| d.url().to_owned())) => r,
        () = worktruck_kit::ops::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    // The database is dropped here, on every path.
    drop(db);
    result
}

async fn with_server(args: &Args, database_url: Option<String>) -> anyhow::Result<Vec<Summary>> {
    // The write ceiling: the same database server (or SQLite as kit opens it), same run.
    let raw = match &database_url {
        Some(url) => RawStore::postgres(url, u32::from(args.concurrency)).await,
        None => RawStore::sqlite().await,
    }
    .context("preparing the raw INSERT ceiling")?;
    let fake = if args.agent_runs > 0 {
        Some(FakeAnthropic::start(Duration::from_millis(args.fake_llm_ms)).await?)
    } else {
        None
    };
    let mut env = fake.as_ref().map(|f| f.server_env(args.agent_workers)).unwrap_or_default();
    // The operator's own settings come last, so they win.
    env.extend(args.server_env.clone());
    let opts = DevOptions {
        binary: args.worktruck.clone(),
        database_url,
        nats_url: args.nats_url.clone(),
        env,
    };
    let mut server = DevServer::start(&opts)?;
    eprintln!(
        "loadgen: started worktruck dev on {} (data in {})",
        server.base(),
        server.data_dir().display()
    );
    let outcome = async {
        let took = server.wait_healthy(Duration::from_secs(60)).await?;
        eprintln!("loadgen: healthy after {} ms", took.as_millis());
        let key = server.create_tenant(&args.plan).await?;
        let target = target(args, server.base().clone(), key)?.with_mcp(server.mcp_url().clone());
        phases(args, &target, Some(&mut server), Some(Arc::new(raw)), fake.as_ref()).await
    }
    .await;
    server.stop().await;
    if let Some(path) = &args.server_log
        && let Err(e) = server.save_log(path)
    {
        eprintln!("loadgen: cannot write {}: {e}", path.display());
    }
    drop(server);
    outcome
}

fn target(args: &Args, url: Url, key: String) -> anyhow::Result<Target> {
    Target::new(
        url,
        key,
        usize::from(args.concurrency),
        Duration::from_secs(args.timeout_seconds),
    )
}

/// Runs every phase: `/health` (the read ceiling), create and the raw INSERT ceiling, get
/// over REST and MCP, get of a contact with children, as_of and history reads on a long-history contact and its 10-version
/// twin, the first and the deepest list page, notes with five wikilinks and the backlinks of a
/// note with 1,000 of them, search, and the CRM's deal create, move and analytics on a
/// pipeline of `--deals` deals. A server this harness started is
/// note with 1,000 of them, tasks created in one project (identifier allocation)
/// and the overdue list, search, and events created and one month expanded over `--series`
/// recurring series. A server this harness started is
/// checked after each phase: if it died, the run fails instead of reporting.
async fn phases(
    args: &Args,
    target: &Target,
    mut server: Option<&mut DevServer>,
    raw: Option<Arc<RawStore>>,
    fake: Option<&FakeAnthropic>,
) -> anyhow::Result<Vec<Summary>> {
    let plan = Plan {
        concurrency: usize::from(args.concurrency),
        requests: args.requests,
        max_duration: Duration::from_secs(args.max_seconds),
    };
    let mut out = Vec::new();
    macro_rules! phase {
        ($summary:expr) => {{
            let summary: Option<Summary> = $summary;
            if let Some(s) = summary {
                eprintln!("loadgen: {} done: {} ok, {} errors", s.phase, s.ok, s.errors);
                out.push(s);
            }
            if let Some(s) = server.as_deref_mut() {
                s.ensure_running().await?;
            }
        }};
    }
    eprintln!("loadgen: phases against {}", target.base());
    phase!(load::get_paths_phase(target, plan, "health", vec!["health".into()], false).await);
    let (create, ids) = load::create_phase(target, plan).await;
    phase!(Some(create));
    if let Some(raw) = raw {
        phase!(Some(ceiling::insert_raw_phase(raw, plan).await));
    }
    phase!(load::get_phase(target, plan, ids.clone()).await);
    if target.mcp().is_some() {
        phase!(load::mcp_get_phase(target, plan, ids.clone()).await?);
    }
    eprintln!("loadgen: making 20 contacts with 5 channels, 2 addresses and 3 tags");
    let rich = rich_contacts(target, 20).await?;
    phase!(load::get_paths_phase(target, plan, "get_rich", rich, true).await);
    if args.history_versions > 0 {
        for (versions, suffix) in [(10, "10"), (args.history_versions, "10k")] {
            eprintln!("loadgen: making a contact with {versions} versions");
            let (id, moment) = long_history(target, versions).await?;
            let at = moment.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let as_of = vec![format!("api/v1/contacts/{id}?as_of={at}")];
            phase!(load::get_paths_phase(target, plan, &format!("as_of_{suffix}"), as_of, true).await);
            let history = vec![format!("api/v1/contacts/{id}/history?limit=10")];
            phase!(load::get_paths_phase(target, plan, &format!("history_{suffix}"), history, true).await);
        }
    }
    let have = ids.len() as u64;
    if args.list_rows > have {
        eprintln!("loadgen: making {} more contacts for the list phases", args.list_rows - have);
        seed(target, args.list_rows - have, usize::from(args.concurrency)).await?;
    }
    let deepest = deepest_page(target).await?;
    phase!(load::get_paths_phase(target, plan, "list_first", vec!["api/v1/contacts?limit=50".into()], true).await);
    if let Some(cursor) = deepest {
        let deep = vec![format!("api/v1/contacts?limit=50&cursor={cursor}")];
        phase!(load::get_paths_phase(target, plan, "list_deep", deep, true).await);
    }
    phase!(Some({
        eprintln!("loadgen: note_create (notes with five wikilinks)");
        let (notes, hub) = load::note_create_phase(target, plan).await?;
        let linked = notes.ok.min(load::HUB_BACKLINKS);
        out.push(notes);
        eprintln!("loadgen: backlinks (a note with {linked} backlinks)");
        load::backlinks_phase(target, plan, hub).await
    }));
    phase!(Some({
        eprintln!("loadgen: task_create (identifiers allocated under concurrency in one project)");
        load::task_create_phase(target, plan).await?
    }));
    let overdue = vec!["api/v1/tasks/overdue?limit=50".to_owned()];
    phase!(load::get_paths_phase(target, plan, "overdue", overdue, true).await);
    let searches: Vec<String> = (0..100).map(|i| format!("api/v1/contacts?limit=20&q=person%20{}", i * 37 % have.max(1))).collect();
    phase!(load::get_paths_phase(target, plan, "search", searches, true).await);
    if args.series > 0 {
        let calendar = load::create_calendar(target, "Load Calendar").await?;
        phase!(Some(load::event_create_phase(target, plan, calendar).await));
        let series = load::create_calendar(target, "Load Series").await?;
        eprintln!("loadgen: making {} recurring series for events_month", args.series);
        seed_series(target, &series, args.series, usize::from(args.concurrency)).await?;
        let month = vec![format!("api/v1/events?calendar_id={series}&from=2030-03-01T00:00:00Z&to=2030-04-01T00:00:00Z&expand=true")];
        phase!(load::get_paths_phase(target, plan, "events_month", month, true).await);
    }
    if args.deals > 0 {
        let (pipeline, stages) = load::crm_pipeline(target).await?;
        let (created, mut deal_ids) = load::deal_create_phase(target, plan, pipeline.clone()).await;
        phase!(Some(created));
        phase!(load::deal_move_phase(target, plan, deal_ids.clone(), stages).await);
        let have = deal_ids.len() as u64;
        if args.deals > have {
            eprintln!("loadgen: making {} more deals for the analytics phase", args.deals - have);
            deal_ids.extend(seed_deals(target, &pipeline, have, args.deals - have, usize::from(args.concurrency)).await?);
        }
        eprintln!("loadgen: analytics (a pipeline of {} deals)", deal_ids.len());
        let analytics = vec![format!("api/v1/pipelines/{pipeline}/analytics")];
        phase!(load::get_paths_phase(target, plan, "analytics", analytics, true).await);
    }
    if let Some(fake) = fake {
        let runs = Plan { requests: args.agent_runs.min(args.requests), ..plan };
        eprintln!("loadgen: agent_enqueue ({} site_health runs against the fake Anthropic endpoint)", runs.requests);
        let (enqueued, ids) = agents::enqueue_phase(target, runs).await;
        phase!(Some(enqueued));
        eprintln!("loadgen: waiting for the {} runs to end", ids.len());
        phase!(Some(agents::settle_phase(target, &ids, Duration::from_secs(args.max_seconds.max(60) * 5)).await?));
        eprintln!("loadgen: the fake answered {} model turns", fake.answered());
    }
    Ok(out)
}

/// `count` contacts each with 5 channels, 2 addresses and 3 tags (set-up, untimed): the paths
/// of their reads, for the `get_rich` phase beside plain `get`.
async fn rich_contacts(target: &Target, count: u64) -> anyhow::Result<Vec<String>> {
    use serde_json::json;
    let mut paths = Vec::new();
    for i in 0..count {
        let id = target.create_named(&format!("Rich Person {i}")).await?;
        let base = format!("api/v1/contacts/{id}");
        let channels = [
            json!({"type": "email", "value": format!("rich{i}@work.example"), "is_primary": true}),
            json!({"type": "email", "value": format!("rich{i}@home.example")}),
            json!({"type": "phone", "value": format!("+1 415 555 {:04}", 1000 + i)}),
            json!({"type": "url", "value": format!("https://rich{i}.example")}),
            json!({"type": "twitter", "value": format!("@rich{i}")}),
        ];
        for c in channels {
            target.post_setup(&format!("{base}/channels"), &c).await?;
        }
        for (city, primary) in [("London", true), ("Oslo", false)] {
            target.post_setup(&format!("{base}/addresses"), &json!({"street": format!("{i} High Street"), "city": city, "is_primary": primary})).await?;
        }
        for tag in ["friends", "work", "salon"] {
            target.post_setup(&format!("{base}/tags"), &json!({"name": tag})).await?;
        }
        paths.push(base);
    }
    Ok(paths)
}

/// A contact with `versions` versions (one create, then updates) and a moment in the middle
/// of its history, for `as_of` reads.
async fn long_history(target: &Target, versions: u64) -> anyhow::Result<(String, chrono::DateTime<chrono::Utc>)> {
    let id = target.create_named("Long History").await?;
    let mut moment = chrono::Utc::now();
    for v in 2..=versions {
        target.patch_contact(&id, &serde_json::json!({"nickname": format!("v{v}")})).await?;
        if v == versions / 2 {
            moment = chrono::Utc::now();
        }
    }
    Ok((id, moment))
}

/// Creates `n` more contacts with `concurrency` workers (untimed).
async fn seed(target: &Target, n: u64, concurrency: usize) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (t, next) = (target.clone(), Arc::clone(&next));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                t.create_named(&format!("Seed Person {i}")).await?;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    Ok(())
}

/// Creates `n` more deals in `pipeline`, numbered from `from`, with `concurrency` workers
/// (untimed); their ids.
/// `n` recurring series in `calendar` (set-up, untimed), from `concurrency` workers.
async fn seed_series(target: &Target, calendar: &str, n: u64, concurrency: usize) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let calendar: Arc<str> = Arc::from(calendar);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (t, next, calendar) = (target.clone(), Arc::clone(&next), Arc::clone(&calendar));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                t.post_setup("api/v1/events", &load::series_body(&calendar, i)).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

async fn seed_deals(target: &Target, pipeline: &str, from: u64, n: u64, concurrency: usize) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pipeline: Arc<str> = Arc::from(pipeline);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (t, next, pipeline) = (target.clone(), Arc::clone(&next), Arc::clone(&pipeline));
        workers.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(ids);
                }
                let id = t.create_deal(&pipeline, from + i).await.map_err(|f| anyhow::anyhow!("create deal: {}", f.key()))?;
                ids.push(id);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = workers.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

/// The cursor of the last full page of `GET /api/v1/contacts?limit=50`, walking there once
/// (the very last page may hold a few rows only, which would flatter the deep read).
async fn deepest_page(target: &Target) -> anyhow::Result<Option<String>> {
    let mut cursor: Option<String> = None;
    let mut deepest_full = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("api/v1/contacts?limit=50&cursor={c}"),
            None => "api/v1/contacts?limit=50".to_owned(),
        };
        let page = target.get_json(&path).await?;
        let full = page["data"].as_array().is_some_and(|d| d.len() == 50);
        if full && cursor.is_some() {
            deepest_full = cursor.clone();
        }
        match page["next_cursor"].as_str().filter(|c| !c.is_empty()) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(deepest_full),
        }
    }
}

fn print_report(args: &Args, summaries: &[Summary]) {
    let run = RunInfo {
        backend: if args.url.is_some() {
            "external".to_owned()
        } else {
            format!("{:?}", args.backend).to_lowercase()
        },
        concurrency: usize::from(args.concurrency),
        requests_planned: args.requests,
    };
    let mut table = report::table(&run, summaries);
    let ratios = ceiling::ratios(summaries);
    if !ratios.is_empty() {
        table.push_str("ratios (same run, same machine):\n");
        for r in ratios {
            let target = match r.target {
                Some((t, true)) => format!("target >= {t}"),
                Some((t, false)) => format!("target <= {t}"),
                None => String::new(),
            };
            table.push_str(&format!("  {:<68} {:>7.3}  {target}\n", r.what, r.value));
        }
    }
    if args.json {
        eprint!("{table}");
        for s in summaries {
            println!("{}", report::json_line(&run, s));
        }
    } else {
        print!("{table}");
    }
}

/// Load from this harness stays on the machine: `--url` must name a loopback host.
fn require_loopback(url: &Url) -> anyhow::Result<()> {
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ok = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !ok || url.scheme() != "http" {
        bail!("--url must be http:// on a loopback address (127.0.0.1, ::1, localhost), got {url}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_targets() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:8080",
            "http://127.0.0.2:9",
        ] {
            assert!(require_loopback(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8080",
            "https://127.0.0.1:8080",
            "http://example.com",
        ] {
            assert!(
                require_loopback(&Url::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "loadgen",
            "--url",
            "http://127.0.0.1:8080",
            "--key",
            "k",
            "--json",
        ])
        .unwrap();
        assert!(a.json);
        assert!(Args::try_parse_from(["loadgen", "--url", "http://127.0.0.1:8080"]).is_err());
        assert!(Args::try_parse_from(["loadgen", "--concurrency", "0"]).is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".to_owned(), "b=c".to_owned())));
    }
}
