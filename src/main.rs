//! `worktruck`: one binary, many roles (brief §2). This file is the table of contents: parse the
//! command, load config, start telemetry, run the role until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use worktruck::{Role, app, admin};
use worktruck_kit::config::Config;

/// Machine-first personal information manager: contacts, CRM, tasks, calendar and notes behind
/// REST, MCP and gRPC.
#[derive(Parser)]
#[command(name = "worktruck", version, about)]
struct Cli {
    /// A TOML config file (also `WORKTRUCK_CONFIG`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    dev: DevArgs,
}

#[derive(clap::Args, Default, Clone)]
struct DevArgs {
    /// Where embedded data lives (default ./worktruck-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// REST listen address (default 127.0.0.1:8080).
    #[arg(long)]
    rest_addr: Option<SocketAddr>,
    /// MCP listen address (default 127.0.0.1:8081).
    #[arg(long)]
    mcp_addr: Option<SocketAddr>,
    /// Address of /health, /ready and /metrics (default 127.0.0.1:9090).
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    /// Also serve each service's gRPC on TCP, from this address on: the first service on it,
    /// the next on the port after, and so on (port 0: each on a free port). Without it, the
    /// services are reached in process only.
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// Use PostgreSQL instead of embedded SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Use NATS JetStream instead of the in-process bus.
    #[arg(long)]
    nats_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process (the default).
    Dev(DevArgs),
    /// One role per process: a service, the REST gateway or the MCP gateway.
    Serve {
        /// The role.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(worktruck::role_names()))]
        role: String,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// Only this service.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(worktruck::services::TABLE.iter().map(|d| d.name)))]
        service: Option<String>,
        #[command(flatten)]
        args: DataArgs,
    },
    /// Operator commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(clap::Args, Clone)]
struct DataArgs {
    /// Embedded data folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Re-wrap every tenant's data keys under encryption.active_key (after adding a master
    /// key and making it active); stored secrets are not rewritten.
    RotateMasterKey {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Create a tenant and print its first API key.
    CreateTenant {
        /// Tenant name.
        #[arg(long)]
        name: String,
        /// free, pro, scale or enterprise.
        #[arg(long, default_value = "free")]
        plan: String,
        #[command(flatten)]
        data: DataArgs,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
}

fn apply_dev(cfg: &mut Config, a: &DevArgs) {
    if let Some(d) = &a.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(x) = a.rest_addr {
        cfg.rest.addr = x;
    }
    if let Some(x) = a.mcp_addr {
        cfg.mcp.addr = x;
    }
    if let Some(x) = a.admin_addr {
        cfg.admin.addr = x;
    }
    if let Some(x) = &a.database_url {
        cfg.database.url = x.clone();
    }
    if let Some(x) = &a.nats_url {
        cfg.nats.url = x.clone();
    }
}

fn apply_data(cfg: &mut Config, a: &DataArgs) {
    apply_dev(cfg, &DevArgs { data_dir: a.data_dir.clone(), database_url: a.database_url.clone(), ..Default::default() });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before anything can build an HTTPS client (see worktruck_kit::http).
    worktruck_kit::http::install_crypto();
    // Before any listener opens: the connection caps, not the kernel's file limit, should be
    // what a flood of sockets meets.
    worktruck_kit::serve::raise_open_file_limit();
    let mut cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        None => run_dev(cfg, &cli.dev).await,
        Some(Command::Dev(a)) => run_dev(cfg, &a).await,
        Some(Command::Serve { role }) => {
            let role: Role = role.parse()?;
            let _telemetry = worktruck_kit::telemetry::init(&cfg, &format!("worktruck-{role}"))?;
            let mut running = worktruck::start_role(cfg, role).await?;
            tracing::info!(rest = ?running.rest_addr, grpc = ?running.grpc_addr, "serving");
            until_signal(&mut running).await;
            running.stop().await;
            Ok(())
        }
        Some(Command::Migrate { service, args }) => {
            apply_data(&mut cfg, &args);
            let _telemetry = worktruck_kit::telemetry::init(&cfg, "worktruck-migrate")?;
            let done = app::migrate(&cfg, service.as_deref()).await?;
            println!("migrated: {}", done.join(", "));
            Ok(())
        }
        Some(Command::Admin { command: AdminCommand::RotateMasterKey { data } }) => {
            apply_data(&mut cfg, &data);
            for line in admin::rotate_master_key(&cfg).await? {
                println!("{line}");
            }
            Ok(())
        }
        Some(Command::Admin { command: AdminCommand::CreateTenant { name, plan, data, json } }) => {
            apply_data(&mut cfg, &data);
            let out = admin::create_tenant(&cfg, &name, &plan).await?;
            if json {
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!("created tenant {} ({})", out["tenant"]["name"], out["tenant"]["id"]);
                println!("API key (shown once): {}", out["api_key"].as_str().unwrap_or_default());
            }
            Ok(())
        }
    }
}

async fn run_dev(mut cfg: Config, args: &DevArgs) -> anyhow::Result<()> {
    apply_dev(&mut cfg, args);
    let _telemetry = worktruck_kit::telemetry::init(&cfg, "worktruck")?;
    let mut running = worktruck::start_dev_with(cfg.clone(), args.grpc_addr).await.context("starting worktruck")?;
    let rest = running.rest_addr.expect("dev serves REST");
    let storage = match cfg.database_url() {
        Some(_) => "PostgreSQL".to_owned(),
        None => format!("SQLite in {}", cfg.data_dir.display()),
    };
    let bus = if cfg.nats.url.is_empty() { "in-process".to_owned() } else { format!("NATS {}", cfg.nats.url) };
    println!("Worktruck is running: REST on http://{rest} (storage: {storage}; events: {bus})");
    println!("  health: http://{rest}/health   API description: http://{rest}/docs/openapi.json");
    if let Some(mcp) = running.mcp_addr {
        println!("  MCP (Streamable HTTP): http://{mcp}/mcp/v1");
    }
    if let Some(admin) = running.admin_addr {
        println!("  metrics (Prometheus): http://{admin}/metrics");
    }
    if running.grpc_addrs.is_empty() {
        println!("  gRPC: in process (--grpc-addr 127.0.0.1:50051 serves each service on TCP too)");
    } else {
        println!("  gRPC (each needs the internal context header, x-worktruck-context):");
        for (service, addr) in &running.grpc_addrs {
            println!("    {service:<10} {addr}");
        }
    }
    if let Some(key) = &running.first_key {
        println!();
        println!("First start: created tenant \"default\". Its API key is shown only now; keep it:");
        println!();
        println!("  export WT_KEY={key}");
        println!();
    }
    until_signal(&mut running).await;
    println!("stopping");
    running.stop().await;
    Ok(())
}

async fn until_signal(running: &mut worktruck::Running) {
    tokio::select! {
        () = worktruck_kit::ops::shutdown_signal() => {}
        () = running.wait() => tracing::error!("a component stopped unexpectedly"),
    }
}
