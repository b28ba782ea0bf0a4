//! The descriptor registry: every unary RPC's REST binding (`google.api.http`), MCP tool option
//! (`worktruck.mcp.v1.tool`), field behaviours and proto comments, read once from the encoded
//! descriptor set and validated before any surface is built from it.
//!
//! A rule the gateways cannot serve is refused here, at start-up, never at request time.

use std::collections::HashMap;

use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, EnumValueDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, MethodDescriptor, ReflectMessage, ServiceDescriptor, Value,
};

mod template;

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

pub use template::{HttpMethod, PathTemplate, Segment};

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

impl Route {
    /// The request field that takes the raw HTTP body, when the rule's `body` names a
    /// `google.api.HttpBody` field (an upload, an import).
    pub fn raw_body_field(&self) -> Option<&str> {
        let RequestBody::Field(name) = &self.body else { return None };
        let field = self.rpc.input().get_field_by_name(name)?;
        match field.kind() {
            prost_reflect::Kind::Message(m) if m.full_name() == crate::HTTP_BODY => Some(name.as_str()),
            _ => None,
        }
    }

    /// True when the response is a `google.api.HttpBody`, answered as its raw bytes.
    pub fn raw_response(&self) -> bool {
        self.rpc.output().full_name() == crate::HTTP_BODY
    }
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

    /// The same registry with only the routes and tools of the gRPC services `keep` accepts
    /// (by full name), for gateways that serve a subset of the services.
    pub fn retain_services(mut self, keep: impl Fn(&str) -> bool) -> Self {
        self.routes.retain(|r| keep(&r.service));
        self.tools.retain(|t| keep(&t.service));
        self
    }

    /// The full names of every gRPC service that has a route or a tool.
    pub fn served_services(&self) -> std::collections::BTreeSet<&str> {
        self.routes.iter().map(|r| r.service.as_str()).chain(self.tools.iter().map(|t| t.service.as_str())).collect()
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
mod tests;
