//! Embeds the git revision for `rtc_exporter_build_info{revision}` (`unknown` outside a checkout)
//! and the line `--version` prints: version, revision and build date.
//!
//! `RTC_EXPORTER_REVISION` set in the environment wins over git (builds from a tarball);
//! `SOURCE_DATE_EPOCH` sets the build date (reproducible builds), else it is today (UTC).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let revision = std::env::var("RTC_EXPORTER_REVISION")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    if let Some(r) = &revision {
        println!("cargo:rustc-env=RTC_EXPORTER_REVISION={r}");
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let built = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(now);
    let built = chrono::DateTime::from_timestamp(built, 0).map_or_else(
        || "unknown".to_string(),
        |t| t.format("%Y-%m-%d").to_string(),
    );
    println!(
        "cargo:rustc-env=RTC_EXPORTER_VERSION_LINE={} (revision {}, built {built})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        revision.as_deref().unwrap_or("unknown"),
    );

    // A new commit changes HEAD or the branch it points at. `--git-path` finds them in a
    // worktree too, where `.git` is a file.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        // A packed branch has no file of its own: then packed-refs changes.
        let loose =
            git(&["rev-parse", "--git-path", &branch]).filter(|p| std::path::Path::new(p).exists());
        if let Some(r) = loose.or_else(|| git(&["rev-parse", "--git-path", "packed-refs"])) {
            println!("cargo:rerun-if-changed={r}");
        }
    }
    println!("cargo:rerun-if-env-changed=RTC_EXPORTER_REVISION");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}
