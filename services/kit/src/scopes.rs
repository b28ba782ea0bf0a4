//! Which scope each RPC needs, and whether a caller holds it: the one table the gateways (REST
//! and MCP) check before they call and every service checks again on the context it verifies,
//! so a context signed for a read-only credential cannot write anywhere, even replayed to a
//! service directly (brief §5).
//!
//! An RPC's scope is `<domain>:read` or `<domain>:write`, the domain being its package's
//! (`worktruck.contacts.v1` → `contacts`; tenant and key management is `admin`). It reads when
//! its MCP tool says `read_only`, or, without a tool, when its HTTP rule is a GET.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prost_reflect::MethodDescriptor;
use worktruck_proto::registry::{HttpMethod, Registry};

use crate::context::Ctx;
use crate::error::{Error, ErrorCode};

/// The scope domain of an RPC: its package's domain segment; `tenants` is `admin`.
pub fn domain(rpc: &MethodDescriptor) -> String {
    let package = rpc.parent_service().parent_file().package_name().to_owned();
    let domain = package.split('.').nth(1).unwrap_or_default();
    if domain == "tenants" { "admin".to_owned() } else { domain.to_owned() }
}

/// `<domain>:read` when `read`, else `<domain>:write`.
pub fn scope(rpc: &MethodDescriptor, read: bool) -> String {
    format!("{}:{}", domain(rpc), if read { "read" } else { "write" })
}

/// Ok when the caller may use `scope`: no scopes means full access, and `<domain>:write`
/// includes `<domain>:read`. Otherwise 403 `insufficient_scope`.
pub fn check(ctx: &Ctx, scope: &str) -> Result<(), Error> {
    if ctx.scopes.is_empty() || ctx.scopes.iter().any(|s| s == scope) {
        return Ok(());
    }
    if let Some(domain) = scope.strip_suffix(":read")
        && ctx.scopes.iter().any(|s| s.strip_suffix(":write") == Some(domain))
    {
        return Ok(());
    }
    Err(Error::new(ErrorCode::InsufficientScope, format!("this credential lacks the {scope} scope")))
}

/// The scope every RPC of a registry needs, by gRPC path (`/pkg.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct ScopeTable {
    by_path: HashMap<String, Arc<str>>,
}

impl ScopeTable {
    /// The table of every RPC in `registry`'s descriptor pool.
    pub fn new(registry: &Registry) -> Self {
        let mut by_path = HashMap::new();
        for service in registry.pool().services() {
            // Served by every service for the others (kit::links), never routed by a gateway:
            // its server checks the serving domain's read scope itself.
            if service.full_name() == crate::links::GRPC_NAME {
                continue;
            }
            for rpc in service.methods() {
                let path = format!("/{}/{}", service.full_name(), rpc.name());
                by_path.insert(path, Arc::from(scope(&rpc, is_read(registry, &rpc))));
            }
        }
        Self { by_path }
    }

    /// The table of the protos compiled into this build, made once.
    pub fn embedded() -> &'static ScopeTable {
        static TABLE: OnceLock<ScopeTable> = OnceLock::new();
        TABLE.get_or_init(|| ScopeTable::new(&Registry::embedded().expect("the embedded descriptors load")))
    }

    /// The scope the RPC at `path` needs; `None` for paths that are not ours (health,
    /// reflection).
    pub fn required(&self, path: &str) -> Option<&Arc<str>> {
        self.by_path.get(path)
    }
}

/// Whether `rpc` only reads: its MCP tool says so, or it has no tool and its HTTP rule is a GET.
pub fn is_read(registry: &Registry, rpc: &MethodDescriptor) -> bool {
    if let Some(tool) = registry.tools().iter().find(|t| t.rpc == *rpc) {
        return tool.read_only;
    }
    registry
        .routes()
        .iter()
        .find(|r| r.rpc == *rpc && r.binding == 0)
        .is_some_and(|r| r.method == HttpMethod::Get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn ctx(scopes: &[&str]) -> Ctx {
        let mut c = Ctx::tenant(Uuid::nil(), "key:x", 365);
        c.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        c
    }

    #[test]
    fn scopes_grant_what_they_name_and_write_includes_read() {
        assert!(check(&ctx(&[]), "contacts:write").is_ok());
        assert!(check(&ctx(&["contacts:read"]), "contacts:read").is_ok());
        assert_eq!(check(&ctx(&["contacts:read"]), "contacts:write").unwrap_err().code, ErrorCode::InsufficientScope);
        assert!(check(&ctx(&["contacts:write"]), "contacts:read").is_ok());
        assert!(check(&ctx(&["crm:write"]), "contacts:read").is_err());
    }

    #[test]
    fn every_rpc_has_a_scope_and_reads_are_what_rest_and_mcp_call_reads() {
        let r = Registry::embedded().unwrap();
        let table = ScopeTable::embedded();
        assert_eq!(table.required("/worktruck.contacts.v1.ContactsService/GetContact").unwrap().as_ref(), "contacts:read");
        assert_eq!(table.required("/worktruck.contacts.v1.ContactsService/UpdateContact").unwrap().as_ref(), "contacts:write");
        assert_eq!(table.required("/worktruck.tenants.v1.TenantsService/CreateApiKey").unwrap().as_ref(), "admin:write");
        assert!(table.required("/grpc.health.v1.Health/Check").is_none());
        // A GET is a read-only tool, so one rule serves REST and MCP. A read-only tool may sit
        // on a POST when the read takes a body (a merge preview); its scope is then a read,
        // over both surfaces alike, since the scope comes from the tool.
        for tool in r.tools() {
            if let Some(route) = r.routes().iter().find(|x| x.rpc == tool.rpc && x.binding == 0) {
                if route.method == HttpMethod::Get {
                    assert!(tool.read_only, "{} is a GET, so its tool must be read-only", tool.name);
                }
                assert_eq!(is_read(&r, &tool.rpc), tool.read_only, "{}", tool.name);
            }
        }
    }
}
