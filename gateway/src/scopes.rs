//! Which scope an operation needs, and whether a caller holds it. REST and MCP ask the same
//! question the same way: `<domain>:read` for reads, `<domain>:write` for everything else.

use prost_reflect::MethodDescriptor;
use worktruck_kit::context::Ctx;
use worktruck_kit::{Error, ErrorCode};

/// The scope domain of an RPC: its package's domain segment (`worktruck.contacts.v1` →
/// `contacts`); tenant and key management is `admin`.
pub fn domain(rpc: &MethodDescriptor) -> String {
    let package = rpc.parent_service().parent_file().package_name().to_owned();
    let domain = package.split('.').nth(1).unwrap_or_default();
    if domain == "tenants" { "admin".to_owned() } else { domain.to_owned() }
}

/// The scope an RPC needs: `<domain>:read` when `read`, else `<domain>:write`.
pub fn required_scope(rpc: &MethodDescriptor, read: bool) -> String {
    format!("{}:{}", domain(rpc), if read { "read" } else { "write" })
}

/// Ok when the caller may use `scope`: no scopes means full access, and `<domain>:write`
/// includes `<domain>:read`. Otherwise 403 `insufficient_scope`.
pub fn check(ctx: &Ctx, scope: &str) -> Result<(), Error> {
    if ctx.scopes.is_empty() || ctx.scopes.iter().any(|s| s == scope) {
        return Ok(());
    }
    if let Some(domain) = scope.strip_suffix(":read")
        && ctx.scopes.iter().any(|s| s.strip_suffix(":write") == Some(domain)) {
            return Ok(());
        }
    Err(Error::new(ErrorCode::InsufficientScope, format!("this credential lacks the {scope} scope")))
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
    fn rpcs_map_to_their_domain() {
        let r = worktruck_proto::registry::Registry::embedded().unwrap();
        for route in r.routes() {
            let d = domain(&route.rpc);
            assert!(d == "contacts" || d == "admin", "{d}");
        }
        let get = r.routes().iter().find(|x| x.rpc.name() == "GetContact").unwrap();
        assert_eq!(required_scope(&get.rpc, true), "contacts:read");
    }
}
