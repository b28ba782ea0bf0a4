//! `google.api.http` path templates: the subset the gateways serve (`{f}`, `{a.b}`, `{f=**}`,
//! a trailing `:verb`), parsed and validated.

use std::collections::HashSet;
use std::fmt;

/// The HTTP methods a `google.api.http` rule can bind (`custom` is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpMethod {
    /// `get`.
    Get,
    /// `put`.
    Put,
    /// `post`.
    Post,
    /// `delete`.
    Delete,
    /// `patch`.
    Patch,
}

impl HttpMethod {
    /// Every method, in the order the rule's `pattern` oneof declares them.
    pub const ALL: [HttpMethod; 5] = [Self::Get, Self::Put, Self::Post, Self::Delete, Self::Patch];

    /// Upper case, as on the wire: `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
        }
    }

    /// The `HttpRule` field that selects this method: `get`.
    pub(super) fn rule_field(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Post => "post",
            Self::Delete => "delete",
            Self::Patch => "patch",
        }
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A fixed segment, e.g. `contacts`.
    Literal(String),
    /// A whole segment bound to a request field, by its dotted proto path (`id`, `a.b`).
    Variable(String),
}

/// A parsed `google.api.http` path template of the supported subset: `/` separated literal
/// segments, whole-segment variables `{f}`, `{a.b}` or `{f=*}`, and an optional `:verb` suffix.
///
/// Multi-segment patterns (`{name=projects/*}`, `**`) are refused: axum routes one segment per
/// variable, and the API does not use AIP resource names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
    verb: Option<String>,
}

impl PathTemplate {
    /// Parses a template, or says why it is not in the supported subset.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let rest = raw
            .strip_prefix('/')
            .ok_or_else(|| format!("path '{raw}' must start with '/'"))?;
        // Checked before splitting on '/', which would cut a `{name=a/*}` pattern in two.
        for (start, _) in raw.match_indices('{') {
            let inner = raw[start + 1..].split('}').next().unwrap_or_default();
            if inner.contains('/') {
                return Err(format!(
                    "path '{raw}': variable '{{{inner}}}' uses a segment pattern; only {{field}} and {{field=*}} are supported"
                ));
            }
        }
        let mut segments = Vec::new();
        let mut verb = None;
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.iter().enumerate() {
                let mut part = *part;
                if i == last {
                    // The verb follows the closing brace of a variable, or the last ':' of a literal.
                    let search_from = part.rfind('}').unwrap_or(0);
                    if let Some(pos) = part[search_from..].find(':').map(|p| p + search_from) {
                        let v = &part[pos + 1..];
                        if !is_literal(v) {
                            return Err(format!("path '{raw}' has an invalid verb ':{v}'"));
                        }
                        verb = Some(v.to_owned());
                        part = &part[..pos];
                    }
                }
                segments.push(parse_segment(raw, part)?);
            }
        }
        let mut seen = HashSet::new();
        for s in &segments {
            if let Segment::Variable(v) = s {
                if !seen.insert(v.as_str()) {
                    return Err(format!("path '{raw}' binds '{v}' twice"));
                }
            }
        }
        Ok(Self {
            raw: raw.to_owned(),
            segments,
            verb,
        })
    }

    /// The template as written in the proto.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The segments, verb excluded.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The custom verb after the last segment (`archive` in `/x/{id}:archive`).
    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// The dotted field paths bound by variables, in path order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable(v) => Some(v.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The template with variable names erased, so that `/x/{id}` and `/x/{name}` compare equal.
    pub(super) fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Variable(_) => out.push_str("{}"),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        if let Some(v) = &self.verb {
            out.push(':');
            out.push_str(v);
        }
        out
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn parse_segment(raw: &str, part: &str) -> Result<Segment, String> {
    if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        let name = match inner.split_once('=') {
            Some((name, "*")) => name,
            Some(_) => {
                return Err(format!(
                    "path '{raw}': variable '{{{inner}}}' uses a segment pattern; only {{field}} and {{field=*}} are supported"
                ));
            }
            None => inner,
        };
        let valid = !name.is_empty() && name.split('.').all(is_identifier);
        if !valid {
            return Err(format!("path '{raw}': '{name}' is not a field path"));
        }
        Ok(Segment::Variable(name.to_owned()))
    } else if is_literal(part) {
        Ok(Segment::Literal(part.to_owned()))
    } else {
        Err(format!("path '{raw}': segment '{part}' is not supported"))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Unreserved URL characters only, so a literal never needs escaping in any router.
fn is_literal(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
}
