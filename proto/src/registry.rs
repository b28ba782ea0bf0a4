//! The descriptor registry: every unary RPC's REST binding (`google.api.http`), MCP tool option
//! (`worktruck.mcp.v1.tool`), field behaviours and proto comments, read once from the encoded
//! descriptor set and validated before any surface is built from it.
//!
//! A rule the gateways cannot serve is refused here, at start-up, never at request time.

use std::collections::{HashMap, HashSet};
use std::fmt;

use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, EnumValueDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, MethodDescriptor, ReflectMessage, ServiceDescriptor, Value,
};

const HTTP_EXTENSION: &str = "google.api.http";
const TOOL_EXTENSION: &str = "worktruck.mcp.v1.tool";
const FIELD_BEHAVIOR_EXTENSION: &str = "google.api.field_behavior";
const FIELD_BEHAVIOR_ENUM: &str = "google.api.FieldBehavior";

/// Why a descriptor set cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The bytes are not a valid `FileDescriptorSet`.
    #[error("cannot decode the descriptor set: {0}")]
    Decode(#[from] prost_reflect::DescriptorError),
    /// An RPC's `google.api.http` rule cannot be served.
    #[error("invalid http rule on {rpc}: {message}")]
    InvalidRule {
        /// Full name of the RPC.
        rpc: String,
        /// What is wrong.
        message: String,
    },
    /// Two bindings share an HTTP method and path.
    #[error("duplicate route {method} {path}: {first} and {second}")]
    DuplicateRoute {
        /// The HTTP method.
        method: HttpMethod,
        /// The path template of the second binding.
        path: String,
        /// The RPC bound first.
        first: String,
        /// The RPC bound second.
        second: String,
    },
    /// An RPC's `worktruck.mcp.v1.tool` option cannot be served.
    #[error("invalid MCP tool on {rpc}: {message}")]
    InvalidTool {
        /// Full name of the RPC.
        rpc: String,
        /// What is wrong.
        message: String,
    },
    /// Two RPCs claim the same tool name.
    #[error("duplicate MCP tool name '{name}': {first} and {second}")]
    DuplicateTool {
        /// The tool name.
        name: String,
        /// The RPC that claimed it first.
        first: String,
        /// The RPC that claimed it second.
        second: String,
    },
}

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
    fn rule_field(self) -> &'static str {
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
    fn shape(&self) -> String {
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

/// Where an HTTP request's body goes in the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// No body (`body` absent): every non-path field comes from the query string.
    None,
    /// `body: "*"`: the body is the whole request message; query parameters are refused.
    Whole,
    /// `body: "field"`: the body is this top-level field; other fields come from the query.
    Field(String),
}

/// One REST binding of a unary RPC.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub method: HttpMethod,
    /// The path template.
    pub path: PathTemplate,
    /// Where the body goes.
    pub body: RequestBody,
    /// The response field rendered as the body (`response_body`), or the whole response.
    pub response_body: Option<String>,
    /// The RPC.
    pub rpc: MethodDescriptor,
    /// Full name of the service, e.g. `worktruck.contacts.v1.ContactsService`.
    pub service: String,
    /// The gRPC path, e.g. `/worktruck.contacts.v1.ContactsService/GetContact`.
    pub grpc_path: String,
    /// 0 for the rule itself, 1.. for its `additional_bindings`.
    pub binding: usize,
}

/// An RPC exposed as an MCP tool by `worktruck.mcp.v1.tool`.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Tool name as clients see it, e.g. `contacts_search`.
    pub name: String,
    /// Short human title, when the option gives one.
    pub title: Option<String>,
    /// The RPC's leading comment.
    pub description: Option<String>,
    /// MCP `readOnlyHint`.
    pub read_only: bool,
    /// MCP `destructiveHint`.
    pub destructive: bool,
    /// MCP `idempotentHint`.
    pub idempotent: bool,
    /// The toolset; defaults to the package's domain (`contacts` for `worktruck.contacts.v1`).
    pub toolset: String,
    /// The RPC.
    pub rpc: MethodDescriptor,
    /// Full name of the service.
    pub service: String,
    /// The gRPC path, e.g. `/worktruck.contacts.v1.ContactsService/ListContacts`.
    pub grpc_path: String,
}

/// The `google.api.field_behavior` annotations of one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldBehaviors {
    /// `REQUIRED`: callers must set it.
    pub required: bool,
    /// `OUTPUT_ONLY`: set by the server; left out of input schemas.
    pub output_only: bool,
    /// `INPUT_ONLY`: never returned; left out of output schemas.
    pub input_only: bool,
    /// `IMMUTABLE`: set on create only.
    pub immutable: bool,
}

/// Every servable RPC of a descriptor set, with the metadata the surfaces are derived from.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: DescriptorPool,
    routes: Vec<Route>,
    tools: Vec<Tool>,
    /// file name → source path → cleaned leading comment.
    comments: HashMap<String, HashMap<Vec<i32>, String>>,
    /// field full name → behaviours; fields without annotations are absent.
    behaviors: HashMap<String, FieldBehaviors>,
}

impl Registry {
    /// Decodes an encoded `FileDescriptorSet` (custom options included, see `proto/build.rs`)
    /// and validates every http rule and tool option in it.
    pub fn load(bytes: &[u8]) -> Result<Self, RegistryError> {
        let pool = DescriptorPool::decode(bytes)?;
        let comments = read_comments(&pool);
        let behaviors = read_behaviors(&pool);
        let mut registry = Self {
            pool,
            routes: Vec::new(),
            tools: Vec::new(),
            comments,
            behaviors,
        };
        registry.read_services()?;
        Ok(registry)
    }

    /// The registry of the protos compiled into this crate.
    pub fn embedded() -> Result<Self, RegistryError> {
        Self::load(crate::DESCRIPTOR_SET)
    }

    /// The descriptor pool.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every REST binding, in proto declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Every MCP tool, in proto declaration order.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The tool with this name.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// The leading comment of a service.
    pub fn service_comment(&self, d: &ServiceDescriptor) -> Option<&str> {
        self.comment(d.parent_file().name(), d.path())
    }

    /// The leading comment of an RPC.
    pub fn method_comment(&self, d: &MethodDescriptor) -> Option<&str> {
        self.comment(d.parent_file().name(), d.path())
    }

    /// The leading comment of a message.
    pub fn message_comment(&self, d: &MessageDescriptor) -> Option<&str> {
        self.comment(d.parent_file().name(), d.path())
    }

    /// The leading comment of a field.
    pub fn field_comment(&self, d: &FieldDescriptor) -> Option<&str> {
        self.comment(d.parent_file().name(), d.path())
    }

    /// The leading comment of an enum.
    pub fn enum_comment(&self, d: &EnumDescriptor) -> Option<&str> {
        self.comment(d.parent_file().name(), d.path())
    }

    /// The leading comment of an enum value.
    pub fn enum_value_comment(&self, d: &EnumValueDescriptor) -> Option<&str> {
        self.comment(d.parent_file().name(), d.path())
    }

    /// The field's `google.api.field_behavior` annotations.
    pub fn field_behaviors(&self, field: &FieldDescriptor) -> FieldBehaviors {
        self.behaviors
            .get(field.full_name())
            .copied()
            .unwrap_or_default()
    }

    fn comment(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.comments.get(file)?.get(path).map(String::as_str)
    }

    fn read_services(&mut self) -> Result<(), RegistryError> {
        let http_ext = self.pool.get_extension_by_name(HTTP_EXTENSION);
        let tool_ext = self.pool.get_extension_by_name(TOOL_EXTENSION);
        let mut route_owner: HashMap<(HttpMethod, String), String> = HashMap::new();
        let mut tool_owner: HashMap<String, String> = HashMap::new();
        let services: Vec<ServiceDescriptor> = self.pool.services().collect();
        for service in services {
            for rpc in service.methods() {
                let options = rpc.options();
                let streaming = rpc.is_client_streaming() || rpc.is_server_streaming();
                let grpc_path = format!("/{}/{}", service.full_name(), rpc.name());
                if let Some(ext) = http_ext.as_ref().filter(|e| options.has_extension(e)) {
                    if streaming {
                        return Err(invalid_rule(&rpc, "only unary RPCs can have an http rule"));
                    }
                    let rule = options.get_extension(ext);
                    let rule = rule
                        .as_message()
                        .ok_or_else(|| invalid_rule(&rpc, "not a message"))?;
                    let routes = read_rule(&rpc, rule, &grpc_path)?;
                    for route in routes {
                        let key = (route.method, route.path.shape());
                        if let Some(first) = route_owner.get(&key) {
                            return Err(RegistryError::DuplicateRoute {
                                method: route.method,
                                path: route.path.as_str().to_owned(),
                                first: first.clone(),
                                second: rpc.full_name().to_owned(),
                            });
                        }
                        route_owner.insert(key, rpc.full_name().to_owned());
                        self.routes.push(route);
                    }
                }
                if let Some(ext) = tool_ext.as_ref().filter(|e| options.has_extension(e)) {
                    if streaming {
                        return Err(invalid_tool(&rpc, "only unary RPCs can be tools"));
                    }
                    let opt = options.get_extension(ext);
                    let opt = opt
                        .as_message()
                        .ok_or_else(|| invalid_tool(&rpc, "not a message"))?;
                    let tool = self.read_tool(&rpc, opt, grpc_path)?;
                    if let Some(first) = tool_owner.get(&tool.name) {
                        return Err(RegistryError::DuplicateTool {
                            name: tool.name,
                            first: first.clone(),
                            second: rpc.full_name().to_owned(),
                        });
                    }
                    tool_owner.insert(tool.name.clone(), rpc.full_name().to_owned());
                    self.tools.push(tool);
                }
            }
        }
        Ok(())
    }

    fn read_tool(
        &self,
        rpc: &MethodDescriptor,
        opt: &DynamicMessage,
        grpc_path: String,
    ) -> Result<Tool, RegistryError> {
        let name = str_field(opt, "name");
        // MCP clients accept 1..64 characters of this set in a tool name.
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(invalid_tool(
                rpc,
                &format!("name '{name}' must be 1-64 of [A-Za-z0-9_-]"),
            ));
        }
        let title = Some(str_field(opt, "title")).filter(|t| !t.is_empty());
        let toolset = Some(str_field(opt, "toolset"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| package_domain(rpc.parent_service().package_name()));
        Ok(Tool {
            name,
            title,
            description: self.method_comment(rpc).map(str::to_owned),
            read_only: bool_field(opt, "read_only"),
            destructive: bool_field(opt, "destructive"),
            idempotent: bool_field(opt, "idempotent"),
            toolset,
            service: rpc.parent_service().full_name().to_owned(),
            rpc: rpc.clone(),
            grpc_path,
        })
    }
}

/// The domain segment of a package: `contacts` for `worktruck.contacts.v1`.
fn package_domain(package: &str) -> String {
    let mut parts: Vec<&str> = package.split('.').collect();
    let is_version = |s: &str| {
        s.strip_prefix('v').is_some_and(|rest| {
            rest.chars().next().is_some_and(|c| c.is_ascii_digit())
                && rest.chars().all(|c| c.is_ascii_alphanumeric())
        })
    };
    if parts.len() > 1 && parts.last().is_some_and(|p| is_version(p)) {
        parts.pop();
    }
    parts.last().copied().unwrap_or_default().to_owned()
}

fn read_rule(
    rpc: &MethodDescriptor,
    rule: &DynamicMessage,
    grpc_path: &str,
) -> Result<Vec<Route>, RegistryError> {
    let mut routes = vec![read_binding(rpc, rule, grpc_path, 0)?];
    if let Some(extra) = rule.get_field_by_name("additional_bindings") {
        for (i, binding) in extra.as_list().unwrap_or_default().iter().enumerate() {
            let binding = binding
                .as_message()
                .ok_or_else(|| invalid_rule(rpc, "bad binding"))?;
            let nested = binding
                .get_field_by_name("additional_bindings")
                .is_some_and(|v| !v.as_list().unwrap_or_default().is_empty());
            if nested {
                return Err(invalid_rule(rpc, "additional_bindings may not nest"));
            }
            routes.push(read_binding(rpc, binding, grpc_path, i + 1)?);
        }
    }
    Ok(routes)
}

fn read_binding(
    rpc: &MethodDescriptor,
    rule: &DynamicMessage,
    grpc_path: &str,
    binding: usize,
) -> Result<Route, RegistryError> {
    let desc = rule.descriptor();
    let is_set = |name: &str| {
        desc.get_field_by_name(name)
            .is_some_and(|f| rule.has_field(&f))
    };
    if is_set("custom") {
        return Err(invalid_rule(rpc, "custom http patterns are not supported"));
    }
    let method = HttpMethod::ALL
        .into_iter()
        .find(|m| is_set(m.rule_field()))
        .ok_or_else(|| invalid_rule(rpc, "no http method set"))?;
    let raw = str_field(rule, method.rule_field());
    let path = PathTemplate::parse(&raw).map_err(|e| invalid_rule(rpc, &e))?;
    let input = rpc.input();
    for var in path.variables() {
        check_path_field(&input, var).map_err(|e| invalid_rule(rpc, &e))?;
    }
    let body = match str_field(rule, "body").as_str() {
        "" => RequestBody::None,
        "*" => RequestBody::Whole,
        name => {
            if input.get_field_by_name(name).is_none() {
                return Err(invalid_rule(
                    rpc,
                    &format!("body field '{name}' does not exist"),
                ));
            }
            if path
                .variables()
                .any(|v| v == name || v.starts_with(&format!("{name}.")))
            {
                return Err(invalid_rule(
                    rpc,
                    &format!("body field '{name}' is also a path variable"),
                ));
            }
            RequestBody::Field(name.to_owned())
        }
    };
    if method == HttpMethod::Get && body != RequestBody::None {
        return Err(invalid_rule(rpc, "a GET binding cannot have a body"));
    }
    let response_body = Some(str_field(rule, "response_body")).filter(|s| !s.is_empty());
    if let Some(name) = &response_body {
        if rpc.output().get_field_by_name(name).is_none() {
            return Err(invalid_rule(
                rpc,
                &format!("response_body field '{name}' does not exist"),
            ));
        }
    }
    Ok(Route {
        method,
        path,
        body,
        response_body,
        service: rpc.parent_service().full_name().to_owned(),
        rpc: rpc.clone(),
        grpc_path: grpc_path.to_owned(),
        binding,
    })
}

/// A path variable must name a singular scalar, reached through singular plain messages.
fn check_path_field(input: &MessageDescriptor, dotted: &str) -> Result<(), String> {
    let mut message = input.clone();
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let field = message.get_field_by_name(part).ok_or_else(|| {
            format!(
                "path field '{dotted}' does not exist in {}",
                message.full_name()
            )
        })?;
        if field.is_list() || field.is_map() {
            return Err(format!("path field '{dotted}' is repeated"));
        }
        let last = i == parts.len() - 1;
        match (field.kind(), last) {
            (Kind::Message(_), true) => return Err(format!("path field '{dotted}' is a message")),
            (Kind::Message(m), false) if !m.full_name().starts_with("google.protobuf.") => {
                message = m
            }
            (_, false) => return Err(format!("path field '{dotted}' crosses a non-message field")),
            (_, true) => {}
        }
    }
    Ok(())
}

fn invalid_rule(rpc: &MethodDescriptor, message: &str) -> RegistryError {
    RegistryError::InvalidRule {
        rpc: rpc.full_name().to_owned(),
        message: message.to_owned(),
    }
}

fn invalid_tool(rpc: &MethodDescriptor, message: &str) -> RegistryError {
    RegistryError::InvalidTool {
        rpc: rpc.full_name().to_owned(),
        message: message.to_owned(),
    }
}

fn str_field(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn bool_field(msg: &DynamicMessage, name: &str) -> bool {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// prost-reflect has no comment accessor; source info is keyed by (file, path) once here.
fn read_comments(pool: &DescriptorPool) -> HashMap<String, HashMap<Vec<i32>, String>> {
    let mut out = HashMap::new();
    for file in pool.files() {
        let Some(info) = &file.file_descriptor_proto().source_code_info else {
            continue;
        };
        let mut by_path = HashMap::new();
        for loc in &info.location {
            let text = match (loc.leading_comments(), loc.trailing_comments()) {
                (l, _) if !l.trim().is_empty() => l,
                (_, t) => t,
            };
            let cleaned = clean_comment(text);
            if !cleaned.is_empty() {
                by_path.insert(loc.path.clone(), cleaned);
            }
        }
        out.insert(file.name().to_owned(), by_path);
    }
    out
}

fn clean_comment(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

fn read_behaviors(pool: &DescriptorPool) -> HashMap<String, FieldBehaviors> {
    let mut out = HashMap::new();
    let (Some(ext), Some(kind)) = (
        pool.get_extension_by_name(FIELD_BEHAVIOR_EXTENSION),
        pool.get_enum_by_name(FIELD_BEHAVIOR_ENUM),
    ) else {
        return out;
    };
    let number = |name: &str| kind.get_value_by_name(name).map(|v| v.number());
    let (required, output_only, input_only, immutable) = (
        number("REQUIRED"),
        number("OUTPUT_ONLY"),
        number("INPUT_ONLY"),
        number("IMMUTABLE"),
    );
    for message in pool.all_messages() {
        for field in message.fields() {
            let options = field.options();
            if !options.has_extension(&ext) {
                continue;
            }
            let value = options.get_extension(&ext);
            let numbers: Vec<i32> = match value.as_ref() {
                Value::List(items) => items.iter().filter_map(Value::as_enum_number).collect(),
                other => other.as_enum_number().into_iter().collect(),
            };
            let has = |n: Option<i32>| n.is_some_and(|n| numbers.contains(&n));
            let b = FieldBehaviors {
                required: has(required),
                output_only: has(output_only),
                input_only: has(input_only),
                immutable: has(immutable),
            };
            if b != FieldBehaviors::default() {
                out.insert(field.full_name().to_owned(), b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::embedded().expect("the embedded descriptor set is valid")
    }

    fn route<'a>(r: &'a Registry, rpc: &str) -> Vec<&'a Route> {
        r.routes().iter().filter(|x| x.rpc.name() == rpc).collect()
    }

    #[test]
    fn contacts_and_tenants_routes_are_read_from_the_http_rules() {
        let r = registry();
        let expect = [
            (
                "CreateContact",
                HttpMethod::Post,
                "/api/v1/contacts",
                RequestBody::Whole,
            ),
            (
                "GetContact",
                HttpMethod::Get,
                "/api/v1/contacts/{id}",
                RequestBody::None,
            ),
            (
                "UpdateContact",
                HttpMethod::Patch,
                "/api/v1/contacts/{id}",
                RequestBody::Whole,
            ),
            (
                "DeleteContact",
                HttpMethod::Delete,
                "/api/v1/contacts/{id}",
                RequestBody::None,
            ),
            (
                "ListContacts",
                HttpMethod::Get,
                "/api/v1/contacts",
                RequestBody::None,
            ),
            (
                "GetContactHistory",
                HttpMethod::Get,
                "/api/v1/contacts/{id}/history",
                RequestBody::None,
            ),
            (
                "DiffContact",
                HttpMethod::Get,
                "/api/v1/contacts/{id}/diff",
                RequestBody::None,
            ),
            (
                "GetContactTimeline",
                HttpMethod::Get,
                "/api/v1/contacts/{id}/timeline",
                RequestBody::None,
            ),
            (
                "GetTenant",
                HttpMethod::Get,
                "/api/v1/tenant",
                RequestBody::None,
            ),
            (
                "CreateApiKey",
                HttpMethod::Post,
                "/api/v1/api-keys",
                RequestBody::Whole,
            ),
            (
                "ListApiKeys",
                HttpMethod::Get,
                "/api/v1/api-keys",
                RequestBody::None,
            ),
            (
                "GetApiKey",
                HttpMethod::Get,
                "/api/v1/api-keys/{id}",
                RequestBody::None,
            ),
            (
                "RotateApiKey",
                HttpMethod::Post,
                "/api/v1/api-keys/{id}/rotate",
                RequestBody::Whole,
            ),
            (
                "DeleteApiKey",
                HttpMethod::Delete,
                "/api/v1/api-keys/{id}",
                RequestBody::None,
            ),
        ];
        for (rpc, method, path, body) in expect.clone() {
            let found = route(&r, rpc);
            assert_eq!(found.len(), 1, "{rpc}");
            assert_eq!(found[0].method, method, "{rpc}");
            assert_eq!(found[0].path.as_str(), path, "{rpc}");
            assert_eq!(found[0].body, body, "{rpc}");
        }
        let get = route(&r, "GetContact")[0];
        assert_eq!(get.service, "worktruck.contacts.v1.ContactsService");
        assert_eq!(
            get.grpc_path,
            "/worktruck.contacts.v1.ContactsService/GetContact"
        );
        assert_eq!(get.path.variables().collect::<Vec<_>>(), ["id"]);
        assert_eq!(r.routes().len(), expect.len());
    }

    #[test]
    fn internal_rpcs_get_no_route_and_no_tool() {
        let r = registry();
        for rpc in ["AuthenticateApiKey", "CreateTenant"] {
            assert!(route(&r, rpc).is_empty(), "{rpc}");
            assert!(r.tools().iter().all(|t| t.rpc.name() != rpc));
        }
    }

    #[test]
    fn contacts_tools_carry_their_annotations() {
        let r = registry();
        let names: Vec<&str> = r.tools().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "contacts_create",
                "contacts_get",
                "contacts_update",
                "contacts_delete",
                "contacts_search"
            ]
        );
        // (name, read_only, destructive, idempotent)
        let expect = [
            ("contacts_create", false, false, false),
            ("contacts_get", true, false, true),
            ("contacts_update", false, false, true),
            ("contacts_delete", false, true, true),
            ("contacts_search", true, false, true),
        ];
        for (name, ro, destructive, idempotent) in expect {
            let t = r.tool(name).unwrap();
            assert_eq!(
                (t.read_only, t.destructive, t.idempotent),
                (ro, destructive, idempotent),
                "{name}"
            );
            assert_eq!(t.toolset, "contacts");
            assert!(t.title.is_some());
            assert!(t.description.is_some());
        }
        let search = r.tool("contacts_search").unwrap();
        assert_eq!(search.rpc.name(), "ListContacts");
        assert_eq!(search.title.as_deref(), Some("Search contacts"));
        assert_eq!(
            search.grpc_path,
            "/worktruck.contacts.v1.ContactsService/ListContacts"
        );
    }

    #[test]
    fn comments_and_field_behaviours_are_read() {
        let r = registry();
        let get = &route(&r, "GetContact")[0].rpc;
        assert!(
            r.method_comment(get)
                .unwrap()
                .starts_with("Returns one contact")
        );
        let contact = r
            .pool()
            .get_message_by_name("worktruck.contacts.v1.Contact")
            .unwrap();
        assert_eq!(
            r.message_comment(&contact),
            Some("A person, organization or group.")
        );
        let id = contact.get_field_by_name("id").unwrap();
        assert_eq!(r.field_comment(&id), Some("Contact id (UUID)."));
        assert!(r.field_behaviors(&id).output_only);
        let kind = r
            .pool()
            .get_enum_by_name("worktruck.contacts.v1.ContactKind")
            .unwrap();
        assert_eq!(r.enum_comment(&kind), Some("What a contact is."));
        let person = kind.get_value_by_name("CONTACT_KIND_PERSON").unwrap();
        assert_eq!(r.enum_value_comment(&person), Some("A person."));
        let create = r
            .pool()
            .get_message_by_name("worktruck.contacts.v1.CreateContactRequest")
            .unwrap();
        assert!(
            r.field_behaviors(&create.get_field_by_name("kind").unwrap())
                .required
        );
        assert_eq!(
            r.field_behaviors(&create.get_field_by_name("bio").unwrap()),
            FieldBehaviors::default()
        );
    }

    #[test]
    fn templates_outside_the_supported_subset_are_refused() {
        let t = PathTemplate::parse("/api/v1/things/{thing.id}:archive").unwrap();
        assert_eq!(t.verb(), Some("archive"));
        assert_eq!(t.variables().collect::<Vec<_>>(), ["thing.id"]);
        let t = PathTemplate::parse("/api/v1/things:batchGet").unwrap();
        assert_eq!(
            t.segments(),
            [
                Segment::Literal("api".into()),
                Segment::Literal("v1".into()),
                Segment::Literal("things".into())
            ]
        );
        assert_eq!(t.verb(), Some("batchGet"));
        assert!(PathTemplate::parse("/x/{id=*}").is_ok());
        for bad in [
            "x",
            "/x/{name=projects/*}",
            "/x/**",
            "/x/*",
            "/x//y",
            "/x/{}",
            "/x/{a}/{a}",
            "/x/{a-b}",
            "/x/y:",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(package_domain("worktruck.contacts.v1"), "contacts");
        assert_eq!(package_domain("worktruck.crm.v2beta"), "crm");
        assert_eq!(package_domain("single"), "single");
    }

    /// Compiles a scratch proto (with the real vendored imports) and loads it.
    fn load_proto(services: &str) -> Result<Registry, RegistryError> {
        let dir = tempfile::tempdir().unwrap();
        let src = format!(
            "syntax = \"proto3\";\npackage t.v1;\nimport \"google/api/annotations.proto\";\n\
             import \"worktruck/mcp/v1/options.proto\";\n\
             message Req {{ string id = 1; Inner inner = 2; repeated string tags = 3; }}\n\
             message Inner {{ string name = 1; }}\nmessage Res {{ string id = 1; }}\n{services}"
        );
        std::fs::write(dir.path().join("t.proto"), src).unwrap();
        let includes = [dir.path(), std::path::Path::new(env!("CARGO_MANIFEST_DIR"))];
        let mut compiler = protox::Compiler::new(includes).unwrap();
        compiler.include_imports(true).include_source_info(true);
        compiler.open_files(["t.proto"]).unwrap();
        Registry::load(&compiler.encode_file_descriptor_set())
    }

    fn rpc(name: &str, rule: &str) -> String {
        format!("rpc {name}(Req) returns (Res) {{ option (google.api.http) = {{ {rule} }}; }}\n")
    }

    #[test]
    fn nested_fields_verbs_and_additional_bindings_load() {
        let r = load_proto(&format!(
            "service S {{ {} rpc T(Req) returns (Res) {{ option (worktruck.mcp.v1.tool) = {{ name: \"t_do\" }}; }} }}",
            rpc("A", "get: \"/a/{inner.name}:peek\" additional_bindings { post: \"/b\" body: \"*\" }")
        ))
        .unwrap();
        let routes = r.routes();
        assert_eq!(routes.len(), 2);
        assert_eq!(
            (routes[0].method, routes[0].path.verb(), routes[0].binding),
            (HttpMethod::Get, Some("peek"), 0)
        );
        assert_eq!(
            (routes[1].method, routes[1].path.as_str(), routes[1].binding),
            (HttpMethod::Post, "/b", 1)
        );
        assert_eq!(
            r.tools()[0].toolset,
            "t",
            "default toolset is the package's domain"
        );
    }

    #[test]
    fn unservable_rules_are_refused_at_load() {
        let cases = [
            (
                rpc("A", "get: \"/a/{id}\"") + &rpc("B", "get: \"/a/{inner.name}\""),
                "duplicate route GET /a/{inner.name}",
            ),
            (rpc("A", "get: \"/a/{id=things/*}\""), "segment pattern"),
            (rpc("A", "get: \"/a/{nope}\""), "'nope' does not exist"),
            (rpc("A", "get: \"/a/{tags}\""), "is repeated"),
            (rpc("A", "get: \"/a/{inner}\""), "is a message"),
            (
                rpc("A", "post: \"/a\" body: \"nope\""),
                "body field 'nope' does not exist",
            ),
            (
                rpc("A", "get: \"/a\" body: \"*\""),
                "GET binding cannot have a body",
            ),
            (
                rpc("A", "get: \"/a\" response_body: \"nope\""),
                "response_body field 'nope'",
            ),
            (
                rpc("A", "custom: { kind: \"HEAD\" path: \"/a\" }"),
                "custom http patterns",
            ),
        ];
        for (services, expected) in cases {
            let err = load_proto(&format!("service S {{ {services} }}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let tool = |n: &str, name: &str| {
            format!(
                "rpc {n}(Req) returns (Res) {{ option (worktruck.mcp.v1.tool) = {{ name: \"{name}\" }}; }}\n"
            )
        };
        let err = load_proto(&format!(
            "service S {{ {} {} }}",
            tool("A", "x"),
            tool("B", "x")
        ))
        .unwrap_err();
        assert!(
            matches!(err, RegistryError::DuplicateTool { ref name, .. } if name == "x"),
            "{err}"
        );
        let err = load_proto(&format!("service S {{ {} }}", tool("A", "bad name"))).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidTool { .. }), "{err}");
    }
}
