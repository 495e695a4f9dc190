//! The house has no import circle: among the modules of `src/` (a file `src/x.rs` and a folder
//! `src/x/` are the module `x`), every `crate::` reference outside the test modules points one
//! way, and no vendor client (`src/clouds/`) names a simulator (`crate::sim`) or the pairing of
//! the two (`crate::simulate`). Run it alone: `cargo test --test layout`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to (`src/clouds/talkcloud/answer.rs` -> `clouds`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The modules `text` names as `crate::x` or in `crate::{x, y::z}`, outside comments and
/// test modules (a `#[cfg(test)]` in the first column followed by a `mod` line starts one; it
/// runs to the end of the file, as the house writes them; a `#[cfg(test)]` on anything else is
/// read through).
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("#[cfg(test)]")
            && lines[i + 1..]
                .iter()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `crate::{a, b::c, d as e}`: the first name of each item (one line).
                let inside = group.split('}').next().unwrap_or_default();
                for item in inside.split(',') {
                    out.extend(first_name(item.trim()));
                }
            } else {
                out.extend(first_name(after));
            }
            rest = after;
        }
    }
    out
}

/// The identifier `text` starts with, if any.
fn first_name(text: &str) -> Option<String> {
    let name: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Module -> the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;
/// Each file and the modules it names.
type Files = Vec<(PathBuf, BTreeSet<String>)>;

fn graph() -> (Graph, Files) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.sort();
    let mut graph = Graph::new();
    let mut per_file = Vec::new();
    for file in all {
        let module = module_of(&src, &file);
        // The binary and the crate root sit above everything; `fuzz` is a test module.
        if module == "main" || module == "lib" || module == "fuzz" {
            continue;
        }
        let refs = references(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(refs.iter().filter(|r| **r != module).cloned());
        per_file.push((file, refs));
    }
    (graph, per_file)
}

/// A circle through `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_modules_of_src_form_no_circle() {
    let (graph, _) = graph();
    assert!(graph.len() > 10, "{graph:?}");
    if let Some(c) = circle(&graph) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

/// The modules in the order of the map in `src/lib.rs` (its first words, one line each).
fn map_order() -> Vec<String> {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let start = lib.find("//! ```text").unwrap();
    let end = start + lib[start..].find("//! ```\n").unwrap();
    let mut order = Vec::new();
    for line in lib[start..end].lines().skip(1) {
        let text = line.trim_start_matches("//!");
        if text.starts_with("  ") || text.trim().is_empty() {
            continue; // a continued description
        }
        let names = text.trim_start().split("  ").next().unwrap_or_default();
        order.extend(names.split(',').map(|n| n.trim().to_string()));
    }
    order
}

#[test]
fn every_module_imports_only_modules_above_it_in_the_map_of_lib_rs() {
    let (graph, _) = graph();
    let order = map_order();
    let mut listed: Vec<&String> = order.iter().collect();
    listed.sort();
    let mut modules: Vec<&String> = graph.keys().collect();
    modules.sort();
    assert_eq!(
        listed, modules,
        "the map of src/lib.rs lists every module once"
    );
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut bad = Vec::new();
    for (module, uses) in &graph {
        for used in uses {
            if let (Some(a), Some(b)) = (rank(module), rank(used)) {
                if b >= a {
                    bad.push(format!(
                        "{module} imports {used}, which the map puts below it"
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn no_vendor_client_names_a_simulator() {
    let (_, per_file) = graph();
    let clients: Vec<_> = per_file
        .iter()
        .filter(|(f, _)| f.components().any(|c| c.as_os_str() == "clouds"))
        .collect();
    assert!(clients.len() >= 5);
    for (file, refs) in clients {
        assert!(
            !refs.contains("sim") && !refs.contains("simulate"),
            "{} imports a simulator: {refs:?}",
            file.display()
        );
    }
}

#[test]
fn the_check_finds_a_circle_where_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circle(&graph).unwrap().len(), 4);
    assert_eq!(
        references("use crate::a::X; // crate::b\n#[cfg(test)]\nmod tests {\nuse crate::c;"),
        BTreeSet::from(["a".to_string()])
    );
    // A test-only function is read through; grouped imports count each module.
    assert_eq!(
        references("#[cfg(test)]\nfn helper() {}\nuse crate::{d, e::F, g as h};\n"),
        BTreeSet::from(["d", "e", "g"].map(String::from))
    );
}
