//! Helpers every vendor shares, in one place: lenient numbers (a number or a string holding
//! one), ids, closed code-to-label tables, time windows and HMAC/SHA-256; and who is in a
//! channel, for the vendors that list a channel's users (Agora, Alibaba ARTC).
//!
//! Vendors document numbers as strings in some places and send numbers in others; the same
//! answer may mix both. These readers accept both and refuse anything that is not a valid value
//! (a fraction, a negative count, text), so a field that was not a valid zero never becomes one.

use std::collections::HashSet;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A non-negative integer: a JSON number without a fraction, or a string holding one.
pub fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An integer that may be negative (timestamps, result codes): a number or a numeric string.
pub fn lenient_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A field that is there but cannot be read as what the vendor documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// An optional field read by `read`: absent or null is `Ok(None)` (not sent); there but
/// unreadable is an error, never a default: a count that is not a number must not become 0.
pub fn optional<T>(
    v: Option<&Value>,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, Unreadable> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v).map(Some).ok_or(Unreadable),
    }
}

/// A boolean: `true`/`false`, the strings `"true"`/`"false"`, or 0/1.
pub fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| match n {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }),
        _ => None,
    }
}

/// An id as the vendor sent it: a non-empty string, or a number.
pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A result code as text: a number or a string (trimmed).
pub fn code_string(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.trim().to_string()),
        _ => None,
    }
}

/// The label of a vendor code: itself when `table` lists it, else `other`. Labels come from a
/// closed set, never from the vendor's raw text.
pub fn code_label(table: &'static [&'static str], code: &str) -> &'static str {
    table
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("other")
}

/// Windows of at most `span` seconds covering [from, to], oldest first, anchored at `from`.
pub fn windows_forward(from: i64, to: i64, span: i64) -> Vec<(i64, i64)> {
    let span = span.max(1);
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = start.saturating_add(span).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// Windows of at most `span` seconds covering [from, to], newest first, anchored at `to`.
pub fn windows_back(from: i64, to: i64, span: i64) -> Vec<(i64, i64)> {
    let span = span.max(1);
    let mut out = Vec::new();
    let mut end = to;
    while end > from {
        let start = end.saturating_sub(span).max(from);
        out.push((start, end));
        end = start;
    }
    out
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_listed_twice_or_empty_is_refused_by_its_entry() {
        let rooms = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_rooms(&rooms(&["a", "b"])).is_ok());
        let e = check_rooms(&rooms(&["a", "b", "a"])).unwrap_err();
        assert_eq!(e.path, "rooms[2]");
        assert!(e.message.contains("listed twice"), "{}", e.message);
        assert_eq!(
            check_rooms(&rooms(&["a", " "])).unwrap_err().path,
            "rooms[1]"
        );
    }
    use serde_json::json;

    #[test]
    fn lenient_numbers_accept_numbers_and_numeric_strings_only() {
        assert_eq!(lenient_u64(&json!(7)), Some(7));
        assert_eq!(lenient_u64(&json!(" 7 ")), Some(7));
        assert_eq!(lenient_u64(&json!(7.0)), Some(7));
        assert_eq!(lenient_u64(&json!(0)), Some(0));
        for bad in [
            json!(0.5),
            json!(-1),
            json!("x"),
            json!(""),
            json!(null),
            json!([1]),
            json!(1e30),
        ] {
            assert_eq!(lenient_u64(&bad), None, "{bad}");
        }
        assert_eq!(lenient_i64(&json!(-1)), Some(-1));
        assert_eq!(lenient_i64(&json!("-1")), Some(-1));
        assert_eq!(lenient_i64(&json!(u64::MAX)), None);
        assert_eq!(lenient_bool(&json!("true")), Some(true));
        assert_eq!(lenient_bool(&json!(2)), None);
        assert_eq!(optional(None, lenient_u64), Ok(None));
        assert_eq!(optional(Some(&json!(null)), lenient_u64), Ok(None));
        assert_eq!(optional(Some(&json!("3")), lenient_u64), Ok(Some(3)));
        assert_eq!(optional(Some(&json!("x")), lenient_u64), Err(Unreadable));
    }

    #[test]
    fn windows_cover_the_span_without_gaps() {
        assert_eq!(windows_forward(0, 10, 4), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(windows_back(0, 10, 4), vec![(6, 10), (2, 6), (0, 2)]);
        assert!(windows_forward(5, 5, 4).is_empty());
        assert!(windows_back(6, 5, 4).is_empty());
    }

    #[test]
    fn codes_outside_the_table_are_other() {
        const T: &[&str] = &["a", "b"];
        assert_eq!(code_label(T, "a"), "a");
        assert_eq!(code_label(T, "zzz"), "other");
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

/// Who is in one channel, as a vendor that lists a channel's users tells (Agora's user list,
/// Alibaba's `DescribeChannelUsers`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Occupancy {
    /// The channel does not exist (not in progress).
    Gone,
    /// The channel exists.
    Present {
        /// Users now.
        users: u64,
        /// The distinct ids listed.
        ids: Vec<String>,
        /// Users now by role (the live profiles only).
        roles: Option<crate::model::RoleCounts>,
    },
}

impl Occupancy {
    /// The channel as a room observation: present ids (with roles where told). A channel that
    /// exists with nobody in it is in progress where `empty_is_active` (Agora lists only
    /// channels in progress), ended otherwise (Alibaba keeps an emptied channel a few seconds).
    pub(crate) fn observation(
        self,
        channel: &str,
        empty_is_active: bool,
    ) -> crate::model::RoomObservation {
        use crate::model::{DayFigures, RoomObservation};
        match self {
            Occupancy::Gone => RoomObservation {
                room: channel.to_string(),
                active: false,
                users: 0,
                invisible: None,
                day: DayFigures::Present(Vec::new()),
            },
            Occupancy::Present { users, ids, roles } => RoomObservation {
                room: channel.to_string(),
                active: empty_is_active || users > 0,
                users,
                invisible: None,
                day: match roles {
                    Some(roles) => DayFigures::PresentByRole { ids, roles },
                    None => DayFigures::Present(ids),
                },
            },
        }
    }
}

/// Distinct ids, in order (those in `seen` already left out, the rest added to it), and how
/// many repeats were left out.
pub(crate) fn distinct(list: Vec<String>, seen: &mut HashSet<String>) -> (Vec<String>, usize) {
    let mut out = Vec::with_capacity(list.len());
    let mut repeats = 0;
    for id in list {
        if seen.insert(id.clone()) {
            out.push(id);
        } else {
            repeats += 1;
        }
    }
    (out, repeats)
}

/// Checks a `rooms:` allowlist: no empty name and no room twice (a room listed twice would be
/// asked twice and summed). Errors name the entry (`rooms[1]`).
pub(crate) fn check_rooms(rooms: &[String]) -> Result<(), crate::fields::FieldError> {
    let mut seen = HashSet::new();
    for (i, r) in rooms.iter().enumerate() {
        if r.trim().is_empty() {
            return Err(crate::fields::FieldError::new(
                format!("rooms[{i}]"),
                "a room must not be empty",
            ));
        }
        if !seen.insert(r.as_str()) {
            return Err(crate::fields::FieldError::new(
                format!("rooms[{i}]"),
                format!("room \"{r}\" is listed twice"),
            ));
        }
    }
    Ok(())
}
