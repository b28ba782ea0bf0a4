//! Opaque keyset cursors: a version byte, the sort key, and a check over both, base64url-encoded.
//! Anything that does not decode and check is `invalid_argument`, so a tampered or truncated
//! cursor is a 400 rather than a silently different page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::Error;

const VERSION: u8 = 1;
const CHECK_LEN: usize = 8;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 200;

/// The position after the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Ordered by a time, then id (both descending), e.g. `updated_at DESC, id DESC`.
    TimeId(DateTime<Utc>, Uuid),
    /// Ordered by id alone.
    Id(Uuid),
    /// Ordered by a number, e.g. a version (descending).
    Number(i64),
}

impl Cursor {
    /// Encodes the cursor. `scope` binds it to one listing (e.g. `contacts:list:<filters>`), so a
    /// cursor from one query is refused by another.
    pub fn encode(&self, scope: &str) -> String {
        let mut buf = vec![VERSION];
        match self {
            Cursor::TimeId(t, id) => {
                buf.push(1);
                buf.extend_from_slice(&t.timestamp_micros().to_be_bytes());
                buf.extend_from_slice(id.as_bytes());
            }
            Cursor::Id(id) => {
                buf.push(2);
                buf.extend_from_slice(id.as_bytes());
            }
            Cursor::Number(n) => {
                buf.push(3);
                buf.extend_from_slice(&n.to_be_bytes());
            }
        }
        let check = check(scope, &buf);
        buf.extend_from_slice(&check);
        B64.encode(buf)
    }

    /// Decodes and checks a cursor made by [`Cursor::encode`] with the same `scope`.
    pub fn decode(token: &str, scope: &str) -> Result<Cursor, Error> {
        let bad = || Error::invalid("invalid cursor: pass next_cursor back unchanged, with the same filters");
        let buf = B64.decode(token.trim()).map_err(|_| bad())?;
        if buf.len() < 2 + CHECK_LEN || buf[0] != VERSION {
            return Err(bad());
        }
        let (body, sum) = buf.split_at(buf.len() - CHECK_LEN);
        if check(scope, body) != sum {
            return Err(bad());
        }
        let rest = &body[2..];
        match (body[1], rest.len()) {
            (1, 24) => {
                let micros = i64::from_be_bytes(rest[..8].try_into().map_err(|_| bad())?);
                let t = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
                let id = Uuid::from_slice(&rest[8..]).map_err(|_| bad())?;
                Ok(Cursor::TimeId(t, id))
            }
            (2, 16) => Ok(Cursor::Id(Uuid::from_slice(rest).map_err(|_| bad())?)),
            (3, 8) => Ok(Cursor::Number(i64::from_be_bytes(rest.try_into().map_err(|_| bad())?))),
            _ => Err(bad()),
        }
    }
}

fn check(scope: &str, body: &[u8]) -> [u8; CHECK_LEN] {
    let mut h = Sha256::new();
    h.update(b"worktruck-cursor\0");
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(body);
    let d = h.finalize();
    let mut out = [0; CHECK_LEN];
    out.copy_from_slice(&d[..CHECK_LEN]);
    out
}

/// Validates a requested page size: default 50, 1 to 200.
pub fn limit(requested: Option<i32>) -> Result<i64, Error> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as i32).contains(&n) => Ok(i64::from(n)),
        Some(n) => Err(Error::invalid(format!("limit must be between 1 and {MAX_LIMIT}, got {n}"))),
    }
}

/// Decodes an optional cursor parameter (empty means none).
pub fn decode_opt(token: Option<&str>, scope: &str) -> Result<Option<Cursor>, Error> {
    match token {
        None | Some("") => Ok(None),
        Some(t) => Cursor::decode(t, scope).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let c = Cursor::TimeId(crate::db::now(), Uuid::now_v7());
        let token = c.encode("contacts");
        assert_eq!(Cursor::decode(&token, "contacts").unwrap(), c);
        assert!(Cursor::decode(&token, "other-query").is_err());
        let mut bytes = B64.decode(&token).unwrap();
        bytes[5] ^= 1;
        assert!(Cursor::decode(&B64.encode(bytes), "contacts").is_err());
        assert!(Cursor::decode("not base64!!", "contacts").is_err());
        assert!(Cursor::decode("", "contacts").is_err());
        let n = Cursor::Number(42);
        assert_eq!(Cursor::decode(&n.encode("h"), "h").unwrap(), n);
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(200)).unwrap(), 200);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(201)).is_err());
    }
}
