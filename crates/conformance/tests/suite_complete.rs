//! `suite!` runs every scenario: each `pub async fn NAME(store: Arc<dyn Store>)` in
//! `src/scenarios/` is listed under `scenarios:` in the `suite!` macro of `src/lib.rs`, each
//! one in `src/concurrency.rs` under `concurrency:`, and every listed name is such a
//! function. A scenario added to a file but not to the list would otherwise never run on any
//! backend, silently.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The crate's source directory.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The text without its `//` comments (doc comments included), so that a signature quoted in
/// a comment is not taken for a scenario, nor a name commented out of a list for a listed one.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names of the scenarios in one source file: every `pub async fn NAME(store: Arc<dyn
/// Store>)` (on one line or several, with or without a trailing comma or paths such as
/// `std::sync::Arc` or `tenantry_store::Store`) that returns nothing.
fn scenarios_in(text: &str) -> Vec<String> {
    const START: &str = "pub async fn ";
    let text = strip_comments(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(START) {
        rest = &rest[at + START.len()..];
        let name: String = rest.chars().take_while(|c| is_ident_char(*c)).collect();
        let after = rest[name.len()..].trim_start();
        let Some(params) = after.strip_prefix('(') else {
            continue; // generic or otherwise not a plain `fn NAME(`
        };
        let Some(close) = params.find(')') else {
            continue;
        };
        let signature: String = params[..close]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let signature = signature.trim_end_matches(',');
        let returns_nothing = params[close + 1..].trim_start().starts_with('{');
        let Some((param, ty)) = signature.split_once(':') else {
            continue;
        };
        let ty = ty.strip_prefix("std::sync::").unwrap_or(ty);
        let Some(path) = ty
            .strip_prefix("Arc<dyn")
            .and_then(|t| t.strip_suffix("Store>"))
        else {
            continue;
        };
        // `Store` itself, or a path ending in `::Store`.
        let store = path.is_empty()
            || path.ends_with("::") && path.chars().all(|c| is_ident_char(c) || c == ':');
        if param == "store" && store && returns_nothing {
            out.push(name);
        }
    }
    out
}

/// The names listed as `LIST: [a, b, …]` in the `suite!` macro of `src/lib.rs`.
fn listed(lib: &str, list: &str) -> Vec<String> {
    let lib = strip_comments(lib);
    let start = lib
        .find("macro_rules! suite")
        .expect("src/lib.rs defines `macro_rules! suite`");
    let body = &lib[start + "macro_rules! suite".len()..];
    let body = &body[..body.find("macro_rules!").unwrap_or(body.len())];
    let key = format!("{list}: [");
    let open = body
        .find(&key)
        .unwrap_or_else(|| panic!("`suite!` has no `{key}…]` list"));
    let items = &body[open + key.len()..];
    let items = &items[..items.find(']').expect("the list is closed with `]`")];
    items
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The scenarios of every `.rs` file under `dir`, with the file each is in.
fn scenarios_under(dir: &Path, out: &mut BTreeMap<String, Vec<String>>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            scenarios_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            add(&path, out);
        }
    }
}

fn add(path: &Path, out: &mut BTreeMap<String, Vec<String>>) {
    let shown = path
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or(path)
        .display()
        .to_string();
    for name in scenarios_in(&read(path)) {
        out.entry(name).or_default().push(shown.clone());
    }
}

/// What differs between the functions found and the names listed, as lines to report.
fn compare(list: &str, found: &BTreeMap<String, Vec<String>>, listed: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, files) in found {
        if !listed.contains(name) {
            problems.push(format!(
                "`{name}` ({}) is missing from `suite!`'s `{list}:` list",
                files.join(", ")
            ));
        }
        if files.len() > 1 {
            problems.push(format!(
                "`{name}` is defined more than once: {}",
                files.join(", ")
            ));
        }
    }
    let mut seen = Vec::new();
    for name in listed {
        if !found.contains_key(name) {
            problems.push(format!(
                "`{name}` is listed under `{list}:` in `suite!` but no `pub async fn {name}(store: Arc<dyn Store>)` defines it there"
            ));
        }
        if seen.contains(&name) {
            problems.push(format!("`{name}` is listed twice under `{list}:`"));
        }
        seen.push(name);
    }
    problems
}

#[test]
fn suite_lists_every_scenario_and_only_scenarios() {
    let lib = read(&src().join("lib.rs"));

    let mut scenarios = BTreeMap::new();
    scenarios_under(&src().join("scenarios"), &mut scenarios);
    let mut concurrency = BTreeMap::new();
    add(&src().join("concurrency.rs"), &mut concurrency);
    assert!(!scenarios.is_empty(), "no scenario found in src/scenarios/");
    assert!(
        !concurrency.is_empty(),
        "no scenario found in src/concurrency.rs"
    );

    let mut problems = compare("scenarios", &scenarios, &listed(&lib, "scenarios"));
    problems.extend(compare(
        "concurrency",
        &concurrency,
        &listed(&lib, "concurrency"),
    ));
    assert!(
        problems.is_empty(),
        "`suite!` in src/lib.rs and the scenarios disagree ({} problem(s)):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_scanner_finds_one_line_and_wrapped_signatures_only() {
    let text = "
/// pub async fn in_a_comment(store: Arc<dyn Store>) {
pub async fn one_line(store: Arc<dyn Store>) {
}
pub async fn wrapped(
    store: std::sync::Arc<dyn tenantry_store::Store>,
) {
}
async fn private_helper(store: Arc<dyn Store>) {}
pub async fn helper(env: &Env) -> u32 {}
pub async fn returns(store: Arc<dyn Store>) -> Env {}
pub async fn other_store(store: Arc<dyn NotStore>) {}
// pub async fn commented_out(store: Arc<dyn Store>) {}
";
    assert_eq!(scenarios_in(text), ["one_line", "wrapped"]);

    let lib = "
macro_rules! suite {
    () => { x! { scenarios: [a, b, // c,
        d,], concurrency: [e] } };
}
macro_rules! other { (scenarios: [$($s:ident),*]) => {}; }
";
    assert_eq!(listed(lib, "scenarios"), ["a", "b", "d"]);
    assert_eq!(listed(lib, "concurrency"), ["e"]);
}
