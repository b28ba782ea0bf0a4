//! The gateway's two kinds of failure: refusing to start ([`GatewayError`]) and answering a
//! request with the `{"error":{"code","message"}}` envelope ([`ApiError`]).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use worktruck_kit::{Error, ErrorCode};

/// Why a router cannot be built from a registry.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A routed service (or the tenants service, needed for authentication) has no channel.
    #[error("no upstream channel for service {0}")]
    MissingUpstream(String),
    /// A generated route would shadow one the gateway serves itself.
    #[error("route {method} {path} of {rpc} collides with a gateway route")]
    ReservedPath {
        /// The HTTP method.
        method: String,
        /// The path template.
        path: String,
        /// The RPC that declares it.
        rpc: String,
    },
    /// An outbound HTTPS client (OIDC issuer, x402 facilitator) could not be made, e.g. an
    /// unreadable `outbound.ca_file`.
    #[error(transparent)]
    Outbound(#[from] worktruck_kit::http::ClientError),
    /// The descriptor registry has no definition for a gRPC path.
    #[error("invalid gRPC path {0}")]
    InvalidGrpcPath(String),
}

/// A request failure rendered as the error envelope with the status from the code table.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    challenge: bool,
    /// Rarely set, so boxed: errors travel in `Result`s on every hot path.
    more: Option<Box<More>>,
}

/// What few errors carry.
#[derive(Debug, Clone, Default)]
struct More {
    headers: http::HeaderMap,
    /// Extra top-level body fields beside `error` (e.g. x402's `payment_options`).
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with a code from the table. The message is cut to
    /// [`worktruck_kit::error::MAX_STATUS_MESSAGE_BYTES`], so that however a message came to
    /// echo a caller's input, the answer stays small.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            code,
            message: bounded(message.into()),
            challenge: code == ErrorCode::Unauthenticated,
            more: None,
        }
    }

    /// Replaces the message (e.g. with a framework's own words for a refusal).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = bounded(message.into());
        self
    }

    /// Adds a top-level field to the body beside `error`.
    pub fn with_body_field(mut self, key: &str, value: serde_json::Value) -> Self {
        self.more.get_or_insert_default().extra.insert(key.to_owned(), value);
        self
    }

    /// Adds headers to the response (rate-limit headers, `Retry-After`).
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        self.more.get_or_insert_default().headers.extend(headers);
        self
    }

    /// 400 `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 405 `method_not_allowed` (axum adds the `Allow` header).
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MethodNotAllowed, message)
    }

    /// 500 `internal`: logs the cause once, here, and shows the caller nothing of it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::internal(cause).into()
    }

    /// The envelope for a bare status, for responses produced outside the gateway's handlers
    /// (e.g. a framework rejection) that must still use the envelope.
    pub fn from_status(status: StatusCode) -> Self {
        let code = ErrorCode::from_http_status(status.as_u16());
        Self {
            status,
            code,
            message: worktruck_kit::error::default_message(code).to_owned(),
            challenge: status == StatusCode::UNAUTHORIZED,
            more: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error.code`, e.g. `not_found`.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The `error.message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The envelope body.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "error": { "code": self.code.as_str(), "message": self.message } });
        if let (Some(map), Some(more)) = (body.as_object_mut(), &self.more) {
            map.extend(more.extra.clone());
        }
        body
    }
}

fn bounded(message: String) -> String {
    if message.len() <= worktruck_kit::error::MAX_STATUS_MESSAGE_BYTES {
        return message;
    }
    worktruck_proto::text::bounded(&message, worktruck_kit::error::MAX_STATUS_MESSAGE_BYTES)
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::new(e.code, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, crate::json_body(&self.to_json())).into_response();
        let headers = response.headers_mut();
        if let Some(more) = self.more {
            headers.extend(more.headers);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::JSON));
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
