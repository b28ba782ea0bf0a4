//! The few REST endpoints whose bodies are not JSON (vCard, iCalendar). They stay ordinary RPCs with
//! ordinary routes (their JSON forms work, and OpenAPI and scopes come from the descriptors);
//! this table only says which string field carries the raw body: a request body of the media
//! type becomes that field, and unless the caller asks for JSON (`Accept: application/json`)
//! the answer is that field sent as the media type — every page of it, streamed, for a paged
//! export that answers `next_cursor`.

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost::Message;
use prost_reflect::{DynamicMessage, Value as PValue};
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use worktruck_proto::registry::Route;

use crate::error::ApiError;

/// One RPC with a raw body.
pub(crate) struct RawBody {
    /// The RPC's full name.
    rpc: &'static str,
    /// The request's string field a raw request body fills.
    request_field: Option<&'static str>,
    /// The response's string field sent as the raw answer.
    response_field: Option<&'static str>,
    /// The media type of the answer, and the first one accepted for requests.
    media_type: &'static str,
    /// Other request media types taken.
    also: &'static [&'static str],
    /// The answer is a page with `next_cursor`; the raw answer streams every page.
    paged: bool,
}

const VCARD: &str = "text/vcard; charset=utf-8";
const VCARD_ALSO: &[&str] = &["text/vcard", "text/x-vcard", "text/directory", "text/plain"];
const ICS: &str = "text/calendar; charset=utf-8";
const ICS_ALSO: &[&str] = &["text/calendar", "text/plain"];

/// Every RPC with a raw body.
const RAW: &[RawBody] = &[
    RawBody {
        rpc: "worktruck.contacts.v1.ContactsService.ImportContacts",
        request_field: Some("vcard"),
        response_field: None,
        media_type: VCARD,
        also: VCARD_ALSO,
        paged: false,
    },
    RawBody {
        rpc: "worktruck.contacts.v1.ContactsService.ExportContactVcard",
        request_field: None,
        response_field: Some("vcard"),
        media_type: VCARD,
        also: VCARD_ALSO,
        paged: false,
    },
    RawBody {
        rpc: "worktruck.contacts.v1.ContactsService.ExportContacts",
        request_field: None,
        response_field: Some("vcard"),
        media_type: VCARD,
        also: VCARD_ALSO,
        paged: true,
    },
    RawBody {
        rpc: "worktruck.calendar.v1.CalendarService.ImportCalendarIcs",
        request_field: Some("ics"),
        response_field: None,
        media_type: ICS,
        also: ICS_ALSO,
        paged: false,
    },
    RawBody {
        rpc: "worktruck.calendar.v1.CalendarService.ExportEventIcs",
        request_field: None,
        response_field: Some("ics"),
        media_type: ICS,
        also: ICS_ALSO,
        paged: false,
    },
    RawBody {
        rpc: "worktruck.calendar.v1.CalendarService.ExportCalendarIcs",
        request_field: None,
        response_field: Some("ics"),
        media_type: ICS,
        also: ICS_ALSO,
        paged: false,
    },
];

/// The raw-body rule of a route, if it has one.
pub(crate) fn rule(route: &Route) -> Option<&'static RawBody> {
    RAW.iter().find(|r| r.rpc == route.rpc.full_name())
}

fn essence(ct: &str) -> String {
    ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

impl RawBody {
    /// When the request body is of this rule's media type: the JSON request it stands for.
    /// Line ends become line feeds (vCard's CRLF is not a control character a string field
    /// may hold).
    pub(crate) fn wrap(&self, content_type: Option<&str>, body: &Bytes) -> Result<Option<Bytes>, ApiError> {
        let (Some(field), Some(ct)) = (self.request_field, content_type) else { return Ok(None) };
        let ct = essence(ct);
        if ct != essence(self.media_type) && !self.also.contains(&ct.as_str()) {
            return Ok(None);
        }
        let text = std::str::from_utf8(body).map_err(|_| ApiError::invalid("the body must be UTF-8 text"))?;
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        Ok(Some(Bytes::from(serde_json::to_vec(&json!({ field: text })).expect("JSON serialises"))))
    }

    /// Whether the answer goes out raw: the rule names a response field and the caller did not
    /// ask for JSON.
    pub(crate) fn raw_answer(&self, headers: &HeaderMap) -> bool {
        let wants_json = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| essence(p) == "application/json"));
        self.response_field.is_some() && !wants_json
    }

    /// The raw answer: the field of `first`, then, for a paged rule, the field of every
    /// following page, fetched as the body streams.
    pub(crate) fn answer(&self, route: &Route, first: Value, call: Next) -> Response {
        let field = self.response_field.expect("raw_answer checked it");
        let text = move |v: &Value| v.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        let head = Bytes::from(text(&first));
        let mut response = if self.paged {
            let next = first.get("next_cursor").and_then(Value::as_str).unwrap_or_default().to_owned();
            let route = route.clone();
            let pages = futures::stream::unfold((next, call), move |(cursor, call)| {
                let route = route.clone();
                async move {
                    if cursor.is_empty() {
                        return None;
                    }
                    match call.page(&route, &cursor).await {
                        Ok(v) => {
                            let next = v.get("next_cursor").and_then(Value::as_str).unwrap_or_default().to_owned();
                            Some((Ok::<Bytes, std::io::Error>(Bytes::from(text(&v))), (next, call)))
                        }
                        Err(e) => {
                            // The status line is gone; cut the body so the client sees a truncated file.
                            tracing::warn!(error = ?e, "export page failed");
                            Some((Err(std::io::Error::other("export page failed")), (String::new(), call)))
                        }
                    }
                }
            });
            let body = futures::StreamExt::chain(futures::stream::once(async move { Ok::<Bytes, std::io::Error>(head) }), pages);
            (StatusCode::OK, Body::from_stream(body)).into_response()
        } else {
            (StatusCode::OK, Body::from(head)).into_response()
        };
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(self.media_type));
        response
    }
}

/// What fetching a following page needs.
pub(crate) struct Next {
    pub channel: Channel,
    pub grpc_path: http::uri::PathAndQuery,
    pub metadata: MetadataMap,
}

impl Next {
    async fn page(&self, route: &Route, cursor: &str) -> Result<Value, ApiError> {
        let mut message = DynamicMessage::new(route.rpc.input());
        message
            .try_set_field_by_name("cursor", PValue::String(cursor.to_owned()))
            .map_err(|e| ApiError::internal(format!("cursor field: {e}")))?;
        let _ = message.try_set_field_by_name("limit", PValue::I32(200));
        let reply =
            crate::upstream::unary(self.channel.clone(), self.grpc_path.clone(), message.encode_to_vec().into(), self.metadata.clone())
                .await
                .map_err(|s| ApiError::from(worktruck_kit::Error::from_status(&s)))?;
        crate::transcode::response_json(route, &reply)
    }
}
