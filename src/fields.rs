//! What the config and each vendor's own keys are made of, and how what they hold is kept out
//! of sight: [`Secret`] (resolved from the file, the environment or a systemd credential; it
//! never prints), [`PromDuration`], [`FieldError`] and [`from_value`] (a failing field with its
//! path), [`redact_values`] (serde's echo of a wrong value cut out of a message) and [`cut`]
//! (a vendor's or a parser's message bounded in length).

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_yaml::Value;

/// A resolved secret. Its `Debug` is redacted and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests and the demo; configs go through `Deserialize`).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret: a string, {env: NAME}, {file: PATH} or {credential: NAME}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                if v.is_empty() {
                    return Err(E::custom("secret is empty"));
                }
                Ok(Secret(v.to_string()))
            }
            // Numbers and booleans are refused without echoing them: they may be the secret.
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let Some((kind, arg)) = map.next_entry::<String, String>()? else {
                    return Err(de::Error::custom(
                        "expected {env: NAME}, {file: PATH} or {credential: NAME}",
                    ));
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "a secret takes exactly one of env, file or credential",
                    ));
                }
                let value = match kind.as_str() {
                    "env" => std::env::var(&arg).map_err(|_| {
                        de::Error::custom(format!("environment variable {arg} is not set"))
                    })?,
                    "file" => std::fs::read_to_string(&arg)
                        .map_err(|e| {
                            de::Error::custom(format!("cannot read secret file {arg}: {e}"))
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                    "credential" => read_credential(std::env::var_os(CREDENTIALS_DIRECTORY), &arg)
                        .map_err(de::Error::custom)?,
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown secret source `{other}`, expected env, file or credential"
                        )))
                    }
                };
                if value.is_empty() {
                    return Err(de::Error::custom(format!(
                        "secret from {kind} {arg} is empty"
                    )));
                }
                Ok(Secret(value))
            }
        }
        d.deserialize_any(SecretVisitor)
    }
}

fn not_a_string<E: de::Error>() -> E {
    E::custom("a secret must be a quoted string, {env: NAME}, {file: PATH} or {credential: NAME}")
}

/// The variable systemd sets for a unit with `LoadCredential=` or `LoadCredentialEncrypted=`.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Reads the systemd credential `name` from `dir` (`$CREDENTIALS_DIRECTORY`). One trailing
/// newline is dropped, as for `{file: PATH}`. Errors name the credential and the path, never
/// the value.
fn read_credential(dir: Option<OsString>, name: &str) -> Result<String, String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(format!(
            "credential name \"{name}\" is not a credential name (a file name, no /)"
        ));
    }
    let Some(dir) = dir.filter(|d| !d.is_empty()) else {
        return Err(format!(
            "credential {name}: {CREDENTIALS_DIRECTORY} is not set (systemd sets it for a unit \
             with LoadCredential={name}:PATH or LoadCredentialEncrypted={name}:PATH; elsewhere, \
             set it to a folder holding a file {name})"
        ));
    };
    let path = Path::new(&dir).join(name);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read credential {name} from {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("credential {name} ({}) is empty", path.display()));
    }
    Ok(value.to_string())
}

/// A Prometheus-style duration: `500ms`, `30s`, `5m`, `1h30m`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    /// Parses `1h30m`-style text.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let bad = || format!("invalid duration \"{s}\": expected e.g. 500ms, 30s, 5m, 1h");
        if s.is_empty() {
            return Err(bad());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let ms = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = total
                .checked_add(Duration::from_millis(n.checked_mul(ms).ok_or_else(bad)?))
                .ok_or_else(bad)?;
        }
        Ok(total)
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PromDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m or 1h")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PromDuration, E> {
                PromDuration::parse(s).map(PromDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PromDuration, E> {
                Err(E::custom(format!("{n} has no unit: write e.g. {n}s")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PromDuration, E> {
                Err(E::custom(format!("{n} has no unit: write e.g. {n}s")))
            }
        }
        d.deserialize_any(V)
    }
}

/// One field that failed: its path within the target and why.
#[derive(Debug)]
pub struct FieldError {
    /// Dotted path, e.g. `credentials.private_key`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A field error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Deserializes a vendor's own keys, keeping the path of the failing field.
pub fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let mut message = redact_values(&e.into_inner().to_string());
        if message.starts_with("invalid type: integer, expected a string") {
            message.push_str(QUOTE_HINT);
        }
        FieldError {
            path: if path == "." { String::new() } else { path },
            message,
        }
    })
}

/// Added where a number stands for an id: YAML reads unquoted digits as a number.
const QUOTE_HINT: &str =
    " (an id made of digits needs quotes, as in rooms: [\"218695\"]: unquoted, YAML reads a number)";

/// serde echoes a value that has the wrong type (`invalid type: string "…"`, `invalid type:
/// integer `…``); a secret put in the wrong place must not reach an error message, so such
/// values are cut out. Field names (`unknown field `x``) stay.
pub fn redact_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    loop {
        let next = ["string \"", "invalid type: ", "invalid value: "]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, *m)))
            .min();
        let Some((i, marker)) = next else {
            break;
        };
        let after_marker = &rest[i + marker.len()..];
        if marker == "string \"" {
            out.push_str(&rest[..i + "string".len()]);
            rest = after_marker
                .find('"')
                .map_or("", |j| &after_marker[j + 1..]);
            continue;
        }
        // `invalid type: integer `123`, expected …`: keep the kind, drop the value.
        out.push_str(&rest[..i + marker.len()]);
        match (after_marker.find('`'), after_marker.find(',')) {
            (Some(a), comma) if comma.is_none_or(|c| a < c) => {
                let kind = &after_marker[..a];
                let tail = &after_marker[a + 1..];
                out.push_str(kind.trim_end());
                rest = tail.find('`').map_or("", |j| &tail[j + 1..]);
            }
            _ => rest = after_marker,
        }
    }
    out.push_str(rest);
    out
}

/// The longest message kept from a vendor or a parser (the Volcengine gateway echoes its whole
/// canonical request).
pub const MAX_MESSAGE: usize = 240;

/// `message` cut to at most `max` bytes (at a character boundary), with `…` where it was cut.
pub fn cut(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut at = max;
    while !message.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}…", &message[..at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh folder for one test's credential files.
    fn credentials_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rtc-creds-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn credential_is_read_from_the_credentials_directory() {
        let dir = credentials_dir("ok");
        std::fs::write(dir.join("urtc_key"), "s3cret-urtc\n").unwrap();
        let got = read_credential(Some(dir.clone().into_os_string()), "urtc_key");
        assert_eq!(got.as_deref(), Ok("s3cret-urtc"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn credential_errors_say_what_is_missing_and_never_the_value() {
        let dir = credentials_dir("errors");
        let os = || Some(dir.clone().into_os_string());

        let unset = read_credential(None, "urtc_key").unwrap_err();
        assert!(
            unset.contains("CREDENTIALS_DIRECTORY is not set"),
            "{unset}"
        );
        assert!(unset.contains("LoadCredential=urtc_key:"), "{unset}");
        let empty_var = read_credential(Some(OsString::new()), "urtc_key").unwrap_err();
        assert!(empty_var.contains("is not set"), "{empty_var}");

        let missing = read_credential(os(), "urtc_key").unwrap_err();
        assert!(
            missing.starts_with("cannot read credential urtc_key from ")
                && missing.contains(&dir.join("urtc_key").display().to_string()),
            "{missing}"
        );

        std::fs::write(dir.join("blank"), "\n").unwrap();
        let blank = read_credential(os(), "blank").unwrap_err();
        assert!(
            blank.contains("credential blank") && blank.ends_with("is empty"),
            "{blank}"
        );

        // Not UTF-8: refused without echoing the bytes.
        std::fs::write(dir.join("binary"), b"s3cret\xff\xfe").unwrap();
        let binary = read_credential(os(), "binary").unwrap_err();
        assert!(!binary.contains("s3cret"), "{binary}");

        for bad in ["", ".", "..", "../etc/passwd", "a/b"] {
            let e = read_credential(os(), bad).unwrap_err();
            assert!(e.contains("is not a credential name"), "{bad}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
