//! The state file (`global.state_file`): today's figures of every target, so a restart (a
//! crash or `kill -9` included) never lowers a peak or an accumulated count within a local day.
//!
//! Written atomically: a temporary file beside it, fsync, rename over the old one, fsync of
//! the directory; a reader sees the old file or the new one, never a mix. Loading is lenient
//! the other way: a missing file is a first start, an unreadable or damaged one is logged and
//! ignored (never fatal), and a target whose entry does not match (another day, also a day
//! that is no longer today after a change of time zone; another vendor, app or credentials)
//! starts afresh with a log line. A file that could
//! not be used (unreadable, damaged, another format version) is kept as `<name>.damaged`
//! before the first write replaces it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ledger::SavedLedger;

/// The format's version; another version is ignored with a log line.
pub const VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// [`VERSION`].
    pub version: u32,
    /// The zone "today" was computed in.
    pub timezone: String,
    /// When it was written, Unix seconds.
    pub written_at: i64,
    /// Per target name.
    pub targets: BTreeMap<String, SavedTarget>,
}

/// One target's entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedTarget {
    /// Its vendor.
    pub vendor: String,
    /// [`crate::config::Target::identity`], hex.
    pub identity: String,
    /// Its day.
    pub ledger: SavedLedger,
    /// Its vendor client's cursors ([`crate::clouds::Vendor::cursors`]), where it keeps any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursors: Option<serde_json::Value>,
}

/// Reads the file: `Ok(None)` when there is none yet; an error says why it cannot be used.
pub fn load(path: &Path) -> Result<Option<StateFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: StateFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a state file: {e}", path.display()))?;
    if file.version != VERSION {
        return Err(format!(
            "{}: state format version {} (this build reads {VERSION})",
            path.display(),
            file.version
        ));
    }
    Ok(Some(file))
}

/// The entry of one target if it is usable for `today` in `timezone`, else why not. An entry
/// saved in another zone is usable while its day is still today's date in `timezone`.
pub fn entry_for<'a>(
    file: &'a StateFile,
    name: &str,
    vendor: &str,
    identity: u64,
    timezone: &str,
    today: NaiveDate,
) -> Result<Option<&'a SavedTarget>, String> {
    let Some(t) = file.targets.get(name) else {
        return Ok(None);
    };
    if t.vendor != vendor || t.identity != format!("{identity:016x}") {
        return Err("saved for another vendor, app or credentials".into());
    }
    if t.ledger.date != today {
        if file.timezone != timezone {
            return Err(format!(
                "saved for {} in time zone {}; the zone is now {timezone}, where today is {today}",
                t.ledger.date, file.timezone
            ));
        }
        return Err(format!("saved for {}, today is {today}", t.ledger.date));
    }
    Ok(Some(t))
}

fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    format!(".{name}.tmp.")
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where a damaged state file is kept before the first write replaces it: `<name>.damaged`
/// beside it.
pub fn damaged_copy(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "state".into());
    name.push(".damaged");
    path.with_file_name(name)
}

/// Keeps the damaged file at `path` as [`damaged_copy`], replacing an older copy: renamed, so
/// its bytes stay exactly as they were, also when they cannot be read. Returns the copy, or
/// `None` when the file is gone (nothing to keep).
pub fn keep_damaged(path: &Path) -> Result<Option<PathBuf>, String> {
    let copy = damaged_copy(path);
    match std::fs::rename(path, &copy) {
        Ok(()) => Ok(Some(copy)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot keep the damaged {} as {}: {e}",
            path.display(),
            copy.display()
        )),
    }
}

/// Removes temporary files a killed process left beside `path`; returns how many.
pub fn remove_leftovers(path: &Path) -> usize {
    let prefix = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Writes `file` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write(path: &Path, file: &StateFile) -> Result<(), String> {
    let shown = path.display();
    let bytes = serde_json::to_vec(file).map_err(|e| format!("{shown}: encoding: {e}"))?;
    let dir = dir_of(path);
    let tmp = dir.join(format!("{}{}", temp_prefix(path), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is.
        std::fs::File::open(&dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {shown}: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_damaged_and_foreign_files() {
        let dir = std::env::temp_dir().join(format!("rtc-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        assert!(load(&path).unwrap().is_none());
        std::fs::write(&path, b"{\"version\": 1, \"timez").unwrap();
        assert!(load(&path).unwrap_err().contains("is not a state file"));
        let file = StateFile {
            version: VERSION,
            timezone: "UTC".into(),
            written_at: 1,
            targets: BTreeMap::new(),
        };
        write(&path, &file).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().written_at, 1);
        let other = StateFile {
            version: 99,
            ..file
        };
        write(&path, &other).unwrap();
        assert!(load(&path).unwrap_err().contains("version 99"));
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_entry_of_another_zone_is_used_while_its_day_is_still_today() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let ledger: SavedLedger = serde_json::from_value(serde_json::json!({
            "date": "2026-11-20", "peak": 3, "accumulated": 4, "users": [], "rooms": {}
        }))
        .unwrap();
        let file = StateFile {
            version: VERSION,
            timezone: "Asia/Shanghai".into(),
            written_at: 1,
            targets: BTreeMap::from([(
                "a".to_string(),
                SavedTarget {
                    vendor: "ucloud_urtc".into(),
                    identity: format!("{:016x}", 7u64),
                    ledger,
                    cursors: None,
                },
            )]),
        };
        let entry = |tz: &str, today: NaiveDate| entry_for(&file, "a", "ucloud_urtc", 7, tz, today);
        assert!(entry("Asia/Shanghai", day).unwrap().is_some());
        // Still 2026-11-20 in UTC: kept.
        assert!(entry("UTC", day).unwrap().is_some());
        // Already the 21st where the zone now is: dropped, and said why.
        let next = day.succ_opt().unwrap();
        assert_eq!(
            entry("Pacific/Kiritimati", next).unwrap_err(),
            "saved for 2026-11-20 in time zone Asia/Shanghai; the zone is now Pacific/Kiritimati, where today is 2026-11-21"
        );
        assert_eq!(
            entry("Asia/Shanghai", next).unwrap_err(),
            "saved for 2026-11-20, today is 2026-11-21"
        );
        // Another account is refused whatever the zone.
        assert!(entry_for(&file, "a", "ucloud_urtc", 8, "UTC", day).is_err());
        assert!(entry_for(&file, "b", "ucloud_urtc", 7, "UTC", day)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_damaged_file_is_kept_beside_it_replacing_an_older_copy() {
        let dir = std::env::temp_dir().join(format!("rtc-state-keep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(damaged_copy(&path), dir.join("state.json.damaged"));
        std::fs::write(dir.join("state.json.damaged"), b"older").unwrap();
        std::fs::write(&path, b"\x00garbage").unwrap();
        assert_eq!(
            keep_damaged(&path).unwrap(),
            Some(dir.join("state.json.damaged"))
        );
        assert_eq!(
            std::fs::read(dir.join("state.json.damaged")).unwrap(),
            b"\x00garbage"
        );
        assert!(!path.exists());
        // Gone meanwhile: nothing to keep.
        assert_eq!(keep_damaged(&path).unwrap(), None);
        // A copy that cannot be made is an error (here: the copy's name is a folder).
        std::fs::write(&path, b"again").unwrap();
        std::fs::remove_file(dir.join("state.json.damaged")).unwrap();
        std::fs::create_dir_all(dir.join("state.json.damaged/x")).unwrap();
        assert!(keep_damaged(&path).unwrap_err().contains("cannot keep"));
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
