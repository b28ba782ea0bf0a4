//! Starting Worktruck: everything in one process (`dev`) or one role per process (`serve`).
//! All-in-one still talks gRPC between gateway and services over loopback, so the code path
//! under test is the production one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use worktruck_kit::bus::Bus;
use worktruck_kit::config::{Config, Secrets, decode_key32};
use worktruck_kit::context::{Signer, Verifier};
use worktruck_kit::db::{Db, DbOptions, Scope};
use worktruck_kit::ops;
use worktruck_kit::outbox::Relay;
use worktruck_proto::registry::Registry;

/// One role of `worktruck serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The tenants service.
    Tenants,
    /// The contacts service.
    Contacts,
    /// The REST gateway.
    Gateway,
    /// The MCP gateway.
    McpGateway,
}

impl std::str::FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Role> {
        match s {
            "tenants" => Ok(Role::Tenants),
            "contacts" => Ok(Role::Contacts),
            "gateway" => Ok(Role::Gateway),
            "mcp-gateway" => Ok(Role::McpGateway),
            "crm" | "tasks" | "calendar" | "notes" | "agents" | "apps" => {
                anyhow::bail!("the {s} role is not part of this release yet")
            }
            other => anyhow::bail!(
                "unknown role {other:?}: use tenants, contacts, gateway or mcp-gateway"
            ),
        }
    }
}

/// A started Worktruck (all-in-one or one role).
pub struct Running {
    /// Where REST listens (all-in-one and gateway roles).
    pub rest_addr: Option<SocketAddr>,
    /// Where the MCP gateway listens (all-in-one and mcp-gateway roles).
    pub mcp_addr: Option<SocketAddr>,
    /// Where a service role's gRPC listens.
    pub grpc_addr: Option<SocketAddr>,
    /// The first tenant's API key, when this start created it.
    pub first_key: Option<String>,
    /// The first tenant's id, when this start created it.
    pub first_tenant: Option<String>,
    shutdown: watch::Sender<bool>,
    /// Servers (gRPC, HTTP): one ending means the process can no longer serve.
    servers: Vec<JoinHandle<()>>,
    /// Background work (relays, stream declaration).
    tasks: Vec<JoinHandle<()>>,
    dbs: Vec<Db>,
}

impl Running {
    /// Signals every task to stop and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.servers.into_iter().chain(self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        for db in self.dbs {
            db.close().await;
        }
    }

    /// Waits until a server task ends, which happens only on shutdown or failure. Background
    /// tasks that finish their job (such as declaring the JetStream stream) do not count.
    pub async fn wait(&mut self) {
        if self.servers.is_empty() {
            return std::future::pending().await;
        }
        let (_, index, _) = futures::future::select_all(self.servers.iter_mut()).await;
        // A finished handle must not be awaited again by `stop`.
        drop(self.servers.remove(index));
    }
}

/// What a start spawns: servers, whose end means the process can no longer serve, and
/// background work that may finish on its own.
#[derive(Default)]
struct Tasks {
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

fn stopped(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The derived keys every role needs.
struct Keys {
    pepper: [u8; 32],
    signer: Option<Signer>,
    verifier: Verifier,
}

const SIGNING_PURPOSE: &str = "worktruck/context-signing/v1";

fn keys(cfg: &Config, need_signer: bool) -> anyhow::Result<Keys> {
    use secrecy::ExposeSecret;
    let secrets: Option<Secrets> = if cfg.secret_key.is_some() || need_signer || cfg.context.public_key.is_none() {
        Some(cfg.master_secret()?)
    } else {
        cfg.master_secret().ok()
    };
    let signer = match &cfg.context.signing_key {
        Some(k) => Some(Signer::from_seed(decode_key32(k.expose_secret(), "context.signing_key")?)),
        None => secrets.as_ref().map(|s| Signer::from_seed(s.derive(SIGNING_PURPOSE))),
    };
    let verifier = match &cfg.context.public_key {
        Some(k) => Verifier::from_public_key(decode_key32(k, "context.public_key")?)?,
        None => signer.as_ref().context("no context key: set context.public_key or secret_key")?.verifier(),
    };
    let pepper = secrets
        .as_ref()
        .map(|s| s.derive(worktruck_tenants::PEPPER_PURPOSE))
        .unwrap_or([0; 32]);
    Ok(Keys { pepper, signer, verifier })
}

/// Database options for a service under `cfg`.
pub fn db_options(cfg: &Config, service: &str) -> DbOptions {
    DbOptions {
        url: cfg.database_url(),
        data_dir: cfg.data_dir.clone(),
        service: service.to_owned(),
        max_connections: cfg.database.max_connections,
        app_role: cfg.database.app_role.clone(),
    }
}

/// Connects and migrates one service's database.
pub async fn open_service_db(cfg: &Config, service: &str) -> anyhow::Result<Db> {
    let (pg, sqlite) = match service {
        worktruck_tenants::SERVICE => worktruck_tenants::migrators(),
        worktruck_contacts::SERVICE => worktruck_contacts::migrators(),
        other => anyhow::bail!("unknown service {other}"),
    };
    Db::connect_and_migrate(&db_options(cfg, service), pg, sqlite)
        .await
        .with_context(|| format!("opening the {service} database"))
}

/// The services this release runs.
pub const SERVICES: &[&str] = &[worktruck_tenants::SERVICE, worktruck_contacts::SERVICE];

async fn bus(cfg: &Config, shutdown: &watch::Receiver<bool>, tasks: &mut Tasks) -> anyhow::Result<Bus> {
    if cfg.nats.url.is_empty() {
        return Ok(Bus::memory());
    }
    let bus = Bus::nats(&cfg.nats.url).await?;
    // NATS may be down at start: keep trying to declare the stream in the background; the
    // outbox holds events meanwhile.
    let b = bus.clone();
    let stop = stopped(shutdown);
    tasks.background.push(tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), b.ensure_stream()).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => tracing::warn!(error = %e, "jetstream stream not ready; retrying"),
                Err(_) => tracing::warn!("jetstream stream declaration timed out; retrying"),
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }));
    Ok(bus)
}

/// A service's gRPC routes and readiness checks.
fn service_routes(service: &str, db: &Db, keys: &Keys, relay: &Relay, cfg: &Config) -> (tonic::service::Routes, &'static str) {
    match service {
        worktruck_tenants::SERVICE => {
            let svc = worktruck_tenants::Tenants::new(
                db.clone(),
                keys.verifier.clone(),
                keys.pepper,
                cfg.tenants.default_retention_days,
                relay.clone(),
            );
            let server = worktruck_proto::tenants::v1::tenants_service_server::TenantsServiceServer::new(svc);
            (tonic::service::Routes::new(server), worktruck_tenants::GRPC_NAME)
        }
        _ => {
            let svc = worktruck_contacts::Contacts::new(db.clone(), keys.verifier.clone(), relay.clone());
            let server = worktruck_proto::contacts::v1::contacts_service_server::ContactsServiceServer::new(svc);
            (tonic::service::Routes::new(server), worktruck_contacts::GRPC_NAME)
        }
    }
}

/// Starts one service on `listener`: database, outbox relay and gRPC server.
async fn start_service(
    cfg: &Config,
    service: &str,
    keys: &Keys,
    bus: &Bus,
    listener: TcpListener,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<Db> {
    let db = open_service_db(cfg, service).await?;
    let relay = Relay::new(db.clone(), bus.clone());
    tasks.background.push(tokio::spawn(relay.clone().run(stopped(shutdown))));
    let (routes, name) = service_routes(service, &db, keys, &relay, cfg);
    let stop = stopped(shutdown);
    let service_name = service.to_owned();
    tasks.servers.push(tokio::spawn(async move {
        if let Err(e) = ops::serve_grpc(listener, routes, &[name], stop).await {
            tracing::error!(service = %service_name, error = %e, "grpc server failed");
        }
    }));
    Ok(db)
}

/// The signer and the gate (authentication and one rate limiter) both gateways of a process
/// share; the limiter shares its counts with every other gateway through the tenants service.
fn gateway_auth(
    keys: &Keys,
    cfg: &Config,
    upstreams: &worktruck_gateway::Upstreams,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<(Signer, worktruck_gateway::Gate)> {
    let signer = keys.signer.clone().context("the gateway needs context.signing_key or secret_key")?;
    let auth = worktruck_gateway::auth_chain(upstreams, &signer, &cfg.auth, &cfg.outbound)?;
    let limiter = Arc::new(worktruck_gateway::Limiter::new(cfg.auth.enterprise));
    let tenants = upstreams
        .get(worktruck_tenants::GRPC_NAME)
        .context("the gateway needs the tenants service")?
        .clone();
    tasks.background.push(limiter.clone().spawn_sync(tenants, signer.clone(), stopped(shutdown)));
    Ok((signer, worktruck_gateway::Gate::new(auth, limiter)))
}

#[allow(clippy::too_many_arguments)]
async fn start_gateway(
    cfg: &Config,
    keys: &Keys,
    gate: worktruck_gateway::Gate,
    upstreams: worktruck_gateway::Upstreams,
    checks: Vec<ops::Check>,
    listener: TcpListener,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::load(worktruck_proto::DESCRIPTOR_SET)?);
    let signer = keys.signer.clone().context("the gateway needs context.signing_key or secret_key")?;
    let gw = worktruck_gateway::router_with_gate(
        registry,
        upstreams,
        signer,
        gate,
        worktruck_gateway::GatewayConfig {
            body_limit_bytes: cfg.rest.body_limit_bytes,
            auth: cfg.auth.clone(),
            outbound: cfg.outbound.clone(),
        },
    )?;
    let app = ops::router(checks).merge(gw);
    let stop = stopped(shutdown);
    tasks.servers.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(ops::nodelay(listener), app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "rest gateway failed");
        }
    }));
    Ok(())
}

/// Starts the MCP gateway on `listener`; its public base URL is `mcp.public_url`, else the bound
/// address.
fn start_mcp_gateway(
    cfg: &Config,
    signer: Signer,
    gate: worktruck_gateway::Gate,
    upstreams: worktruck_gateway::Upstreams,
    listener: TcpListener,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let registry = Arc::new(Registry::load(worktruck_proto::DESCRIPTOR_SET)?);
    let base = if cfg.mcp.public_url.is_empty() {
        format!("http://{addr}")
    } else {
        cfg.mcp.public_url.trim_end_matches('/').to_owned()
    };
    let mut mcp_cfg = worktruck_mcp_gateway::McpConfig::new(base);
    mcp_cfg.oidc_issuer = Some(cfg.auth.oidc.issuer.clone()).filter(|i| !i.is_empty());
    mcp_cfg.body_limit_bytes = cfg.mcp.body_limit_bytes;
    let app = worktruck_mcp_gateway::router(registry, upstreams, signer, gate, mcp_cfg)?;
    let stop = stopped(shutdown);
    tasks.servers.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(ops::nodelay(listener), app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "mcp gateway failed");
        }
    }));
    Ok(addr)
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())
        .with_context(|| format!("bad upstream url {url}"))?
        .connect_timeout(Duration::from_secs(3))
        .connect_lazy())
}

/// Starts everything in one process: every service on a loopback port, the REST gateway on
/// `cfg.rest.addr`. On an empty database, creates the first tenant.
pub async fn start_dev(cfg: Config) -> anyhow::Result<Running> {
    let keys = keys(&cfg, true)?;
    let (tx, rx) = watch::channel(false);
    let mut tasks = Tasks::default();
    let bus = bus(&cfg, &rx, &mut tasks).await?;
    let mut dbs = Vec::new();
    let mut upstreams = worktruck_gateway::Upstreams::new();
    let mut checks = Vec::new();
    for service in SERVICES {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let db = start_service(&cfg, service, &keys, &bus, listener, &rx, &mut tasks).await?;
        let grpc_name = match *service {
            worktruck_tenants::SERVICE => worktruck_tenants::GRPC_NAME,
            _ => worktruck_contacts::GRPC_NAME,
        };
        upstreams.insert(grpc_name, channel(&format!("http://{addr}"))?);
        checks.push(ops::db_check(&format!("{service}.database"), db.clone()));
        dbs.push(db);
    }
    checks.push(ops::bus_check(bus.clone()));
    let (first_tenant, first_key) = first_start(&cfg, &dbs[0], &keys).await?;
    let listener = TcpListener::bind(cfg.rest.addr)
        .await
        .with_context(|| format!("cannot listen on {} (is another Worktruck running?)", cfg.rest.addr))?;
    let rest_addr = listener.local_addr()?;
    let mcp_listener = TcpListener::bind(cfg.mcp.addr)
        .await
        .with_context(|| format!("cannot listen on {} (is another Worktruck running?)", cfg.mcp.addr))?;
    let (signer, gate) = gateway_auth(&keys, &cfg, &upstreams, &rx, &mut tasks)?;
    let mcp_addr = start_mcp_gateway(&cfg, signer, gate.clone(), upstreams.clone(), mcp_listener, &rx, &mut tasks)?;
    start_gateway(&cfg, &keys, gate, upstreams, checks, listener, &rx, &mut tasks).await?;
    Ok(Running { rest_addr: Some(rest_addr), mcp_addr: Some(mcp_addr), grpc_addr: None, first_key, first_tenant, shutdown: tx, servers: tasks.servers, tasks: tasks.background, dbs })
}

/// Creates the first tenant (enterprise plan) when the tenants database has none.
async fn first_start(cfg: &Config, tenants_db: &Db, keys: &Keys) -> anyhow::Result<(Option<String>, Option<String>)> {
    let mut tx = tenants_db.begin(Scope::System, false).await?;
    let count: i64 = worktruck_kit::on_tx!(&mut tx, c => sqlx::query_scalar("SELECT COUNT(*) FROM tenants").fetch_one(c).await)?;
    drop(tx);
    if count > 0 {
        return Ok((None, None));
    }
    let out = worktruck_tenants::create_tenant(
        tenants_db,
        &keys.pepper,
        "default",
        // The first tenant of a self-hosted Worktruck is its operator's: enterprise limits
        // (from `[auth.enterprise]`), not the free trial's 30 requests a minute.
        worktruck_proto::tenants::v1::Plan::Enterprise,
        cfg.tenants.default_retention_days,
    )
    .await?;
    Ok((out.tenant.map(|t| t.id), out.api_key.map(|k| k.key)))
}

/// Starts one role, for `worktruck serve <role>`.
pub async fn start_role(cfg: Config, role: Role) -> anyhow::Result<Running> {
    let (tx, rx) = watch::channel(false);
    let mut tasks = Tasks::default();
    match role {
        Role::Tenants | Role::Contacts => {
            let keys = keys(&cfg, false)?;
            let service = if role == Role::Tenants { worktruck_tenants::SERVICE } else { worktruck_contacts::SERVICE };
            let bus = bus(&cfg, &rx, &mut tasks).await?;
            let listener = TcpListener::bind(cfg.grpc.addr).await.with_context(|| format!("listen on {}", cfg.grpc.addr))?;
            let grpc_addr = listener.local_addr()?;
            let db = start_service(&cfg, service, &keys, &bus, listener, &rx, &mut tasks).await?;
            let admin = TcpListener::bind(cfg.admin.addr).await.with_context(|| format!("listen on {}", cfg.admin.addr))?;
            let app = ops::router(vec![ops::db_check("database", db.clone()), ops::bus_check(bus.clone())]);
            let stop = stopped(&rx);
            tasks.servers.push(tokio::spawn(async move {
                let _ = axum::serve(ops::nodelay(admin), app).with_graceful_shutdown(stop).await;
            }));
            Ok(Running { rest_addr: None, mcp_addr: None, grpc_addr: Some(grpc_addr), first_key: None, first_tenant: None, shutdown: tx, servers: tasks.servers, tasks: tasks.background, dbs: vec![db] })
        }
        Role::Gateway => {
            let keys = keys(&cfg, true)?;
            let mut upstreams = worktruck_gateway::Upstreams::new();
            upstreams.insert(worktruck_tenants::GRPC_NAME, channel(&cfg.services.tenants)?);
            upstreams.insert(worktruck_contacts::GRPC_NAME, channel(&cfg.services.contacts)?);
            let listener = TcpListener::bind(cfg.rest.addr).await.with_context(|| format!("listen on {}", cfg.rest.addr))?;
            let rest_addr = listener.local_addr()?;
            let checks = vec![
                ops::grpc_check("tenants", channel(&cfg.services.tenants)?, worktruck_tenants::GRPC_NAME),
                ops::grpc_check("contacts", channel(&cfg.services.contacts)?, worktruck_contacts::GRPC_NAME),
            ];
            let (_, gate) = gateway_auth(&keys, &cfg, &upstreams, &rx, &mut tasks)?;
            start_gateway(&cfg, &keys, gate, upstreams, checks, listener, &rx, &mut tasks).await?;
            Ok(Running { rest_addr: Some(rest_addr), mcp_addr: None, grpc_addr: None, first_key: None, first_tenant: None, shutdown: tx, servers: tasks.servers, tasks: tasks.background, dbs: vec![] })
        }
        Role::McpGateway => {
            let keys = keys(&cfg, true)?;
            let mut upstreams = worktruck_gateway::Upstreams::new();
            upstreams.insert(worktruck_tenants::GRPC_NAME, channel(&cfg.services.tenants)?);
            upstreams.insert(worktruck_contacts::GRPC_NAME, channel(&cfg.services.contacts)?);
            let listener = TcpListener::bind(cfg.mcp.addr).await.with_context(|| format!("listen on {}", cfg.mcp.addr))?;
            let (signer, gate) = gateway_auth(&keys, &cfg, &upstreams, &rx, &mut tasks)?;
            let mcp_addr = start_mcp_gateway(&cfg, signer, gate, upstreams, listener, &rx, &mut tasks)?;
            let checks = vec![
                ops::grpc_check("tenants", channel(&cfg.services.tenants)?, worktruck_tenants::GRPC_NAME),
                ops::grpc_check("contacts", channel(&cfg.services.contacts)?, worktruck_contacts::GRPC_NAME),
            ];
            let admin = TcpListener::bind(cfg.admin.addr).await.with_context(|| format!("listen on {}", cfg.admin.addr))?;
            let app = ops::router(checks);
            let stop = stopped(&rx);
            tasks.servers.push(tokio::spawn(async move {
                let _ = axum::serve(ops::nodelay(admin), app).with_graceful_shutdown(stop).await;
            }));
            Ok(Running { rest_addr: None, mcp_addr: Some(mcp_addr), grpc_addr: None, first_key: None, first_tenant: None, shutdown: tx, servers: tasks.servers, tasks: tasks.background, dbs: vec![] })
        }
    }
}

/// Applies migrations for `service` (or all) and returns.
pub async fn migrate(cfg: &Config, service: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for s in SERVICES {
        if service.is_none_or(|x| x == *s) {
            let db = open_service_db(cfg, s).await?;
            db.close().await;
            done.push((*s).to_owned());
        }
    }
    if done.is_empty() {
        anyhow::bail!("unknown service {:?}: use one of {}", service.unwrap_or_default(), SERVICES.join(", "));
    }
    Ok(done)
}

/// The API-key pepper for `cfg` (admin commands write keys the servers must accept).
pub fn pepper(cfg: &Config) -> anyhow::Result<[u8; 32]> {
    Ok(keys(cfg, false)?.pepper)
}
