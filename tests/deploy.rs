//! The deploy files follow the table of services: every service has its Kubernetes manifest,
//! its Compose service and its address in the shared configuration, and no manifest runs a
//! role the binary does not have. (Nothing is applied to a cluster here.)

use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The roles named by `serve <role>` in a manifest (`["serve", "x"]`).
fn served_roles(text: &str) -> Vec<String> {
    text.match_indices("[\"serve\", \"")
        .map(|(i, m)| text[i + m.len()..].split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_service_of_the_table_is_deployed_and_nothing_else_is() {
    let kustomization = read("k8s/base/kustomization.yaml");
    let config_env = read("k8s/base/config.env");
    let compose = read("deploy/docker-compose.yaml");
    let pdb = read("k8s/base/pdb.yaml");
    let mtls = read("k8s/components/grpc-mtls/kustomization.yaml");
    let mtls_cert = read("k8s/components/grpc-mtls/certificate.yaml");
    for def in worktruck::services::TABLE {
        let manifest = format!("k8s/base/{}.yaml", def.name);
        let text = read(&manifest);
        assert!(served_roles(&text).contains(&def.name.to_owned()), "{manifest} runs `serve {}`", def.name);
        assert!(
            text.contains("worktruck.io/tier: service"),
            "{manifest}'s Deployment carries worktruck.io/tier: service (the overlays size services by it)"
        );
        assert!(
            text.contains("name: WORKTRUCK_SECRET_KEY") && text.contains("name: worktruck-secrets"),
            "{manifest} passes the one shared master secret (a role with another key refuses to start)"
        );
        assert!(pdb.contains(&format!("name: worktruck-{}", def.name)), "k8s/base/pdb.yaml covers {}", def.name);
        assert!(kustomization.contains(&format!("- {}.yaml", def.name)), "kustomization lists {manifest}");
        let var = def.address_variable();
        assert!(config_env.lines().any(|l| l.starts_with(&format!("{var}="))), "k8s/base/config.env sets {var}");
        assert!(served_roles(&compose).contains(&def.name.to_owned()), "docker-compose runs `serve {}`", def.name);
        assert!(compose.contains(&format!("{var}:")), "docker-compose gives the gateways {var}");
        assert!(
            mtls.contains(&format!("{var}=https://worktruck-{}:50051", def.name)),
            "the grpc-mtls component points {var} at https://"
        );
        assert!(mtls_cert.contains(&format!("- worktruck-{}\n", def.name)), "the pods' certificate names worktruck-{}", def.name);
    }
    let roles = worktruck::role_names();
    let mut k8s_roles = Vec::new();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/base")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        k8s_roles.extend(served_roles(&text));
    }
    for role in k8s_roles.iter().chain(&served_roles(&compose)) {
        assert!(roles.contains(&role.as_str()), "a manifest runs `serve {role}`, which is not a role ({roles:?})");
    }
    for role in &roles {
        assert!(k8s_roles.contains(&(*role).to_owned()), "k8s/base runs the {role} role");
    }
    for line in config_env.lines().filter(|l| l.starts_with("WORKTRUCK_SERVICES__")) {
        let name = line["WORKTRUCK_SERVICES__".len()..].split('=').next().unwrap().to_ascii_lowercase();
        assert!(worktruck::services::find(&name).is_some(), "config.env names an unknown service: {line}");
    }
}

#[test]
fn every_deployment_names_the_hosts_mcp_is_reached_by() {
    // Without them, MCP through a Service name or an Ingress is a 403 (only loopback works).
    for path in ["k8s/base/config.env", "k8s/overlays/dev/kustomization.yaml", "k8s/overlays/prod/kustomization.yaml"] {
        let text = read(path);
        let line = text
            .lines()
            .find(|l| l.contains("WORKTRUCK_MCP__ALLOWED_HOSTS="))
            .unwrap_or_else(|| panic!("{path} sets WORKTRUCK_MCP__ALLOWED_HOSTS"));
        assert!(line.contains("[worktruck-mcp-gateway"), "{path}: the Service name is allowed: {line}");
    }
    assert!(read("deploy/docker-compose.yaml").contains("WORKTRUCK_MCP__ALLOWED_HOSTS: \"[mcp-gateway]\""));
}

#[test]
fn the_dashboard_and_alerts_use_only_exported_metric_families() {
    use worktruck_kit::telemetry::families::*;
    let known = [
        HTTP_REQUESTS, HTTP_DURATION, MCP_REQUESTS, MCP_DURATION, GRPC_CALLS, GRPC_DURATION, OUTBOX_PENDING,
        OUTBOX_PUBLISH, OUTBOX_FAILURES, AUTH, RATE_LIMITED, RSS, OPEN_FDS, MAX_FDS, CPU,
    ];
    let dashboard = read("deploy/monitoring/grafana-dashboard.json");
    let doc: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(!doc["panels"].as_array().unwrap().is_empty());
    let alerts = read("deploy/monitoring/alerts.yaml");
    for (file, text) in [("grafana-dashboard.json", &dashboard), ("alerts.yaml", &alerts)] {
        let mut used = 0;
        for (i, _) in text.match_indices("worktruck_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let family = ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(known.contains(&family), "{file} uses {name}, which /metrics does not export");
            used += 1;
        }
        assert!(used > 5, "{file} uses the metrics");
    }
}
