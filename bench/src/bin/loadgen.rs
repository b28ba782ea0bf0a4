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
            r = phases(args, &target, None) => r,
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
    let opts = DevOptions {
        binary: args.worktruck.clone(),
        database_url,
        nats_url: args.nats_url.clone(),
        env: args.server_env.clone(),
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
        phases(args, &target, Some(&mut server)).await
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

/// Runs the create phase, then the get phase over the ids it made. A server this harness
/// started is checked after each phase: if it died, the run fails instead of reporting.
async fn phases(
    args: &Args,
    target: &Target,
    mut server: Option<&mut DevServer>,
) -> anyhow::Result<Vec<Summary>> {
    let plan = Plan {
        concurrency: usize::from(args.concurrency),
        requests: args.requests,
        max_duration: Duration::from_secs(args.max_seconds),
    };
    eprintln!("loadgen: create phase against {}", target.base());
    let (create, ids) = load::create_phase(target, plan).await;
    eprintln!(
        "loadgen: create done: {} ok, {} errors",
        create.ok, create.errors
    );
    if let Some(s) = server.as_deref_mut() {
        s.ensure_running().await?;
    }
    let mut out = vec![create];
    match load::get_phase(target, plan, ids.clone()).await {
        Some(get) => {
            eprintln!("loadgen: get done: {} ok, {} errors", get.ok, get.errors);
            if let Some(s) = server.as_deref_mut() {
                s.ensure_running().await?;
            }
            out.push(get);
        }
        None => eprintln!("loadgen: no contact was created, so the get phase did not run"),
    }
    if let Some(mcp) = target.mcp() {
        eprintln!("loadgen: mcp_get phase against {mcp}");
        if let Some(get) = load::mcp_get_phase(target, plan, ids).await? {
            eprintln!("loadgen: mcp_get done: {} ok, {} errors", get.ok, get.errors);
            if let Some(s) = server {
                s.ensure_running().await?;
            }
            out.push(get);
        }
    }
    Ok(out)
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
    let table = report::table(&run, summaries);
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
