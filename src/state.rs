//! The state (`global.state_file`): today's figures of every target, so a restart (a crash or
//! `kill -9` included) never lowers a peak or an accumulated count within a local day.
//!
//! One file per target, in the folder `<state_file>.d/`: `<target>.json` ([`TargetFile`],
//! format 2, compact JSON: [`PackedLedger`]), written only when the target's day or cursors
//! changed since its last write, and each atomically: a temporary file beside it, fsync, rename
//! over the old one, fsync of the folder; a reader sees the old file or the new one, never a
//! mix. It is written as it is encoded, never built whole in memory, off the async workers.
//!
//! Loading is lenient: a missing file is a first start, an unreadable or damaged one is logged
//! and ignored (never fatal), and a target whose entry does not match (another day, also a day
//! that is no longer today after a change of time zone; another vendor, app or credentials)
//! starts afresh with a log line. A file that could not be used (unreadable, damaged, another
//! format version) is kept as `<name>.damaged` before a write replaces it.
//!
//! The single file of earlier releases (format 1, [`StateFile`], at `<state_file>` itself) is
//! still read: a target with no file of its own takes its entry from it. It is removed (or
//! kept as `.damaged`, if it could not be used) after the first write with no failure, which
//! writes every target in the new layout.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ledger::{Ledger, PackedLedger, SavedLedger};

/// The format's version of a target's file; another version is ignored with a log line.
pub const VERSION: u32 = 2;
/// The version of the single file of earlier releases.
pub const VERSION_1: u32 = 1;

/// The end of a target file's name.
const SUFFIX: &str = ".json";

/// The single file of earlier releases (format 1): read, never written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// [`VERSION_1`].
    pub version: u32,
    /// The zone "today" was computed in.
    pub timezone: String,
    /// When it was written, Unix seconds.
    pub written_at: i64,
    /// Per target name.
    pub targets: BTreeMap<String, SavedTarget>,
}

/// One target's entry in a [`StateFile`].
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

/// One target's file (format 2): `<state_file>.d/<target>.json`. No credentials: the
/// account is known by a hash ([`crate::config::Target::identity`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// [`VERSION`].
    pub version: u32,
    /// The target's name.
    pub target: String,
    /// Its vendor.
    pub vendor: String,
    /// [`crate::config::Target::identity`], hex.
    pub identity: String,
    /// The zone "today" was computed in.
    pub timezone: String,
    /// When it was written, Unix seconds.
    pub written_at: i64,
    /// Its vendor client's cursors ([`crate::clouds::Vendor::cursors`]), where it keeps any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursors: Option<serde_json::Value>,
    /// Its day.
    pub ledger: PackedLedger,
}

/// A target's saved day, from its own file or from the single file of format 1.
#[derive(Debug)]
pub struct Saved {
    /// Its vendor.
    pub vendor: String,
    /// [`crate::config::Target::identity`], hex.
    pub identity: String,
    /// The zone "today" was computed in.
    pub timezone: String,
    /// Its vendor client's cursors.
    pub cursors: Option<serde_json::Value>,
    /// Its day.
    pub day: SavedDay,
    /// The file it was read from (kept as `.damaged` if the day cannot be restored).
    pub file: PathBuf,
}

/// A saved day, in either format.
#[derive(Debug)]
pub enum SavedDay {
    /// From the single file of format 1.
    V1(SavedLedger),
    /// From a target's own file.
    Packed(PackedLedger),
}

impl SavedDay {
    /// The local day.
    pub fn date(&self) -> NaiveDate {
        match self {
            SavedDay::V1(l) => l.date,
            SavedDay::Packed(l) => l.date,
        }
    }

    /// The ledger; an error names what is inconsistent.
    pub fn restore(self) -> Result<Ledger, String> {
        match self {
            SavedDay::V1(l) => Ledger::restore(l),
            SavedDay::Packed(l) => Ledger::restore_packed(l),
        }
    }
}

impl Saved {
    /// The entry of `name` in `file` (format 1, read from `path`), taken out of it.
    pub fn from_v1(file: &mut StateFile, name: &str, path: &Path) -> Option<Saved> {
        let t = file.targets.remove(name)?;
        Some(Saved {
            vendor: t.vendor,
            identity: t.identity,
            timezone: file.timezone.clone(),
            cursors: t.cursors,
            day: SavedDay::V1(t.ledger),
            file: path.to_path_buf(),
        })
    }

    /// A target's own file `f`, read from `path`.
    pub fn own(f: TargetFile, path: PathBuf) -> Saved {
        Saved {
            vendor: f.vendor,
            identity: f.identity,
            timezone: f.timezone,
            cursors: f.cursors,
            day: SavedDay::Packed(f.ledger),
            file: path,
        }
    }
}

/// The folder of the targets' files: `<state_file>.d`.
pub fn folder(state_file: &Path) -> PathBuf {
    let mut name = state_file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "state".into());
    name.push(".d");
    state_file.with_file_name(name)
}

/// The file of target `name`: `<state_file>.d/<name>.json`. Target names are
/// `[A-Za-z0-9_-]{1,64}` ([`crate::config::valid_name`]), so the name is the file's.
pub fn target_file(state_file: &Path, name: &str) -> PathBuf {
    folder(state_file).join(format!("{name}{SUFFIX}"))
}

/// Reads the single file of format 1: `Ok(None)` when there is none; an error says why it
/// cannot be used.
pub fn load(path: &Path) -> Result<Option<StateFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: StateFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a state file: {e}", path.display()))?;
    if file.version != VERSION_1 {
        return Err(format!(
            "{}: state format version {} (a single state file is of version {VERSION_1})",
            path.display(),
            file.version
        ));
    }
    Ok(Some(file))
}

/// Reads the file of target `name`: `Ok(None)` when there is none; an error says why it cannot
/// be used. Decoded as it is read, never whole in memory.
pub fn load_target(state_file: &Path, name: &str) -> Result<Option<TargetFile>, String> {
    let path = target_file(state_file, name);
    let shown = path.display();
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    let file: TargetFile = serde_json::from_reader(BufReader::with_capacity(1 << 16, f))
        .map_err(|e| format!("{shown} is not a state file: {e}"))?;
    if file.version != VERSION {
        return Err(format!(
            "{shown}: state format version {} (this build reads {VERSION})",
            file.version
        ));
    }
    if file.target != name {
        return Err(format!("{shown} holds target {:?}", file.target));
    }
    Ok(Some(file))
}

/// Whether a saved day is usable for `today` in `timezone`, else why not. A day saved in
/// another zone is usable while it is still today's date in `timezone`.
pub fn entry_for(
    saved: &Saved,
    vendor: &str,
    identity: u64,
    timezone: &str,
    today: NaiveDate,
) -> Result<(), String> {
    if saved.vendor != vendor || saved.identity != format!("{identity:016x}") {
        return Err("saved for another vendor, app or credentials".into());
    }
    let date = saved.day.date();
    if date != today {
        if saved.timezone != timezone {
            return Err(format!(
                "saved for {date} in time zone {}; the zone is now {timezone}, where today is {today}",
                saved.timezone
            ));
        }
        return Err(format!("saved for {date}, today is {today}"));
    }
    Ok(())
}

/// The start of the name of a temporary file that becomes `path`.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    format!(".{name}.tmp.")
}

fn temp_name(path: &Path) -> PathBuf {
    path.with_file_name(format!("{}{}", temp_prefix(path), std::process::id()))
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where a damaged state file is kept before a write replaces it: `<name>.damaged` beside it.
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

/// Removes temporary files a killed process left beside the single file and in the folder of
/// `state_file`; returns how many.
pub fn remove_leftovers(state_file: &Path) -> usize {
    let single = temp_prefix(state_file);
    let mut removed = 0;
    for (dir, own) in [(dir_of(state_file), false), (folder(state_file), true)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        removed += entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if own {
                    name.starts_with('.') && name.contains(".tmp.")
                } else {
                    name.starts_with(&single)
                }
            })
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count();
    }
    removed
}

/// Writes `file` as its target's file atomically (temporary file, fsync, rename, fsync of the
/// folder, which is created if need be), encoded into the file as it goes. Returns the bytes
/// written.
pub fn write_target(state_file: &Path, file: &TargetFile) -> Result<u64, String> {
    let path = target_file(state_file, &file.target);
    let shown = path.display();
    let folder = folder(state_file);
    if !folder.is_dir() {
        std::fs::create_dir_all(&folder)
            .and_then(|()| sync_dir(&dir_of(&folder)))
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    let tmp = temp_name(&path);
    let result = (|| {
        let mut json = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        serde_json::to_writer(&mut json, file)?;
        let out = json.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        let bytes = out.metadata()?.len();
        drop(out);
        std::fs::rename(&tmp, &path)?;
        // The rename itself is durable only once the folder is.
        sync_dir(&folder)?;
        Ok::<_, std::io::Error>(bytes)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {shown}: {e}")
    })
}

/// A target's file as it is kept in etcd (`ha:`): the same JSON, gzipped.
pub fn to_compressed(file: &TargetFile) -> Result<Vec<u8>, String> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        // The encoder writes a few bytes at a time: buffered, gzip sees large writes.
        let mut json = BufWriter::with_capacity(1 << 16, &mut gz);
        serde_json::to_writer(&mut json, file)
            .map_err(|e| format!("cannot encode the day: {e}"))?;
        json.flush()
            .map_err(|e| format!("cannot compress the day: {e}"))?;
    }
    gz.finish()
        .map_err(|e| format!("cannot compress the day: {e}"))
}

/// Reads what [`to_compressed`] wrote for target `name`; an error says why it cannot be used.
pub fn from_compressed(data: &[u8], name: &str) -> Result<TargetFile, String> {
    let gz = BufReader::with_capacity(1 << 16, flate2::read::GzDecoder::new(data));
    let file: TargetFile = serde_json::from_reader(gz)
        .map_err(|e| format!("the day kept in etcd is not a state file: {e}"))?;
    if file.version != VERSION {
        return Err(format!(
            "the day kept in etcd is of state format version {} (this build reads {VERSION})",
            file.version
        ));
    }
    if file.target != name {
        return Err(format!(
            "the day kept in etcd holds target {:?}",
            file.target
        ));
    }
    Ok(file)
}

/// Removes the files of targets not in `keep` from the folder of `state_file` (targets
/// removed from the config); returns how many.
pub fn remove_others(state_file: &Path, keep: &BTreeSet<String>) -> Result<usize, String> {
    let folder = folder(state_file);
    let entries = match std::fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot list {}: {e}", folder.display())),
    };
    let mut removed = 0;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(target) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        if target.starts_with('.') || keep.contains(target) {
            continue;
        }
        std::fs::remove_file(e.path())
            .map_err(|err| format!("cannot remove {}: {err}", e.path().display()))?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir(&folder).map_err(|e| format!("cannot sync {}: {e}", folder.display()))?;
    }
    Ok(removed)
}

/// Retires the single file of format 1 once every target is in its own file: removed, or kept
/// as [`damaged_copy`] where `damaged`. Returns the copy where one was kept.
pub fn retire_v1(state_file: &Path, damaged: bool) -> Result<Option<PathBuf>, String> {
    let copy = if damaged {
        keep_damaged(state_file)?
    } else {
        match std::fs::remove_file(state_file) {
            Ok(()) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot remove {}: {e}", state_file.display())),
        }
    };
    let dir = dir_of(state_file);
    sync_dir(&dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rtc-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn target(name: &str, date: &str) -> TargetFile {
        let ledger: PackedLedger = serde_json::from_value(serde_json::json!({
            "date": date, "peak": 3, "accumulated": 4, "devices": [], "roles": [],
            "users": [], "rooms": {}
        }))
        .unwrap();
        TargetFile {
            version: VERSION,
            target: name.into(),
            vendor: "ucloud_urtc".into(),
            identity: format!("{:016x}", 7u64),
            timezone: "Asia/Shanghai".into(),
            written_at: 1,
            cursors: None,
            ledger,
        }
    }

    #[test]
    fn missing_damaged_and_foreign_files() {
        let dir = temp("load");
        let path = dir.join("state.json");
        assert!(load(&path).unwrap().is_none());
        std::fs::write(&path, b"{\"version\": 1, \"timez").unwrap();
        assert!(load(&path).unwrap_err().contains("is not a state file"));
        std::fs::write(
            &path,
            br#"{"version": 99, "timezone": "UTC", "written_at": 1, "targets": {}}"#,
        )
        .unwrap();
        assert!(load(&path).unwrap_err().contains("version 99"));

        assert!(load_target(&path, "a").unwrap().is_none());
        let bytes = write_target(&path, &target("a", "2026-11-20")).unwrap();
        let a = dir.join("state.json.d/a.json");
        assert_eq!(std::fs::metadata(&a).unwrap().len(), bytes);
        assert_eq!(
            load_target(&path, "a")
                .unwrap()
                .unwrap()
                .ledger
                .date
                .to_string(),
            "2026-11-20"
        );
        // Saved under another name, of another version, cut short, empty.
        std::fs::copy(&a, dir.join("state.json.d/b.json")).unwrap();
        assert!(load_target(&path, "b")
            .unwrap_err()
            .contains("holds target \"a\""));
        let other = TargetFile {
            version: 99,
            ..target("a", "2026-11-20")
        };
        write_target(&path, &other).unwrap();
        assert!(load_target(&path, "a").unwrap_err().contains("version 99"));
        write_target(&path, &target("a", "2026-11-20")).unwrap();
        let whole = std::fs::read(&a).unwrap();
        std::fs::write(&a, &whole[..whole.len() - 1]).unwrap();
        assert!(load_target(&path, "a")
            .unwrap_err()
            .contains("is not a state file"));
        std::fs::write(&a, b"{}").unwrap();
        assert!(load_target(&path, "a")
            .unwrap_err()
            .contains("is not a state file"));
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.join("state.json.d"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn leftovers_others_and_the_single_file_go() {
        let dir = temp("tidy");
        let path = dir.join("state.json");
        write_target(&path, &target("a", "2026-11-20")).unwrap();
        write_target(&path, &target("b", "2026-11-20")).unwrap();
        let folder = dir.join("state.json.d");
        std::fs::write(folder.join(".a.json.tmp.1"), b"x").unwrap();
        std::fs::write(dir.join(".state.json.tmp.1"), b"x").unwrap();
        std::fs::write(dir.join("other.json"), b"x").unwrap();
        std::fs::write(folder.join("c.json.damaged"), b"x").unwrap();
        assert_eq!(remove_leftovers(&path), 2);
        assert!(dir.join("other.json").exists());
        let keep = BTreeSet::from(["a".to_string()]);
        assert_eq!(remove_others(&path, &keep).unwrap(), 1);
        assert!(folder.join("a.json").exists() && !folder.join("b.json").exists());
        assert!(
            folder.join("c.json.damaged").exists(),
            "a copy is not a target's file"
        );

        std::fs::write(&path, b"old").unwrap();
        assert_eq!(retire_v1(&path, false).unwrap(), None);
        assert!(!path.exists());
        std::fs::write(&path, b"bad").unwrap();
        assert_eq!(
            retire_v1(&path, true).unwrap(),
            Some(dir.join("state.json.damaged"))
        );
        assert_eq!(
            std::fs::read(dir.join("state.json.damaged")).unwrap(),
            b"bad"
        );
        assert_eq!(retire_v1(&path, false).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_entry_of_another_zone_is_used_while_its_day_is_still_today() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let saved = Saved::own(target("a", "2026-11-20"), PathBuf::from("a.json"));
        let entry = |tz: &str, today: NaiveDate| entry_for(&saved, "ucloud_urtc", 7, tz, today);
        assert!(entry("Asia/Shanghai", day).is_ok());
        // Still 2026-11-20 in UTC: kept.
        assert!(entry("UTC", day).is_ok());
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
        assert!(entry_for(&saved, "ucloud_urtc", 8, "UTC", day).is_err());
        assert!(entry_for(&saved, "talkcloud", 7, "UTC", day).is_err());
    }

    #[test]
    fn a_damaged_file_is_kept_beside_it_replacing_an_older_copy() {
        let dir = temp("keep");
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
