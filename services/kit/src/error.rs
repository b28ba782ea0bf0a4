//! The one closed error-code table (brief §8), mapped to gRPC and HTTP once.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo.domain` every Worktruck error carries.
pub const ERROR_DOMAIN: &str = "worktruck.app";

/// The longest message a gRPC status carries. It travels in the `grpc-message` header, which
/// HTTP/2 peers refuse past their header-list limit (then the caller sees a 500 instead of the
/// error), so a message that echoes a caller's input is cut here whatever made it.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;

/// The one way an error message quotes what a caller sent: a bounded, escaped prefix
/// (`"xxxx…" (6812 characters)`).
pub use worktruck_proto::text::quote;

/// Every error code any surface reports. Rendered in lower snake case as `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed (400).
    InvalidArgument,
    /// A value breaks a rule (400).
    ValidationFailed,
    /// No valid credentials (401).
    Unauthenticated,
    /// Payment required (402, gateways only).
    PaymentRequired,
    /// Not allowed (403).
    PermissionDenied,
    /// Missing scope (403).
    InsufficientScope,
    /// Not found, including another tenant's row (404).
    NotFound,
    /// The path exists but not with this HTTP method (405, gateways only).
    MethodNotAllowed,
    /// The caller does not accept any media type the endpoint answers with (406, gateways only).
    NotAcceptable,
    /// Changed meanwhile, or clashes with the current state (409).
    Conflict,
    /// Already exists (409).
    AlreadyExists,
    /// Before the retention window (410).
    Gone,
    /// An `If-Match` precondition does not hold: the entity is at another version (412,
    /// gateways only; services answer `conflict` and the gateway that sent `If-Match` says 412).
    PreconditionFailed,
    /// An `Idempotency-Key` already used for another request (422, gateways only).
    IdempotencyKeyReused,
    /// The body is larger than the gateway accepts (413).
    PayloadTooLarge,
    /// The body's media type is not one the endpoint reads (415, gateways only).
    UnsupportedMediaType,
    /// Too many requests (429).
    RateLimited,
    /// A dependency is down (503).
    Unavailable,
    /// Internal failure (500); no detail is leaked.
    Internal,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 19] = [
        Self::InvalidArgument,
        Self::ValidationFailed,
        Self::Unauthenticated,
        Self::PaymentRequired,
        Self::PermissionDenied,
        Self::InsufficientScope,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::NotAcceptable,
        Self::Conflict,
        Self::AlreadyExists,
        Self::Gone,
        Self::PreconditionFailed,
        Self::PayloadTooLarge,
        Self::IdempotencyKeyReused,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The code as REST and MCP show it, e.g. `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::ValidationFailed => "validation_failed",
            Self::Unauthenticated => "unauthenticated",
            Self::PaymentRequired => "payment_required",
            Self::PermissionDenied => "permission_denied",
            Self::InsufficientScope => "insufficient_scope",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotAcceptable => "not_acceptable",
            Self::Conflict => "conflict",
            Self::AlreadyExists => "already_exists",
            Self::Gone => "gone",
            Self::PreconditionFailed => "precondition_failed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Parses [`ErrorCode::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status the gateways answer with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument | Self::ValidationFailed => 400,
            Self::Unauthenticated => 401,
            Self::PaymentRequired => 402,
            Self::PermissionDenied | Self::InsufficientScope => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::NotAcceptable => 406,
            Self::Conflict | Self::AlreadyExists => 409,
            Self::Gone => 410,
            Self::PreconditionFailed => 412,
            Self::IdempotencyKeyReused => 422,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The gRPC status code services answer with.
    pub fn grpc_code(self) -> Code {
        match self {
            Self::InvalidArgument | Self::ValidationFailed => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PaymentRequired | Self::PermissionDenied | Self::InsufficientScope => {
                Code::PermissionDenied
            }
            Self::NotFound => Code::NotFound,
            Self::MethodNotAllowed => Code::Unimplemented,
            Self::NotAcceptable | Self::UnsupportedMediaType | Self::IdempotencyKeyReused => Code::InvalidArgument,
            Self::Conflict => Code::Aborted,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::Gone | Self::PreconditionFailed => Code::FailedPrecondition,
            Self::PayloadTooLarge => Code::OutOfRange,
            Self::RateLimited => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }

    /// The code for a bare HTTP status (e.g. a framework's own rejection), so that it too can be
    /// rendered as the envelope.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            401 => Self::Unauthenticated,
            402 => Self::PaymentRequired,
            403 => Self::PermissionDenied,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            406 => Self::NotAcceptable,
            409 => Self::Conflict,
            410 => Self::Gone,
            412 => Self::PreconditionFailed,
            422 => Self::IdempotencyKeyReused,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            429 => Self::RateLimited,
            503 | 504 => Self::Unavailable,
            400..=499 => Self::InvalidArgument,
            _ => Self::Internal,
        }
    }

    /// The code for a gRPC status that carries no `ErrorInfo` (e.g. from tonic itself).
    pub fn from_grpc_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::Aborted => Self::Conflict,
            Code::FailedPrecondition => Self::Conflict,
            Code::ResourceExhausted => Self::RateLimited,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How [`Error::stale_version`] ends its message.
const STALE_VERSION_MARK: &str = " (expected_version)";

/// A failure with a code from the table and a message safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// The code.
    pub code: ErrorCode,
    /// Human text for the caller. Never contains secrets or internal detail.
    pub message: String,
}

/// Shorthand for results in services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    /// 400 `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    /// 400 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }
    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, format!("{} not found", what.into()))
    }
    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// 409 `conflict` for an `expected_version` that is not the entity's: the one wording of
    /// it, which [`Error::is_stale_version`] recognises (so that a gateway which sent `If-Match`
    /// can answer 412 for exactly this conflict and no other).
    pub fn stale_version(entity: &str, current: i64, expected: i64) -> Self {
        Self::conflict(format!("{entity} is at version {current}, not {expected}{STALE_VERSION_MARK}"))
    }
    /// Whether this is [`Error::stale_version`].
    pub fn is_stale_version(&self) -> bool {
        self.code == ErrorCode::Conflict && self.message.ends_with(STALE_VERSION_MARK)
    }
    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    /// 500 `internal`: logs the cause once here and shows the caller nothing of it.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// The gRPC status, with the code as `ErrorInfo.reason`.
    pub fn to_status(&self) -> Status {
        Status::with_error_details(
            self.code.grpc_code(),
            worktruck_proto::text::bounded(&self.message, MAX_STATUS_MESSAGE_BYTES),
            ErrorDetails::with_error_info(self.code.as_str(), ERROR_DOMAIN, std::collections::HashMap::<String, String>::new()),
        )
    }

    /// Reads an error back from a gRPC status (ours carry `ErrorInfo`; others map by code).
    pub fn from_status(status: &Status) -> Self {
        let code = status
            .get_details_error_info()
            .and_then(|info| ErrorCode::parse(&info.reason))
            .unwrap_or_else(|| ErrorCode::from_grpc_code(status.code()));
        let message = if status.message().is_empty() || code == ErrorCode::Internal {
            default_message(code).to_owned()
        } else {
            status.message().to_owned()
        };
        Self { code, message }
    }

    /// The REST/MCP envelope `{ "error": { "code", "message" } }`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code.as_str(), "message": self.message } })
    }
}

/// A generic message for a code, for failures that carry none of their own.
pub fn default_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Internal => "internal error",
        ErrorCode::Unavailable => "a service is unavailable; retry later",
        ErrorCode::Unauthenticated => "authentication required",
        ErrorCode::NotFound => "not found",
        ErrorCode::MethodNotAllowed => "method not allowed",
        ErrorCode::PayloadTooLarge => "request body too large",
        ErrorCode::UnsupportedMediaType => "unsupported content type; send application/json",
        ErrorCode::NotAcceptable => "not acceptable: accept application/json (and, for MCP, text/event-stream)",
        ErrorCode::RateLimited => "too many requests",
        ErrorCode::Gone => "before the retention window",
        ErrorCode::PaymentRequired => "payment required",
        ErrorCode::PermissionDenied | ErrorCode::InsufficientScope => "permission denied",
        ErrorCode::Conflict | ErrorCode::AlreadyExists => "conflict",
        _ => "bad request",
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        e.to_status()
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::new(ErrorCode::Unavailable, "database unavailable; retry later")
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::new(ErrorCode::AlreadyExists, "already exists")
            }
            _ => Self::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_a_grpc_status() {
        for code in ErrorCode::ALL {
            let e = Error::new(code, "boom");
            let back = Error::from_status(&e.to_status());
            assert_eq!(back.code, code);
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            if code != ErrorCode::ValidationFailed && code != ErrorCode::InsufficientScope && code != ErrorCode::AlreadyExists {
                assert_eq!(ErrorCode::from_http_status(code.http_status()), code, "{code}");
            }
        }
    }

    #[test]
    fn the_readme_lists_every_code_with_its_status() {
        let readme = include_str!("../../../README.md").split_whitespace().collect::<Vec<_>>().join(" ");
        let list = &readme[readme.find("The codes, a closed list:").expect("the README's list of codes")..];
        let readme = &list[..list.len().min(1200)];
        for code in ErrorCode::ALL {
            let name = format!("`{}`", code.as_str());
            let at = readme.find(&name).unwrap_or_else(|| panic!("README lacks {name}"));
            let status = format!("({})", code.http_status());
            let rest = &readme[at..];
            let next_status = rest.find('(').expect("a status follows");
            assert!(rest[next_status..].starts_with(&status), "README gives {name} another status than {status}");
        }
    }

    #[test]
    fn status_messages_are_bounded() {
        let e = Error::invalid(format!("id must be a UUID, got {}", "x".repeat(6812)));
        let st = e.to_status();
        assert!(st.message().len() <= MAX_STATUS_MESSAGE_BYTES, "{}", st.message().len());
        assert_eq!(Error::from_status(&st).code, ErrorCode::InvalidArgument);
        let q = quote(&"x".repeat(6812));
        assert!(q.len() < 100 && q.contains("6812"), "{q}");
    }

    #[test]
    fn internal_messages_are_not_leaked() {
        let st = Status::internal("db password is hunter2");
        let e = Error::from_status(&st);
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(!e.message.contains("hunter2"));
    }
}
