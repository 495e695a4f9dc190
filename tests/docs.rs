//! The repository is self-contained: no file refers to a document a user of the repository does
//! not have (the design notes, style guide and vendor notes the project was written from).

use std::path::{Path, PathBuf};

/// Names of documents outside the repository.
const OUTSIDE: &[&str] = &[
    "DESIGN.md",
    "DESIGN §",
    "STYLE.md",
    "vendors.md",
    "/work/shared",
];

/// Files that still cite the vendor notes (`vendors.md §N`) for signing and simulator details;
/// they are owned by the vendor work, which is to replace each citation with the vendor's own
/// documentation or the README. No file may be added to this list.
const NOT_YET: &[&str] = &[
    "src/sim/talkcloud.rs",
    "src/sim/tencent_trtc.rs",
    "src/sim/tencent_trtc/verify.rs",
    "src/sim/volcengine_rtc.rs",
    "src/sim/volcengine_rtc/verify.rs",
    "src/clouds/talkcloud.rs",
    "src/clouds/talkcloud/answer.rs",
    "src/clouds/tencent_trtc/sign.rs",
    "src/clouds/ucloud_urtc.rs",
    "src/clouds/volcengine_rtc.rs",
    "src/clouds/volcengine_rtc/sign.rs",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder").flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name != ".ci" || name == "target" {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_file_refers_to_documents_outside_the_repository() {
    let mut all = Vec::new();
    files(Path::new("."), &mut all);
    assert!(all.len() > 50, "{} files", all.len());
    let mut bad = Vec::new();
    for path in all {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let shown = path.display().to_string();
        let shown = shown.trim_start_matches("./");
        if shown == "tests/docs.rs" {
            continue;
        }
        let cited: Vec<&str> = OUTSIDE
            .iter()
            .copied()
            .filter(|d| text.contains(d))
            .collect();
        let allowed = NOT_YET.contains(&shown) && cited == ["vendors.md"];
        if !cited.is_empty() && !allowed {
            bad.push(format!("{shown}: {}", cited.join(", ")));
        }
    }
    assert!(
        bad.is_empty(),
        "files citing documents outside the repository (point at the README instead):\n{}",
        bad.join("\n")
    );
}
