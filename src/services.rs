//! The table of services: the one place that lists them. Roles, `worktruck dev`, migrations,
//! the gateways' upstreams, readiness, the tests' stacks and the deploy manifests' check all
//! come from here. Adding a service is its crate, its proto, one line below and its manifests
//! (ARCHITECTURE.md, "How to add a service").

use worktruck_kit::config::Config;
use worktruck_kit::service::ServiceDef;

/// Every service of this release, in start order.
pub static TABLE: &[&ServiceDef] = &[
    &worktruck_tenants::DEFINITION,
    &worktruck_contacts::DEFINITION,
    &worktruck_notes::DEFINITION,
    &worktruck_crm::DEFINITION,
    &worktruck_tasks::DEFINITION,
    &worktruck_calendar::DEFINITION,
    &worktruck_agents::DEFINITION,
    &worktruck_apps::DEFINITION,
    &worktruck_webhooks::DEFINITION,
];

/// The service named `name`.
pub fn find(name: &str) -> Option<&'static ServiceDef> {
    TABLE.iter().copied().find(|d| d.name == name)
}

/// The worker role named `role`, with the service that declares it.
pub fn find_worker(role: &str) -> Option<(&'static ServiceDef, &'static worktruck_kit::service::WorkerDef)> {
    TABLE.iter().copied().find_map(|d| d.workers.iter().find(|w| w.role == role).map(|w| (d, w)))
}

/// The names of every service, comma-separated, for messages.
pub fn names() -> String {
    TABLE.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
}

/// The service named `name`, or an error that lists the real ones.
pub fn lookup(name: &str) -> anyhow::Result<&'static ServiceDef> {
    find(name).ok_or_else(|| anyhow::anyhow!("unknown service {name:?}: the services are {}", names()))
}

/// The tenants service: every gateway authenticates through it and the first start writes to
/// it, so it is named here once.
pub fn tenants() -> &'static ServiceDef {
    &worktruck_tenants::DEFINITION
}

/// The services `cfg` runs and routes (`enabled_services`, else all), in table order. Every
/// name must be in the table, `tenants` must be among them, and so must every service an
/// enabled one calls.
pub fn enabled(cfg: &Config) -> anyhow::Result<Vec<&'static ServiceDef>> {
    if cfg.enabled_services.is_empty() {
        return Ok(TABLE.to_vec());
    }
    for name in &cfg.enabled_services {
        lookup(name).map_err(|e| anyhow::anyhow!("enabled_services: {e}"))?;
    }
    let defs: Vec<_> = TABLE.iter().copied().filter(|d| cfg.enabled_services.iter().any(|n| n == d.name)).collect();
    if !defs.iter().any(|d| d.name == tenants().name) {
        anyhow::bail!("enabled_services must include tenants: the gateways authenticate every caller through it");
    }
    for def in &defs {
        for callee in def.calls {
            if !defs.iter().any(|d| d.name == *callee) {
                anyhow::bail!("enabled_services: {} calls {callee}, which is not enabled", def.name);
            }
        }
    }
    Ok(defs)
}

/// Checks the parts of `cfg` keyed by service name: an unknown name in `[services]` or
/// `[settings]` is a misspelling, refused before anything starts.
pub fn check_config(cfg: &Config) -> anyhow::Result<()> {
    worktruck_kit::service::check_table(TABLE).map_err(|e| anyhow::anyhow!("the table of services: {e}"))?;
    for name in cfg.services.keys() {
        lookup(name).map_err(|e| anyhow::anyhow!("configuration: services.{name}: {e}"))?;
    }
    for name in cfg.settings.keys() {
        lookup(name).map_err(|e| anyhow::anyhow!("configuration: settings.{name}: {e}"))?;
    }
    enabled(cfg)?;
    Ok(())
}

/// Where `def`'s gRPC server is, for a process that runs apart from it.
pub fn address(cfg: &Config, def: &ServiceDef) -> anyhow::Result<String> {
    cfg.services.get(def.name).cloned().filter(|a| !a.is_empty()).ok_or_else(|| {
        anyhow::anyhow!(
            "no address for the {} service: set {} (or services.{} in the config file)",
            def.name,
            def.address_variable(),
            def.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent_and_covers_every_routed_service() {
        worktruck_kit::service::check_table(TABLE).unwrap();
        let registry = worktruck_proto::registry::Registry::embedded().unwrap();
        for service in registry.served_services() {
            assert!(
                TABLE.iter().any(|d| d.grpc_services.contains(&service)),
                "{service} has routes or tools but no service in the table serves it"
            );
        }
    }

    #[test]
    fn unknown_names_are_errors_that_list_the_services() {
        let e = lookup("nosuch").unwrap_err().to_string();
        assert!(e.contains("tenants") && e.contains("contacts"), "{e}");
        let mut cfg = Config::default();
        cfg.services.insert("contact".into(), "http://x:1".into());
        let e = check_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("services.contact") && e.contains("the services are"), "{e}");
        let mut cfg = Config::default();
        cfg.settings.insert("nosuch".into(), serde_json::json!({}));
        assert!(check_config(&cfg).is_err());
        let mut cfg = Config { enabled_services: vec!["contacts".into()], ..Config::default() };
        let e = enabled(&cfg).unwrap_err().to_string();
        assert!(e.contains("tenants"), "{e}");
        cfg.enabled_services = vec!["tenants".into(), "nosuch".into()];
        assert!(enabled(&cfg).is_err());
        cfg.enabled_services = vec!["tenants".into()];
        assert_eq!(enabled(&cfg).unwrap().len(), 1);
    }

    #[test]
    fn a_missing_address_names_its_variable() {
        let e = address(&Config::default(), tenants()).unwrap_err().to_string();
        assert!(e.contains("WORKTRUCK_SERVICES__TENANTS"), "{e}");
    }
}
