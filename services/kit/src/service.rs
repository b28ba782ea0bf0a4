//! What a service is to the binary that runs it. Each service crate exports one
//! [`ServiceDef`]; the binary keeps them in one table (`src/services.rs`) and derives from that
//! table its roles, its all-in-one mode, migrations, the gateways' upstreams, readiness and the
//! test fixtures. Nothing outside the table names a service one by one.
//!
//! A plain struct of function pointers rather than a trait: the table is a `static` list of
//! `&ServiceDef` with no generics or boxing, a definition is one `pub static` a reviewer reads
//! top to bottom, and every field is data the binary can inspect (names, dependencies) without
//! building the service.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use sqlx::migrate::Migrator;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::bus::Bus;
use crate::config::{Config, Secrets};
use crate::context::Verifier;
use crate::db::Db;
use crate::outbox::Relay;

/// One service of Worktruck, as its crate exports it (`pub static DEFINITION: ServiceDef`).
#[derive(Debug)]
pub struct ServiceDef {
    /// The service's name: its role (`worktruck serve <name>`), its PostgreSQL schema and
    /// SQLite file, its key in `[services]` (its address) and `[settings]` (its settings).
    pub name: &'static str,
    /// The full names of the gRPC services it serves (`worktruck.contacts.v1.ContactsService`):
    /// reported by gRPC health, and the gateways' upstream map.
    pub grpc_services: &'static [&'static str],
    /// The other services (by [`ServiceDef::name`]) it calls over gRPC: it is handed a channel
    /// to each, and its role is ready only when they serve.
    pub calls: &'static [&'static str],
    /// The entity kinds others may link to (kit::links): kit serves their resolution and
    /// keeps their inbound links. Empty for a service nothing links to.
    pub link_targets: &'static [crate::links::LinkTarget],
    /// Its migrations: (PostgreSQL, SQLite).
    pub migrators: fn() -> (Migrator, Migrator),
    /// Builds its gRPC routes and background work (bus consumers, sweepers) from what every
    /// service is handed. Runs at start; an error stops the start.
    pub build: fn(ServiceContext) -> anyhow::Result<Built>,
    /// Its worker roles (none for most services): background work on its own database that
    /// runs apart from its gRPC server, as many replicas as wanted.
    pub workers: &'static [WorkerDef],
}

/// A worker role of a service (`worktruck serve <role>`): background work on the service's own
/// database, with no gRPC server, run as N replicas; `worktruck dev` runs one in process. The
/// binary derives the role from the definition, so no role is named outside its service.
#[derive(Debug)]
pub struct WorkerDef {
    /// The role's name, e.g. `agent-worker`.
    pub role: &'static str,
    /// Builds its background tasks from the owning service's context; each ends at shutdown.
    pub build: fn(WorkerContext) -> anyhow::Result<Vec<Task>>,
}

/// What a worker is handed: its service's context (database, relay, bus, config, shutdown),
/// and what it needs to call the other services on a tenant's behalf.
pub struct WorkerContext {
    /// The owning service's context.
    pub service: ServiceContext,
    /// Signs the contexts of its calls (from `context.signing_key` or the master secret).
    pub signer: crate::context::Signer,
    /// A channel per gRPC service of every enabled service this process can reach.
    pub upstreams: crate::upstream::Upstreams,
}

impl ServiceDef {
    /// Every gRPC service its port serves beside health and reflection: its own, and
    /// `worktruck.common.v1.LinkTargets` when others may link to it ([`build`] adds it).
    pub fn served_services(&self) -> Vec<&'static str> {
        let links = (!self.link_targets.is_empty())
            .then_some(worktruck_proto::common::v1::link_targets_server::SERVICE_NAME);
        self.grpc_services.iter().copied().chain(links).collect()
    }

    /// The environment variable that sets this service's gRPC address for the gateways and
    /// its callers, e.g. `WORKTRUCK_SERVICES__CONTACTS`.
    pub fn address_variable(&self) -> String {
        format!("WORKTRUCK_SERVICES__{}", self.name.to_ascii_uppercase().replace('-', "_"))
    }
}

/// What kit hands every service when it is built.
pub struct ServiceContext {
    /// The whole configuration (read-only).
    pub config: Arc<Config>,
    /// The service's own database, migrated.
    pub db: Db,
    /// Verifies the gateways' signed contexts.
    pub verifier: Verifier,
    /// The outbox relay of `db` (call `notify` after a commit that enqueued events).
    pub relay: Relay,
    /// The event bus, for consumers.
    pub bus: Bus,
    /// The master secret, when this process has it (every all-in-one process does; a split
    /// service role only if configured with `secret_key`).
    pub secrets: Option<Secrets>,
    /// A channel to each service named in [`ServiceDef::calls`], by name.
    pub clients: BTreeMap<&'static str, Channel>,
    /// Resolves when the process shuts down; background work ends then.
    pub shutdown: Shutdown,
    /// The other services this process can reach (every enabled one with an address), for
    /// links; unlike `clients`, none of them is needed for readiness.
    pub peers: BTreeMap<&'static str, crate::links::Peer>,
    pub(crate) name: &'static str,
    pub(crate) link_targets: &'static [crate::links::LinkTarget],
}

impl ServiceContext {
    /// Assembles a context for the service `def`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        def: &'static ServiceDef,
        config: Arc<Config>,
        db: Db,
        verifier: Verifier,
        relay: Relay,
        bus: Bus,
        secrets: Option<Secrets>,
        clients: BTreeMap<&'static str, Channel>,
        peers: BTreeMap<&'static str, crate::links::Peer>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            config,
            db,
            verifier,
            relay,
            bus,
            secrets,
            clients,
            shutdown,
            peers,
            name: def.name,
            link_targets: def.link_targets,
        }
    }

    /// The service's links (kit::links): the same handle kit serves its link targets and runs
    /// its links consumer with.
    pub fn links(&self) -> crate::links::Links {
        crate::links::Links::new(
            self.name,
            self.link_targets,
            self.db.clone(),
            self.relay.clone(),
            self.verifier.clone(),
            self.peers.clone(),
        )
    }

    /// The channel to `service`, which the definition must list in `calls`.
    pub fn client(&self, service: &str) -> anyhow::Result<Channel> {
        self.clients.get(service).cloned().ok_or_else(|| {
            anyhow::anyhow!("the {} service calls {service}, which its definition does not list in `calls`", self.name)
        })
    }

    /// A key for `purpose` derived from the master secret; an error naming the setting when
    /// this process was not given one.
    pub fn derived_key(&self, purpose: &str) -> anyhow::Result<[u8; 32]> {
        let secrets = self.secrets.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "the {} service needs the master secret: set WORKTRUCK_SECRET_KEY (or secret_key in the config file)",
                self.name
            )
        })?;
        Ok(secrets.derive(purpose))
    }

    /// Envelope encryption for the secrets this service keeps (`kit::envelope`), under the
    /// master keys of `[encryption]`; an error naming the settings when there are none.
    pub fn envelope(&self) -> anyhow::Result<crate::envelope::Envelope> {
        crate::envelope::Envelope::new(&self.config, self.secrets.as_ref())
            .map_err(|e| anyhow::anyhow!("the {} service keeps secrets: {e}", self.name))
    }

    /// The service's own settings, `[settings.<name>]` (`WORKTRUCK_SETTINGS__<NAME>__<KEY>`),
    /// or `T::default()` when the section is absent. Give `T` `#[serde(deny_unknown_fields)]`
    /// so a misspelt setting fails the start.
    pub fn settings<T: DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        match self.config.settings.get(self.name) {
            None => Ok(T::default()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| anyhow::anyhow!("configuration: settings.{}: {e}", self.name)),
        }
    }
}

/// Builds `def` from `ctx`, and adds what kit runs for every service with link targets: the
/// `LinkTargets` gRPC server and the links consumer. The binary and the test fixtures start
/// services through this, never by calling `build` directly.
pub fn build(def: &'static ServiceDef, ctx: ServiceContext) -> anyhow::Result<Built> {
    let links = (!def.link_targets.is_empty()).then(|| (ctx.links(), ctx.bus.clone(), ctx.shutdown.clone()));
    let mut built = (def.build)(ctx)?;
    if let Some((links, bus, shutdown)) = links {
        built.routes = built.routes.add_service(links.server());
        built = built.task("links", links.consume(bus, shutdown));
    }
    Ok(built)
}

/// The peers of `def` among `channels` (every service with a channel but itself), for
/// [`ServiceContext::peers`].
pub fn peers(
    def: &'static ServiceDef,
    table: &[&'static ServiceDef],
    channels: &BTreeMap<&'static str, Channel>,
) -> BTreeMap<&'static str, crate::links::Peer> {
    table
        .iter()
        .filter(|d| d.name != def.name)
        .filter_map(|d| channels.get(d.name).map(|ch| (d.name, crate::links::Peer { channel: ch.clone(), targets: d.link_targets })))
        .collect()
}

/// A background task: a name (for logs) and its future, which ends at shutdown.
pub type Task = (String, Pin<Box<dyn Future<Output = ()> + Send + 'static>>);

/// What a service's `build` returns.
pub struct Built {
    /// Its gRPC services.
    pub routes: tonic::service::Routes,
    /// Its background work.
    pub tasks: Vec<Task>,
}

impl Built {
    /// A service with gRPC routes and no background work yet.
    pub fn new(routes: tonic::service::Routes) -> Self {
        Self { routes, tasks: Vec::new() }
    }

    /// Adds a background task; it should end when [`ServiceContext::shutdown`] resolves.
    pub fn task(mut self, name: impl Into<String>, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.tasks.push((name.into(), Box::pin(task)));
        self
    }
}

/// The process's shutdown signal, cloneable into every task.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the sender that fires it (`send(true)`).
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// A future that resolves once shutdown has been signalled (at once if it already was).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Whether shutdown has been signalled.
    pub fn is_signalled(&self) -> bool {
        *self.0.borrow()
    }
}

/// Checks a table of definitions: names and gRPC services unique, every `calls` entry a
/// service of the table. The binary runs this on its table at start and in a test.
pub fn check_table(table: &[&ServiceDef]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    let mut grpc = std::collections::BTreeSet::new();
    for def in table {
        let valid = !def.name.is_empty()
            && def.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && def.name.as_bytes()[0].is_ascii_lowercase();
        if !valid {
            return Err(format!("service name {:?} must be lower-case letters, digits and _ (it names a schema)", def.name));
        }
        if !names.insert(def.name) {
            return Err(format!("service {} is in the table twice", def.name));
        }
        if def.grpc_services.is_empty() {
            return Err(format!("service {} serves no gRPC service", def.name));
        }
        for g in def.grpc_services {
            if !grpc.insert(*g) {
                return Err(format!("gRPC service {g} is served by two services"));
            }
        }
    }
    let mut roles = names.clone();
    for def in table {
        for w in def.workers {
            if !roles.insert(w.role) {
                return Err(format!("worker role {} of {} is taken by another service or worker", w.role, def.name));
            }
        }
    }
    for def in table {
        for c in def.calls {
            if !names.contains(c) {
                return Err(format!("service {} calls {c}, which is not in the table", def.name));
            }
            if *c == def.name {
                return Err(format!("service {} lists itself in `calls`", def.name));
            }
        }
    }
    Ok(())
}
