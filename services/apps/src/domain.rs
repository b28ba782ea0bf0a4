//! Apps as domain code sees them: validated registrations and changes, and the mapping of the
//! stored rows to the wire types (which never carry a secret).

use serde_json::Value;
pub use worktruck_kit::check::{check_metadata, check_name, check_text, merge};
use worktruck_kit::error::quote;
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct};
use worktruck_kit::{Error, Result};
use worktruck_proto::apps::v1 as pb;

use crate::queries::{AppRow, ToolRow};

/// Longest accepted secret.
const MAX_SECRET_CHARS: usize = 4096;
/// Longest accepted URL.
const MAX_URL_CHARS: usize = 2048;
/// Headers the transport sets itself, which an app's auth may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "accept",
    "accept-encoding",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// Validates a slug: `^[a-z][a-z0-9-]{1,30}$`.
pub fn check_slug(v: &str) -> Result<String> {
    let b = v.as_bytes();
    let ok = (2..=31).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !ok {
        return Err(Error::validation(format!(
            "slug {} must match ^[a-z][a-z0-9-]{{1,30}}$ (a lower-case letter, then 1 to 30 lower-case letters, digits or -)",
            quote(v)
        )));
    }
    Ok(v.to_owned())
}

/// The length check of a URL (the SSRF guard checks the rest).
pub fn check_url_length(v: &str) -> Result<String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_URL_CHARS {
        return Err(Error::validation(format!(
            "mcp_server_url must be 1 to {MAX_URL_CHARS} characters"
        )));
    }
    Ok(v.to_owned())
}

/// An app's credentials, validated. The secret lives here only until it is sealed.
pub struct Auth {
    /// `none`, `bearer` or `header`.
    pub kind: &'static str,
    /// The header the secret goes in (`header`).
    pub header_name: Option<String>,
    /// The secret (`bearer`, `header`).
    pub secret: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("kind", &self.kind)
            .field("header_name", &self.header_name)
            .finish_non_exhaustive()
    }
}

/// Validates the `auth` of a registration.
pub fn check_auth(a: Option<&pb::AppAuth>) -> Result<Auth> {
    let Some(a) = a else {
        return Ok(Auth {
            kind: "none",
            header_name: None,
            secret: None,
        });
    };
    let kind = pb::AuthType::try_from(a.r#type).unwrap_or(pb::AuthType::Unspecified);
    let secret = a.secret.as_deref().filter(|s| !s.is_empty());
    let header = a.header_name.as_deref().filter(|s| !s.is_empty());
    let check_secret = |s: Option<&str>| -> Result<String> {
        let s = s.ok_or_else(|| Error::validation("auth.secret is required for this auth type"))?;
        if s.chars().count() > MAX_SECRET_CHARS
            || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            || s.trim() != s
        {
            return Err(Error::validation(format!(
                "auth.secret must be at most {MAX_SECRET_CHARS} visible ASCII characters, without leading or trailing spaces"
            )));
        }
        Ok(s.to_owned())
    };
    match kind {
        pb::AuthType::Unspecified | pb::AuthType::None => {
            if secret.is_some() || header.is_some() {
                return Err(Error::validation(
                    "auth of type none takes no secret and no header_name",
                ));
            }
            Ok(Auth {
                kind: "none",
                header_name: None,
                secret: None,
            })
        }
        pb::AuthType::Bearer => {
            if header.is_some() {
                return Err(Error::validation(
                    "auth of type bearer takes no header_name (it is sent as Authorization: Bearer)",
                ));
            }
            Ok(Auth {
                kind: "bearer",
                header_name: None,
                secret: Some(zeroize::Zeroizing::new(check_secret(secret)?)),
            })
        }
        pb::AuthType::Header => {
            let h = header.ok_or_else(|| {
                Error::validation("auth.header_name is required for auth of type header")
            })?;
            let name = http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                Error::validation(format!(
                    "auth.header_name {} is not an HTTP header name",
                    quote(h)
                ))
            })?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(Error::validation(format!(
                    "auth.header_name {} is set by the transport itself",
                    quote(h)
                )));
            }
            Ok(Auth {
                kind: "header",
                header_name: Some(h.to_owned()),
                secret: Some(zeroize::Zeroizing::new(check_secret(secret)?)),
            })
        }
    }
}

/// The tool names of a PATCH's `enabled_tools`: strings, each at most once.
pub fn check_tool_names(list: &prost_types::ListValue) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for v in &list.values {
        match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            _ => {
                return Err(Error::validation(
                    "enabled_tools must be a list of tool names",
                ));
            }
        }
    }
    Ok(out)
}

/// The wire name of a stored status.
pub fn status(s: &str) -> pb::AppStatus {
    match s {
        "active" => pb::AppStatus::Active,
        "disabled" => pb::AppStatus::Disabled,
        _ => pb::AppStatus::Unhealthy,
    }
}

fn auth_type(s: &str) -> pb::AuthType {
    match s {
        "bearer" => pb::AuthType::Bearer,
        "header" => pb::AuthType::Header,
        _ => pb::AuthType::None,
    }
}

fn opt_struct(v: &Option<Value>) -> Option<prost_types::Struct> {
    v.as_ref().filter(|v| v.is_object()).map(to_struct)
}

fn annotations(v: &Option<Value>) -> Option<pb::ToolAnnotations> {
    let v = v.as_ref()?.as_object()?;
    let flag = |k: &str| v.get(k).and_then(Value::as_bool);
    Some(pb::ToolAnnotations {
        title: v.get("title").and_then(Value::as_str).map(str::to_owned),
        read_only_hint: flag("readOnlyHint"),
        destructive_hint: flag("destructiveHint"),
        idempotent_hint: flag("idempotentHint"),
        open_world_hint: flag("openWorldHint"),
    })
}

/// A mirrored tool on the wire.
pub fn tool_to_pb(t: &ToolRow) -> pb::DiscoveredTool {
    let changed = t.changed_at.is_some();
    pb::DiscoveredTool {
        name: t.name.clone(),
        title: t.title.clone(),
        description: t.description.clone(),
        input_schema: opt_struct(&Some(t.input_schema.clone())),
        output_schema: opt_struct(&t.output_schema),
        annotations: annotations(&t.annotations),
        first_seen_at: Some(timestamp(t.first_seen_at)),
        last_seen_at: Some(timestamp(t.last_seen_at)),
        stale: t.stale,
        changed,
        changed_at: t.changed_at.map(timestamp),
        previous_description: if changed {
            t.approved_description.clone()
        } else {
            None
        },
        previous_input_schema: if changed {
            opt_struct(&t.approved_input_schema)
        } else {
            None
        },
        previous_output_schema: if changed {
            opt_struct(&t.approved_output_schema)
        } else {
            None
        },
    }
}

/// An app on the wire, with its tools (never its secret).
pub fn app_to_pb(a: &AppRow, tools: &[ToolRow]) -> pb::App {
    pb::App {
        id: a.id.to_string(),
        tenant_id: a.tenant_id.to_string(),
        slug: a.slug.clone(),
        display_name: a.display_name.clone(),
        description: a.description.clone(),
        mcp_server_url: a.mcp_server_url.clone(),
        auth_type: auth_type(&a.auth_type) as i32,
        auth_header_name: a.auth_header_name.clone(),
        auth_hint: a.auth_hint.clone(),
        status: status(&a.status) as i32,
        status_reason: a.status_reason.clone(),
        consecutive_probe_failures: a.consecutive_probe_failures,
        last_probed_at: a.last_probed_at.map(timestamp),
        last_healthy_at: a.last_healthy_at.map(timestamp),
        protocol_version: a.protocol_version.clone(),
        discovered_tools: tools.iter().map(tool_to_pb).collect(),
        enabled_tools: a.enabled(),
        metadata: Some(to_struct(&a.metadata)),
        version: a.version,
        created_at: Some(timestamp(a.created_at)),
        updated_at: Some(timestamp(a.updated_at)),
    }
}

/// The `metadata` of a request, validated (an empty object when absent).
pub fn metadata(m: Option<&prost_types::Struct>) -> Result<Value> {
    let v = m
        .map(from_struct)
        .unwrap_or_else(|| Value::Object(Default::default()));
    check_metadata(&v)?;
    Ok(v)
}

/// A secret's hint for answers: kit's masked last four characters (`…a1b2`).
pub fn hint(secret: &str) -> Option<String> {
    Some(worktruck_kit::envelope::hint(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_pattern() {
        for ok in [
            "ab",
            "github",
            "my-app-2",
            "a234567890123456789012345678901",
        ] {
            assert!(check_slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "1ab",
            "Ab",
            "a_b",
            "ab ",
            "",
            "a2345678901234567890123456789012",
            "-ab",
        ] {
            assert_eq!(
                check_slug(bad).unwrap_err().code,
                worktruck_kit::ErrorCode::ValidationFailed,
                "{bad}"
            );
        }
    }

    #[test]
    fn auth_is_checked_and_debug_hides_the_secret() {
        let a = check_auth(Some(&pb::AppAuth {
            r#type: pb::AuthType::Bearer as i32,
            header_name: None,
            secret: Some("s3cret-token-value".into()),
        }))
        .unwrap();
        assert!(!format!("{a:?}").contains("s3cret"));
        let bad = |t: pb::AuthType, h: Option<&str>, s: Option<&str>| {
            check_auth(Some(&pb::AppAuth {
                r#type: t as i32,
                header_name: h.map(Into::into),
                secret: s.map(Into::into),
            }))
            .is_err()
        };
        assert!(bad(pb::AuthType::Bearer, None, None));
        assert!(bad(pb::AuthType::None, None, Some("x")));
        assert!(bad(pb::AuthType::Header, Some("Mcp-Session-Id"), Some("x")));
        assert!(bad(pb::AuthType::Header, Some("bad header"), Some("x")));
        assert!(bad(pb::AuthType::Header, None, Some("x")));
        assert!(bad(pb::AuthType::Bearer, None, Some("line\nbreak")));
        assert!(!bad(pb::AuthType::Header, Some("X-Api-Key"), Some("k")));
        assert_eq!(hint("0123456789abcdef").as_deref(), Some("…cdef"));
    }
}
