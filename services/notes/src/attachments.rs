//! Note attachments: URL references, and uploaded files kept in kit's blob store (local
//! filesystem by default, S3 when configured). An attachment's description is a bitemporal
//! entity (`attachment`) like a note; its bytes live under `<tenant>/<attachment id>`. The
//! content type is sniffed from the bytes (`infer`, then UTF-8 text), never trusted from the
//! client, and downloads go out with `nosniff` and as `attachment`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use worktruck_kit::pbjson::timestamp;
use worktruck_kit::store::{Record, Store};
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::notes::v1 as pb;

use crate::domain::check_url;

/// Attachment descriptions in kit's store.
pub const ATTACHMENTS: Store = Store::new("attachment");

/// Most attachments one note carries.
pub const MAX_PER_NOTE: usize = 200;

/// `[settings.notes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Largest uploaded file, in bytes (one more is a 413).
    pub attachment_max_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { attachment_max_bytes: 25 * 1024 * 1024 }
    }
}

/// The stored description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachmentDoc {
    pub note_id: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_content_type: Option<String>,
    #[serde(default)]
    pub size_bytes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl AttachmentDoc {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an attachment serialises")
    }

    pub fn from_value(v: &Value) -> Result<Self> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// The wire attachment.
pub fn attachment_pb(r: &Record) -> Result<pb::NoteAttachment> {
    let d = AttachmentDoc::from_value(&r.doc)?;
    Ok(pb::NoteAttachment {
        id: r.id.to_string(),
        note_id: d.note_id,
        kind: d.kind,
        url: d.url,
        filename: d.filename,
        title: d.title,
        content_type: d.content_type,
        declared_content_type: d.declared_content_type,
        size_bytes: d.size_bytes,
        sha256: d.sha256,
        created_at: Some(timestamp(r.created_at)),
    })
}

/// Where an attachment's bytes are.
pub fn blob_key(tenant: Uuid, id: Uuid) -> String {
    format!("{tenant}/{id}")
}

/// A file name to keep: the last path segment, no control characters, at most 255 characters;
/// `file` when nothing is left.
pub fn clean_filename(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or_default();
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = last.chars().filter(|c| !c.is_control()).take(255).collect();
    let name = name.trim().trim_matches('.').trim();
    if name.is_empty() { "file".to_owned() } else { name.to_owned() }
}

/// A caption: at most 500 characters on one line.
pub fn clean_title(t: Option<&str>) -> Result<Option<String>> {
    match t.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) if t.chars().count() > 500 => Err(Error::validation("title must be at most 500 characters")),
        Some(t) => Ok(Some(t.to_owned())),
    }
}

/// A URL reference's description.
pub fn url_doc(note: Uuid, url: &str, title: Option<&str>, filename: Option<&str>) -> Result<AttachmentDoc> {
    let url = check_url("url", url)?.ok_or_else(|| Error::validation("url is required"))?;
    let default_name = url.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/').rsplit('/').next().map(str::to_owned);
    Ok(AttachmentDoc {
        note_id: note.to_string(),
        kind: "url".into(),
        url: Some(url.clone()),
        filename: clean_filename(filename.or(default_name.as_deref())),
        title: clean_title(title)?,
        content_type: String::new(),
        declared_content_type: None,
        size_bytes: 0,
        sha256: None,
    })
}

/// The file of an upload body: the body itself, or the `file` part of a
/// `multipart/form-data` body (with that part's file name and declared type).
pub async fn file_of(content_type: &str, data: Vec<u8>) -> Result<(Bytes, Option<String>, Option<String>)> {
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media != "multipart/form-data" {
        let declared = (!content_type.trim().is_empty()).then(|| content_type.trim().to_owned());
        return Ok((Bytes::from(data), None, declared));
    }
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| Error::invalid(format!("multipart/form-data without a usable boundary: {e}")))?;
    let body = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(Bytes::from(data)) });
    let mut parts = multer::Multipart::new(body, boundary);
    while let Some(field) = parts.next_field().await.map_err(|e| Error::invalid(format!("malformed multipart body: {e}")))? {
        if field.name() == Some("file") {
            let name = field.file_name().map(str::to_owned);
            let declared = field.content_type().map(ToString::to_string);
            let bytes = field.bytes().await.map_err(|e| Error::invalid(format!("malformed multipart body: {e}")))?;
            return Ok((bytes, name, declared));
        }
    }
    Err(Error::invalid("a multipart/form-data upload needs a part named file"))
}

/// The content type of `bytes`, from the bytes: a known signature, else UTF-8 text, else
/// `application/octet-stream`.
pub fn sniff(bytes: &[u8]) -> String {
    if let Some(kind) = infer::get(bytes) {
        return kind.mime_type().to_owned();
    }
    if !bytes.is_empty() && std::str::from_utf8(bytes).is_ok() && !bytes.contains(&0) {
        return "text/plain; charset=utf-8".into();
    }
    "application/octet-stream".into()
}

/// An uploaded file's description.
pub fn file_doc(note: Uuid, bytes: &[u8], filename: String, declared: Option<String>, max: usize) -> Result<AttachmentDoc> {
    if bytes.len() > max {
        return Err(Error::new(ErrorCode::PayloadTooLarge, format!("a file may be at most {max} bytes; this one is {}", bytes.len())));
    }
    if bytes.is_empty() {
        return Err(Error::validation("the file is empty"));
    }
    Ok(AttachmentDoc {
        note_id: note.to_string(),
        kind: "file".into(),
        url: None,
        filename,
        title: None,
        content_type: sniff(bytes),
        declared_content_type: declared.map(|d| d.chars().filter(|c| !c.is_control()).take(200).collect()),
        size_bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        sha256: Some(Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()),
    })
}

/// `Content-Disposition` for a download of `filename`: an ASCII fallback and the UTF-8 name.
pub fn disposition(filename: &str) -> String {
    let ascii: String =
        filename.chars().map(|c| if c.is_ascii_alphanumeric() || "._- ".contains(c) { c } else { '_' }).collect();
    let encoded: String = filename
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"._-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_from_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
        elf.resize(64, 0);
        assert_eq!(sniff(&elf), "application/x-executable");
        assert_eq!(sniff("hello, wörld".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(sniff(&[0xff, 0xfe, 0x00, 0x01]), "application/octet-stream");
    }

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(clean_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_filename(Some("C:\\x\\report.pdf")), "report.pdf");
        assert_eq!(clean_filename(Some("a\u{7}b.txt")), "ab.txt");
        assert_eq!(clean_filename(Some("..")), "file");
        assert_eq!(clean_filename(None), "file");
        assert_eq!(disposition("résumé.pdf"), "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf");
    }
}
