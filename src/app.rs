//! Starting Worktruck: everything in one process (`dev`) or one role per process (`serve`).
//! All-in-one still talks gRPC between gateway and services (over in-process pipes instead of
//! sockets), so the code path under test is the production one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use std::collections::BTreeMap;
use tonic::transport::Channel;
use worktruck_kit::bus::Bus;
use worktruck_kit::config::{Config, Secrets, decode_key32};
use worktruck_kit::context::{Signer, Verifier};
use worktruck_kit::db::{Db, DbOptions, Scope};
use worktruck_kit::ops;
use worktruck_kit::outbox::Relay;
use worktruck_kit::service::{ServiceContext, ServiceDef, Shutdown, WorkerContext, WorkerDef};
use worktruck_proto::registry::Registry;

use crate::services;

/// One role of `worktruck serve`: a service of the table, or a gateway.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// A service (its name is the role's).
    Service(&'static ServiceDef),
    /// A worker a service declares (`ServiceDef::workers`), e.g. `agent-worker`.
    Worker(&'static ServiceDef, &'static WorkerDef),
    /// The REST gateway.
    Gateway,
    /// The MCP gateway.
    McpGateway,
}

impl Role {
    /// The role's name, as `worktruck serve` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Service(def) => def.name,
            Role::Worker(_, worker) => worker.role,
            Role::Gateway => "gateway",
            Role::McpGateway => "mcp-gateway",
        }
    }
}

/// Every role's name: the services of the table, their workers, then the gateways.
pub fn role_names() -> Vec<&'static str> {
    let workers = services::TABLE.iter().flat_map(|d| d.workers.iter().map(|w| w.role));
    services::TABLE.iter().map(|d| d.name).chain(workers).chain(["gateway", "mcp-gateway"]).collect()
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Role> {
        match s {
            "gateway" => Ok(Role::Gateway),
            "mcp-gateway" => Ok(Role::McpGateway),
            name => services::find(name)
                .map(Role::Service)
                .or_else(|| services::find_worker(name).map(|(def, w)| Role::Worker(def, w)))
                .ok_or_else(|| anyhow::anyhow!("unknown role {name:?}: the roles are {}", role_names().join(", "))),
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
    /// Where `dev` also serves each service's gRPC over TCP (`dev --grpc-addr`), by service.
    pub grpc_addrs: Vec<(&'static str, SocketAddr)>,
    /// Where `/health`, `/ready` and `/metrics` are served (`admin.addr`): every role, and dev.
    pub admin_addr: Option<SocketAddr>,
    /// The first tenant's API key, when this start created it.
    pub first_key: Option<String>,
    /// The first tenant's id, when this start created it.
    pub first_tenant: Option<String>,
    /// Stops the gateways' listeners first: they stop accepting and drain in-flight requests.
    front: watch::Sender<bool>,
    /// Then everything else: services, relays, background work.
    shutdown: watch::Sender<bool>,
    /// The gateways' HTTP servers.
    front_servers: Vec<JoinHandle<()>>,
    /// Servers (gRPC, admin HTTP): one ending, like a gateway's, means the process can no
    /// longer serve.
    servers: Vec<JoinHandle<()>>,
    /// Background work (relays, stream declaration).
    tasks: Vec<JoinHandle<()>>,
    dbs: Vec<Db>,
}

impl Running {
    fn new(tasks: Tasks, shutdown: watch::Sender<bool>, dbs: Vec<Db>) -> Self {
        Running {
            rest_addr: None,
            mcp_addr: None,
            grpc_addr: None,
            grpc_addrs: Vec::new(),
            admin_addr: None,
            first_key: None,
            first_tenant: None,
            front: tasks.front_tx,
            shutdown,
            front_servers: tasks.front,
            servers: tasks.servers,
            tasks: tasks.background,
            dbs,
        }
    }

    /// Stops in order: the gateways stop accepting and finish the requests they hold (their
    /// calls to services still work meanwhile), then services, relays and background work stop.
    pub async fn stop(self) {
        let _ = self.front.send(true);
        for t in self.front_servers {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
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
        if self.servers.is_empty() && self.front_servers.is_empty() {
            return std::future::pending().await;
        }
        let (_, index, _) = futures::future::select_all(self.servers.iter_mut().chain(self.front_servers.iter_mut())).await;
        // A finished handle must not be awaited again by `stop`.
        if index < self.servers.len() {
            drop(self.servers.remove(index));
        } else {
            drop(self.front_servers.remove(index - self.servers.len()));
        }
    }
}

/// What a start spawns: the gateways' HTTP servers (stopped first, on their own signal),
/// other servers, whose end means the process can no longer serve, and background work that
/// may finish on its own.
struct Tasks {
    front: Vec<JoinHandle<()>>,
    front_tx: watch::Sender<bool>,
    front_stop: Shutdown,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Default for Tasks {
    fn default() -> Self {
        let (front_tx, front_stop) = Shutdown::new();
        Tasks { front: Vec::new(), front_tx, front_stop, servers: Vec::new(), background: Vec::new() }
    }
}

/// The derived keys every role needs.
struct Keys {
    secrets: Option<Secrets>,
    signer: Option<Signer>,
    verifier: Verifier,
    /// The key file this process created just now (no `secret_key`, no file yet), if any.
    created: Option<std::path::PathBuf>,
}

const SIGNING_PURPOSE: &str = "worktruck/context-signing/v1";

fn keys(cfg: &Config, need_signer: bool) -> anyhow::Result<Keys> {
    use secrecy::ExposeSecret;
    let key_file = cfg.data_dir.join("master.key");
    let file_existed = key_file.exists();
    // A process that only verifies (a service given `context.public_key`) never makes a key
    // file of its own: a fresh random key there would sign and hash nothing anyone accepts.
    let secrets: Option<Secrets> = if cfg.secret_key.is_some() || need_signer || cfg.context.public_key.is_none() {
        Some(cfg.master_secret()?)
    } else {
        cfg.master_secret_if_present()?
    };
    let created = (cfg.secret_key.is_none() && !file_existed && key_file.exists()).then_some(key_file);
    let signer = match &cfg.context.signing_key {
        Some(k) => Some(Signer::from_seed(decode_key32(k.expose_secret(), "context.signing_key")?)),
        None => secrets.as_ref().map(|s| Signer::from_seed(s.derive(SIGNING_PURPOSE))),
    };
    let verifier = match &cfg.context.public_key {
        Some(k) => Verifier::from_public_key(decode_key32(k, "context.public_key")?)?,
        None => signer.as_ref().context("no context key: set context.public_key or secret_key")?.verifier(),
    };
    Ok(Keys { secrets, signer, verifier, created })
}

/// Refuses to go on when this process's master secret is not the one `db` was first started
/// with (recording it on first start): keys it minted and contexts it signed would be refused
/// everywhere else. A key file this process has just created is removed again.
async fn check_master_key(cfg: &Config, keys: &Keys, db: &Db, service: &str) -> anyhow::Result<()> {
    let Some(secrets) = &keys.secrets else { return Ok(()) };
    let mine = secrets.fingerprint();
    let recorded = db.master_fingerprint(&mine).await.with_context(|| format!("checking the {service} database's master key"))?;
    if recorded == mine {
        return Ok(());
    }
    let mut source = cfg.master_secret_source();
    if let Some(created) = &keys.created {
        let _ = std::fs::remove_file(created);
        source.push_str(", just created because it did not exist; removed again");
    }
    anyhow::bail!(
        "this process's master secret (from {source}; fingerprint {mine}) is not the one the {service} database \
         was first started with (fingerprint {recorded}), so API keys and contexts it made would be refused \
         everywhere else. Give every process the same key: set WORKTRUCK_SECRET_KEY (one Secret shared by every \
         role), or run with --data-dir pointing at the server's data folder so it reads the server's master.key."
    )
}

/// Database options for a service under `cfg`.
pub fn db_options(cfg: &Config, service: &str) -> DbOptions {
    DbOptions {
        url: cfg.database_url(),
        data_dir: cfg.data_dir.clone(),
        service: service.to_owned(),
        max_connections: cfg.database.max_connections,
        app_role: cfg.database.app_role.clone(),
        acquire_timeout: Duration::from_millis(cfg.database.acquire_timeout_ms),
        sqlite_synchronous: cfg.database.sqlite_synchronous,
    }
}

/// Connects and migrates one service's database.
pub async fn open_service_db(cfg: &Config, def: &ServiceDef) -> anyhow::Result<Db> {
    let (pg, sqlite) = (def.migrators)();
    Db::connect_and_migrate(&db_options(cfg, def.name), pg, sqlite)
        .await
        .with_context(|| format!("opening the {} database", def.name))
}

async fn bus(cfg: &Config, shutdown: &Shutdown, tasks: &mut Tasks) -> anyhow::Result<Bus> {
    if cfg.nats.url.is_empty() {
        return Ok(Bus::memory());
    }
    let bus = Bus::nats(&cfg.nats.url).await?;
    // NATS may be down at start: keep trying to declare the stream in the background; the
    // outbox holds events meanwhile.
    let b = bus.clone();
    let stop = shutdown.wait();
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

/// Starts one service on `listener`: its database, outbox relay, gRPC server and background
/// work, built by its definition from what every service is handed.
#[allow(clippy::too_many_arguments)]
async fn start_service(
    cfg: &Arc<Config>,
    def: &'static ServiceDef,
    keys: &Keys,
    bus: &Bus,
    clients: BTreeMap<&'static str, Channel>,
    peers: BTreeMap<&'static str, worktruck_kit::links::Peer>,
    listener: ops::GrpcListener,
    shutdown: &Shutdown,
    tasks: &mut Tasks,
) -> anyhow::Result<(Db, Relay)> {
    start_service_exposed(cfg, def, keys, bus, clients, peers, listener, None, shutdown, tasks).await
}

/// [`start_service`], also serving the same routes on `exposed` (dev's `--grpc-addr`).
#[allow(clippy::too_many_arguments)]
async fn start_service_exposed(
    cfg: &Arc<Config>,
    def: &'static ServiceDef,
    keys: &Keys,
    bus: &Bus,
    clients: BTreeMap<&'static str, Channel>,
    peers: BTreeMap<&'static str, worktruck_kit::links::Peer>,
    listener: ops::GrpcListener,
    exposed: Option<TcpListener>,
    shutdown: &Shutdown,
    tasks: &mut Tasks,
) -> anyhow::Result<(Db, Relay)> {
    let db = open_service_db(cfg, def).await?;
    check_master_key(cfg, keys, &db, def.name).await?;
    let relay = Relay::new(db.clone(), bus.clone()).for_service(def.name);
    let ctx = ServiceContext::new(
        def,
        cfg.clone(),
        db.clone(),
        keys.verifier.clone(),
        relay.clone(),
        bus.clone(),
        keys.secrets.clone(),
        clients,
        peers,
        shutdown.clone(),
    );
    let built = worktruck_kit::service::build(def, ctx).with_context(|| format!("starting the {} service", def.name))?;
    tasks.background.push(tokio::spawn(relay.clone().run(shutdown.wait())));
    for (name, task) in built.tasks {
        let service = def.name;
        tasks.background.push(tokio::spawn(async move {
            task.await;
            tracing::debug!(service, task = %name, "background task ended");
        }));
    }
    let stop = shutdown.wait();
    let verifier = keys.verifier.clone();
    // Mutual TLS between pods; in-process pipes need none.
    let tls = match &listener {
        ops::GrpcListener::Tcp(_) => cfg.grpc.tls.server()?,
        ops::GrpcListener::InProcess(_) => None,
    };
    let served = def.served_services();
    if let Some(exposed) = exposed {
        let (routes, served, verifier, tls) = (built.routes.clone(), served.clone(), verifier.clone(), cfg.grpc.tls.server()?);
        let stop = shutdown.wait();
        tasks.servers.push(tokio::spawn(async move {
            if let Err(e) = ops::serve_grpc(ops::GrpcListener::Tcp(exposed), routes, &served, verifier, tls, stop).await {
                tracing::error!(service = def.name, error = %e, "grpc server (TCP) failed");
            }
        }));
    }
    tasks.servers.push(tokio::spawn(async move {
        if let Err(e) = ops::serve_grpc(listener, built.routes, &served, verifier, tls, stop).await {
            tracing::error!(service = def.name, error = %e, "grpc server failed");
        }
    }));
    Ok((db, relay))
}

/// Starts `worker` of `def` on the service's database `db` (and its relay), calling the
/// services of `upstreams` with contexts `keys` signs.
#[allow(clippy::too_many_arguments)]
fn start_worker(
    cfg: &Arc<Config>,
    def: &'static ServiceDef,
    worker: &'static WorkerDef,
    keys: &Keys,
    db: Db,
    relay: Relay,
    bus: &Bus,
    upstreams: worktruck_gateway::Upstreams,
    shutdown: &Shutdown,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let signer = keys.signer.clone().with_context(|| format!("the {} role needs context.signing_key or secret_key", worker.role))?;
    let service = ServiceContext::new(
        def,
        cfg.clone(),
        db,
        keys.verifier.clone(),
        relay,
        bus.clone(),
        keys.secrets.clone(),
        BTreeMap::new(),
        BTreeMap::new(),
        shutdown.clone(),
    );
    let built = (worker.build)(WorkerContext { service, signer, upstreams })
        .with_context(|| format!("starting the {} worker", worker.role))?;
    for (name, task) in built {
        let role = worker.role;
        tasks.background.push(tokio::spawn(async move {
            task.await;
            tracing::debug!(worker = role, task = %name, "background task ended");
        }));
    }
    Ok(())
}

/// The gateways' upstream channels: every gRPC service of `defs`, through `channel_of`.
fn upstreams(
    defs: &[&'static ServiceDef],
    mut channel_of: impl FnMut(&'static ServiceDef) -> anyhow::Result<Channel>,
) -> anyhow::Result<worktruck_gateway::Upstreams> {
    let mut upstreams = worktruck_gateway::Upstreams::new();
    for def in defs {
        let channel = channel_of(def)?;
        for grpc in def.grpc_services {
            upstreams.insert(*grpc, channel.clone());
        }
    }
    Ok(upstreams)
}

/// Readiness checks that every gRPC service of `defs` answers SERVING.
fn upstream_checks(defs: &[&'static ServiceDef], upstreams: &worktruck_gateway::Upstreams) -> Vec<ops::Check> {
    defs.iter()
        .flat_map(|def| def.grpc_services.iter().map(move |grpc| (def.name, *grpc)))
        .filter_map(|(name, grpc)| upstreams.get(grpc).map(|c| ops::grpc_check(name, c.clone(), grpc)))
        .collect()
}

/// The descriptor registry restricted to the operations of `defs`.
fn registry(defs: &[&'static ServiceDef]) -> anyhow::Result<Arc<Registry>> {
    let registry = Registry::load(worktruck_proto::DESCRIPTOR_SET)?;
    Ok(Arc::new(registry.retain_services(|s| defs.iter().any(|d| d.grpc_services.contains(&s)))))
}

/// The signer and the gate (authentication and one rate limiter) both gateways of a process
/// share; the limiter shares its counts with every other gateway through the tenants service.
fn gateway_auth(
    keys: &Keys,
    cfg: &Config,
    upstreams: &worktruck_gateway::Upstreams,
    bus: &Bus,
    shutdown: &Shutdown,
    tasks: &mut Tasks,
) -> anyhow::Result<(Signer, worktruck_gateway::Gate)> {
    let signer = keys.signer.clone().context("the gateway needs context.signing_key or secret_key")?;
    // Verified keys and subjects are kept for `auth.principal_cache_seconds`; the tenants
    // service's events drop a tenant's entries on every replica as soon as they arrive.
    let principals = worktruck_gateway::PrincipalCache::new(Duration::from_secs(cfg.auth.principal_cache_seconds));
    tasks.background.push(tokio::spawn(principals.clone().follow(bus.clone(), shutdown.wait())));
    let auth = worktruck_gateway::auth_chain(upstreams, &signer, &cfg.auth, &cfg.outbound, principals)?;
    let limiter = Arc::new(worktruck_gateway::Limiter::new(cfg.auth.enterprise));
    let tenants = upstreams
        .get(worktruck_gateway::TENANTS_SERVICE)
        .context("the gateway needs the tenants service")?
        .clone();
    tasks.background.push(limiter.clone().spawn_sync(tenants, signer.clone(), shutdown.wait()));
    let x402 = worktruck_gateway::x402::X402::from_config(&cfg.auth.x402, &cfg.outbound)?.map(Arc::new);
    Ok((signer, worktruck_gateway::Gate::new(auth, limiter).with_x402(x402)))
}

#[allow(clippy::too_many_arguments)]
fn start_gateway(
    cfg: &Config,
    registry: Arc<Registry>,
    signer: Signer,
    gate: worktruck_gateway::Gate,
    upstreams: worktruck_gateway::Upstreams,
    checks: Vec<ops::Check>,
    listener: TcpListener,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let gw = worktruck_gateway::router_with_gate(
        registry,
        upstreams,
        signer,
        gate,
        worktruck_gateway::GatewayConfig {
            body_limit_bytes: cfg.rest.body_limit_bytes,
            upload_limit_bytes: cfg.rest.upload_limit_bytes,
            auth: cfg.auth.clone(),
            outbound: cfg.outbound.clone(),
            cors_allowed_origins: cfg.rest.cors_allowed_origins.clone(),
            compression: cfg.rest.compression,
            public_url: cfg.rest.public_url.clone(),
        },
    )?;
    let app = ops::router(checks).merge(gw);
    let stop = tasks.front_stop.wait();
    let limits = cfg.rest.limits();
    tasks.front.push(tokio::spawn(async move {
        if let Err(e) = worktruck_kit::serve::serve_http(listener, app, limits, stop).await {
            tracing::error!(error = %e, "rest gateway failed");
        }
    }));
    Ok(())
}

/// Starts the MCP gateway on `listener`; its public base URL is `mcp.public_url`, else the bound
/// address.
#[allow(clippy::too_many_arguments)]
fn start_mcp_gateway(
    cfg: &Config,
    registry: Arc<Registry>,
    signer: Signer,
    gate: worktruck_gateway::Gate,
    upstreams: worktruck_gateway::Upstreams,
    listener: TcpListener,
    bus: &Bus,
    shutdown: &Shutdown,
    tasks: &mut Tasks,
) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let base = if cfg.mcp.public_url.is_empty() {
        format!("http://{addr}")
    } else {
        cfg.mcp.public_url.trim_end_matches('/').to_owned()
    };
    let mut mcp_cfg = worktruck_mcp_gateway::McpConfig::new(base);
    mcp_cfg.oidc_issuer = Some(cfg.auth.oidc.issuer.clone()).filter(|i| !i.is_empty());
    mcp_cfg.body_limit_bytes = cfg.mcp.body_limit_bytes;
    mcp_cfg.allowed_hosts = cfg.mcp.allowed_hosts.clone();
    // Open sessions hear of their tenant's app changes through the apps service's events.
    let changes = worktruck_mcp_gateway::ToolListChanges::new();
    tasks.background.push(tokio::spawn(changes.clone().follow(bus.clone(), shutdown.wait())));
    let app = worktruck_mcp_gateway::router(registry, upstreams, signer, gate, mcp_cfg, changes)?;
    let stop = tasks.front_stop.wait();
    let limits = cfg.mcp.limits();
    tasks.front.push(tokio::spawn(async move {
        if let Err(e) = worktruck_kit::serve::serve_http(listener, app, limits, stop).await {
            tracing::error!(error = %e, "mcp gateway failed");
        }
    }));
    Ok(addr)
}

/// Serves `/health`, `/ready` and `/metrics` on `cfg.admin.addr`: the only port with
/// `/metrics` (the public ones answer it 404). Returns the bound address.
async fn start_admin(cfg: &Config, checks: Vec<ops::Check>, shutdown: &Shutdown, tasks: &mut Tasks) -> anyhow::Result<SocketAddr> {
    let admin = TcpListener::bind(cfg.admin.addr)
        .await
        .with_context(|| format!("cannot listen on {} for /health, /ready and /metrics (admin.addr)", cfg.admin.addr))?;
    let addr = admin.local_addr()?;
    let app = ops::admin_router(checks);
    let stop = shutdown.wait();
    tasks.servers.push(tokio::spawn(async move {
        let _ = worktruck_kit::serve::serve_http(admin, app, worktruck_kit::serve::ConnLimits::admin(), stop).await;
    }));
    Ok(addr)
}

/// A lazy channel to a service at `url`: over mutual TLS (`https://`) when `grpc.tls` is set,
/// plain HTTP/2 otherwise; a URL whose scheme disagrees with the setting is an error.
fn channel(cfg: &Config, url: &str) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(url.to_owned())
        .with_context(|| format!("bad upstream url {url}"))?
        .connect_timeout(Duration::from_secs(3));
    match cfg.grpc.tls.client()? {
        Some(tls) => {
            anyhow::ensure!(url.starts_with("https://"), "{url}: with grpc.tls set, service addresses must be https:// URLs");
            endpoint = endpoint.tls_config(tls).with_context(|| format!("TLS for {url}"))?;
        }
        None => anyhow::ensure!(!url.starts_with("https://"), "{url} is https:// but grpc.tls is not set"),
    }
    Ok(endpoint.connect_lazy())
}

/// Starts everything in one process: every enabled service of the table on a loopback port,
/// the REST gateway on `cfg.rest.addr` and the MCP gateway on `cfg.mcp.addr`. On an empty
/// database, creates the first tenant.
pub async fn start_dev(cfg: Config) -> anyhow::Result<Running> {
    start_dev_with(cfg, None).await
}

/// [`start_dev`], each service also serving its gRPC on TCP for internal clients (grpcurl, a
/// service of one's own): the first in the service table on `grpc`, the next on the port after
/// it, and so on (each on a free port when `grpc`'s is 0), with the same mTLS settings as a role.
pub async fn start_dev_with(cfg: Config, grpc: Option<SocketAddr>) -> anyhow::Result<Running> {
    services::check_config(&cfg)?;
    worktruck_kit::telemetry::install_metrics(&cfg.metrics.buckets);
    let defs = services::enabled(&cfg)?;
    let keys = keys(&cfg, true)?;
    let (tx, shutdown) = Shutdown::new();
    let mut tasks = Tasks::default();
    let bus = bus(&cfg, &shutdown, &mut tasks).await?;
    // Every connection first, so that each service is handed channels to those it calls. They
    // are in-process pipes: the same gRPC requests as between pods, without sockets.
    let mut listeners = Vec::new();
    let mut channels: BTreeMap<&'static str, Channel> = BTreeMap::new();
    for def in &defs {
        let (channel, listener) = ops::in_process_grpc();
        channels.insert(def.name, channel);
        listeners.push(listener);
    }
    let cfg = Arc::new(cfg);
    let mut dbs = Vec::new();
    let mut checks = Vec::new();
    let mut tenants_db = None;
    let mut grpc_addrs = Vec::new();
    for (i, (def, listener)) in defs.iter().copied().zip(listeners).enumerate() {
        let clients = def.calls.iter().map(|c| (*c, channels[c].clone())).collect();
        let peers = worktruck_kit::service::peers(def, &defs, &channels);
        let exposed = match grpc {
            None => None,
            Some(base) => {
                let port = if base.port() == 0 { 0 } else { base.port().checked_add(u16::try_from(i)?).context("--grpc-addr: ports past 65535")? };
                let addr = SocketAddr::new(base.ip(), port);
                let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for the {} service's gRPC", def.name))?;
                grpc_addrs.push((def.name, l.local_addr()?));
                Some(l)
            }
        };
        let (db, relay) = start_service_exposed(&cfg, def, &keys, &bus, clients, peers, listener, exposed, &shutdown, &mut tasks).await?;
        checks.push(ops::db_check(&format!("{}.database", def.name), db.clone()));
        if def.name == services::tenants().name {
            tenants_db = Some(db.clone());
        }
        // One replica of each of the service's workers, in process.
        for worker in def.workers {
            let upstreams = upstreams(&defs, |d| Ok(channels[d.name].clone()))?;
            start_worker(&cfg, def, worker, &keys, db.clone(), relay.clone(), &bus, upstreams, &shutdown, &mut tasks)?;
        }
        dbs.push(db);
    }
    checks.push(ops::bus_check(bus.clone()));
    let tenants_db = tenants_db.context("the tenants service is not enabled")?;
    let (first_tenant, first_key) = first_start(&cfg, &tenants_db, &keys).await?;
    let upstreams = upstreams(&defs, |def| Ok(channels[def.name].clone()))?;
    let registry = registry(&defs)?;
    let listener = TcpListener::bind(cfg.rest.addr)
        .await
        .with_context(|| format!("cannot listen on {} (is another Worktruck running?)", cfg.rest.addr))?;
    let rest_addr = listener.local_addr()?;
    let mcp_listener = TcpListener::bind(cfg.mcp.addr)
        .await
        .with_context(|| format!("cannot listen on {} (is another Worktruck running?)", cfg.mcp.addr))?;
    let admin_addr = start_admin(&cfg, checks.clone(), &shutdown, &mut tasks).await?;
    let (signer, gate) = gateway_auth(&keys, &cfg, &upstreams, &bus, &shutdown, &mut tasks)?;
    let mcp_addr = start_mcp_gateway(&cfg, registry.clone(), signer.clone(), gate.clone(), upstreams.clone(), mcp_listener, &bus, &shutdown, &mut tasks)?;
    start_gateway(&cfg, registry, signer, gate, upstreams, checks, listener, &mut tasks)?;
    Ok(Running {
        rest_addr: Some(rest_addr),
        mcp_addr: Some(mcp_addr),
        admin_addr: Some(admin_addr),
        grpc_addrs,
        first_key,
        first_tenant,
        ..Running::new(tasks, tx, dbs)
    })
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
        &pepper_of(keys)?,
        "default",
        // The first tenant of a self-hosted Worktruck is its operator's: enterprise limits
        // (from `[auth.enterprise]`), not the free trial's 30 requests a minute.
        worktruck_proto::tenants::v1::Plan::Enterprise,
        cfg.tenants.default_retention_days,
    )
    .await?;
    Ok((out.tenant.map(|t| t.id), out.api_key.map(|k| k.key)))
}

/// Starts one role, for `worktruck serve <role>`: a service of the table (its gRPC server on
/// `grpc.addr`, `/health` `/ready` `/metrics` on `admin.addr`), or a gateway in front of every
/// enabled service at its `[services]` address.
pub async fn start_role(cfg: Config, role: Role) -> anyhow::Result<Running> {
    services::check_config(&cfg)?;
    worktruck_kit::telemetry::install_metrics(&cfg.metrics.buckets);
    let (tx, shutdown) = Shutdown::new();
    let mut tasks = Tasks::default();
    let running = |tasks: Tasks, dbs: Vec<Db>| Running::new(tasks, tx, dbs);
    match role {
        Role::Service(def) => {
            let keys = keys(&cfg, false)?;
            let bus = bus(&cfg, &shutdown, &mut tasks).await?;
            let mut clients = BTreeMap::new();
            let mut checks = Vec::new();
            for callee in def.calls {
                let callee = services::lookup(callee)?;
                let ch = channel(&cfg, &services::address(&cfg, callee)?)?;
                checks.extend(callee.grpc_services.iter().map(|g| ops::grpc_check(callee.name, ch.clone(), g)));
                clients.insert(callee.name, ch);
            }
            // Links reach every other enabled service with an address, lazily: none of them is
            // needed to start or to be ready.
            let mut reachable = BTreeMap::new();
            for other in services::enabled(&cfg)? {
                if other.name != def.name
                    && let Ok(address) = services::address(&cfg, other)
                {
                    reachable.insert(other.name, channel(&cfg, &address)?);
                }
            }
            let peers = worktruck_kit::service::peers(def, &services::enabled(&cfg)?, &reachable);
            if cfg.nats.url.is_empty() && !def.link_targets.is_empty() {
                tracing::warn!(
                    service = def.name,
                    "no nats.url: links made by other processes never reach this one, nor does a deletion reach theirs"
                );
            }
            let listener = TcpListener::bind(cfg.grpc.addr).await.with_context(|| format!("listen on {}", cfg.grpc.addr))?;
            let grpc_addr = listener.local_addr()?;
            let cfg = Arc::new(cfg);
            let (db, _) = start_service(&cfg, def, &keys, &bus, clients, peers, listener.into(), &shutdown, &mut tasks).await?;
            checks.insert(0, ops::db_check("database", db.clone()));
            checks.push(ops::bus_check(bus.clone()));
            let admin_addr = start_admin(&cfg, checks, &shutdown, &mut tasks).await?;
            Ok(Running { grpc_addr: Some(grpc_addr), admin_addr: Some(admin_addr), ..running(tasks, vec![db]) })
        }
        Role::Worker(def, worker) => {
            let keys = keys(&cfg, true)?;
            let bus = bus(&cfg, &shutdown, &mut tasks).await?;
            // Every other enabled service with an address: what the worker may call.
            let reachable: Vec<_> = services::enabled(&cfg)?
                .into_iter()
                .filter(|d| d.name != def.name && services::address(&cfg, d).is_ok())
                .collect();
            let upstreams = upstreams(&reachable, |d| channel(&cfg, &services::address(&cfg, d)?))?;
            let cfg = Arc::new(cfg);
            let db = open_service_db(&cfg, def).await?;
            check_master_key(&cfg, &keys, &db, def.name).await?;
            let relay = Relay::new(db.clone(), bus.clone()).for_service(def.name);
            tasks.background.push(tokio::spawn(relay.clone().run(shutdown.wait())));
            start_worker(&cfg, def, worker, &keys, db.clone(), relay, &bus, upstreams, &shutdown, &mut tasks)?;
            let checks = vec![ops::db_check("database", db.clone()), ops::bus_check(bus.clone())];
            let admin_addr = start_admin(&cfg, checks, &shutdown, &mut tasks).await?;
            Ok(Running { admin_addr: Some(admin_addr), ..running(tasks, vec![db]) })
        }
        Role::Gateway | Role::McpGateway => {
            let keys = keys(&cfg, true)?;
            let defs = services::enabled(&cfg)?;
            let upstreams = upstreams(&defs, |def| channel(&cfg, &services::address(&cfg, def)?))?;
            let checks = upstream_checks(&defs, &upstreams);
            let registry = registry(&defs)?;
            if cfg.nats.url.is_empty() && cfg.auth.principal_cache_seconds > 0 {
                tracing::warn!(
                    seconds = cfg.auth.principal_cache_seconds,
                    "no nats.url: revoked or rotated keys reach this gateway only when its cache entry expires"
                );
            }
            let bus = bus(&cfg, &shutdown, &mut tasks).await?;
            let (signer, gate) = gateway_auth(&keys, &cfg, &upstreams, &bus, &shutdown, &mut tasks)?;
            if matches!(role, Role::Gateway) {
                let listener = TcpListener::bind(cfg.rest.addr).await.with_context(|| format!("listen on {}", cfg.rest.addr))?;
                let rest_addr = listener.local_addr()?;
                let admin_addr = start_admin(&cfg, checks.clone(), &shutdown, &mut tasks).await?;
                start_gateway(&cfg, registry, signer, gate, upstreams, checks, listener, &mut tasks)?;
                Ok(Running { rest_addr: Some(rest_addr), admin_addr: Some(admin_addr), ..running(tasks, vec![]) })
            } else {
                let listener = TcpListener::bind(cfg.mcp.addr).await.with_context(|| format!("listen on {}", cfg.mcp.addr))?;
                let mcp_addr = start_mcp_gateway(&cfg, registry, signer, gate, upstreams, listener, &bus, &shutdown, &mut tasks)?;
                let admin_addr = start_admin(&cfg, checks, &shutdown, &mut tasks).await?;
                Ok(Running { mcp_addr: Some(mcp_addr), admin_addr: Some(admin_addr), ..running(tasks, vec![]) })
            }
        }
    }
}

/// Applies the migrations of `service` (or of every service of the table) and returns the
/// names migrated; an unknown name is an error that lists the services.
pub async fn migrate(cfg: &Config, service: Option<&str>) -> anyhow::Result<Vec<String>> {
    services::check_config(cfg)?;
    let defs = match service {
        Some(name) => vec![services::lookup(name)?],
        None => services::TABLE.to_vec(),
    };
    let mut done = Vec::new();
    for def in defs {
        let db = open_service_db(cfg, def).await?;
        db.close().await;
        done.push(def.name.to_owned());
    }
    Ok(done)
}

fn pepper_of(keys: &Keys) -> anyhow::Result<[u8; 32]> {
    let secrets = keys.secrets.as_ref().context("API keys need the master secret: set WORKTRUCK_SECRET_KEY")?;
    Ok(secrets.derive(worktruck_tenants::PEPPER_PURPOSE))
}

/// Opens the tenants database for an operator command, with the API-key pepper, after checking
/// that this process holds the master secret the database was first started with (so a key it
/// prints is one the servers accept).
pub async fn open_tenants_for_admin(cfg: &Config) -> anyhow::Result<(Db, [u8; 32])> {
    let keys = keys(cfg, false)?;
    let pepper = pepper_of(&keys)?;
    let def = services::tenants();
    let db = open_service_db(cfg, def).await?;
    if let Err(e) = check_master_key(cfg, &keys, &db, def.name).await {
        db.close().await;
        return Err(e);
    }
    Ok((db, pepper))
}
