//! The crate's floor plan holds: every module imports only from its own layer or the layers
//! below, and no modules import each other in a loop. Read from the sources (every `crate::`
//! and `super::` path outside comments), so a new upward import or a new loop fails here.
//!
//! The layers, bottom up (see the crate doc in `src/lib.rs`):
//!
//! | layer | modules | what it holds |
//! |---|---|---|
//! | 0 | `value` | the data that crosses threads and processes |
//! | 1 | `rt::*` | the machinery: no script knowledge |
//! | 2 | `error`, `host`, `link` | per-run state, errors, the parent link |
//! | 3 | `script` | the engine seam |
//! | 4 | `thread`, `process`, `sync`, `pool`, `exec` | Python's objects, the execution models |
//! | 5 | `api` | the script API, described once |
//! | 6 | `engine::*` | each language |
//! | 7 | `runtime` | the builder |
//! | 8 | the crate root (`lib.rs`) | re-exports |
//! | 9 | `bench` | `parrun bench`, in the binary's crate beside `main.rs` |

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer of a module path (its first segments).
fn layer(module: &[String]) -> Option<u32> {
    Some(match module.first().map(String::as_str) {
        None => 8,
        Some("value") => 0,
        Some("rt") => 1,
        Some("error" | "host" | "link") => 2,
        Some("script") => 3,
        Some("thread" | "process" | "sync" | "pool" | "exec") => 4,
        Some("api") => 5,
        Some("engine") => 6,
        Some("runtime") => 7,
        Some("bench") => 9,
        _ => return None,
    })
}

/// The unit a module belongs to for the loop check: a module and its submodules are one unit
/// (a parent and its private helpers may call each other), except in `rt` and `engine`, whose
/// modules are units of their own.
fn unit(module: &[String]) -> String {
    let depth = match module.first().map(String::as_str) {
        Some("rt" | "engine") => 2,
        _ => 1,
    };
    module
        .iter()
        .take(depth)
        .cloned()
        .collect::<Vec<_>>()
        .join("::")
}

/// The module a source file defines: `src/rt/gil.rs` is `rt::gil`, `src/pool/mod.rs` is `pool`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments and string literals (which may hold paths as text).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            i += end;
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i += raw.find("\"#").map_or(rest.len(), |e| e + 5);
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if rest.starts_with("'\"'") {
            i += 3;
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths after `crate::` or `super::` at `start` (just past the `::`): `a::b`, or each
/// path of a `{...}` group.
fn paths_at(code: &str, start: usize) -> Vec<Vec<String>> {
    let rest = &code[start..];
    if let Some(group) = rest.strip_prefix('{') {
        // Split the group at top-level commas; each item may have a nested group.
        let mut depth = 0;
        let mut items = Vec::new();
        let mut current = String::new();
        for c in group.chars() {
            match c {
                '{' => {
                    depth += 1;
                    current.push(c);
                }
                '}' if depth == 0 => break,
                '}' => {
                    depth -= 1;
                    current.push(c);
                }
                ',' if depth == 0 => items.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        items.push(current);
        let mut paths = Vec::new();
        for item in items {
            let item: String = item.split_whitespace().collect();
            if item.is_empty() || item == "self" {
                continue;
            }
            let (head, tail) = match item.find("::{") {
                Some(i) => (&item[..i], Some(&item[i + 2..])),
                None => (item.as_str(), None),
            };
            let head: Vec<String> = head
                .split("::")
                .map(|s| s.split(" as ").next().unwrap_or(s).to_string())
                .take_while(|s| !s.is_empty() && s.chars().all(ident_char))
                .collect();
            match tail {
                Some(tail) => {
                    for mut sub in paths_at(tail, 0) {
                        let mut path = head.clone();
                        path.append(&mut sub);
                        paths.push(path);
                    }
                }
                None => paths.push(head),
            }
        }
        return paths;
    }
    let path: Vec<String> = rest
        .split("::")
        .map(|seg| {
            seg.chars()
                .take_while(|&c| ident_char(c))
                .collect::<String>()
        })
        .scan(true, |go, seg| {
            // Stop after the first segment that does not continue with `::`.
            let keep = *go && !seg.is_empty();
            *go = keep;
            keep.then_some(seg)
        })
        .collect();
    vec![path]
}

/// The byte ranges of inline `mod name { ... }` blocks (a test module, say), where `super`
/// is the file's own module rather than its parent.
fn inline_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("mod ") {
        let start = from + at;
        from = start + 4;
        if code[..start].chars().last().is_some_and(ident_char) {
            continue;
        }
        let rest = &code[from..];
        let name_len = rest.chars().take_while(|&c| ident_char(c)).count();
        let after = rest[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        spans.push(open..open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    spans
}

/// Every module path a file refers to, resolved to the longest known module prefix.
fn references(
    module: &[String],
    code: &str,
    modules: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let inline = inline_modules(code);
    for prefix in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(prefix) {
            let start = from + at + prefix.len();
            from = start;
            let before = code[..from - prefix.len()].chars().last();
            if before.is_some_and(|c| ident_char(c) || c == ':') {
                continue;
            }
            let base = match prefix {
                "crate::" => Vec::new(),
                _ if inline.iter().any(|r| r.contains(&start)) => module.to_vec(),
                _ => parent(module),
            };
            for path in paths_at(code, start) {
                let mut full = base.clone();
                full.extend(path);
                // The longest prefix that names a module of the crate.
                let target = (0..=full.len())
                    .rev()
                    .map(|n| full[..n].to_vec())
                    .find(|p| modules.contains(p))
                    .unwrap_or_default();
                found.insert(target);
            }
        }
    }
    found
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

#[test]
fn every_import_points_down_and_no_modules_import_each_other_in_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();

    let mut upward = BTreeSet::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == ["main"] {
            continue; // the binary: a crate of its own, on top
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let from = layer(&module).unwrap_or_else(|| {
            panic!(
                "{}: a module with no layer: add it to `layer`",
                file.display()
            )
        });
        for target in references(&module, &code_only(&text), &modules) {
            let to = layer(&target).expect("known modules have layers");
            let (a, b) = (module.join("::"), target.join("::"));
            if target.is_empty() && !module.is_empty() {
                upward.insert((
                    a.clone(),
                    "the crate root (import from the defining module)".into(),
                ));
            } else if to > from {
                upward.insert((a.clone(), b.clone()));
            }
            let (ua, ub) = (unit(&module), unit(&target));
            if ua != ub && !target.is_empty() {
                edges.entry(ua).or_default().insert(ub);
            }
        }
    }

    assert!(
        upward.is_empty(),
        "imports that point up a layer: {upward:#?}"
    );
    let loops = loops(&edges);
    assert!(
        loops.is_empty(),
        "modules that import each other in a loop: {loops:#?}"
    );
}

/// The strongly connected groups of more than one unit, each as its sorted names joined by
/// " <-> ".
fn loops(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|&n| (n, reach(n))).collect();
    let mut groups = BTreeSet::new();
    for &n in &nodes {
        let group: BTreeSet<&String> = nodes
            .iter()
            .copied()
            .filter(|&m| m == n || (reaches[n].contains(m) && reaches[m].contains(n)))
            .collect();
        if group.len() > 1 {
            groups.insert(group.into_iter().cloned().collect::<Vec<_>>().join(" <-> "));
        }
    }
    groups
}

#[test]
fn the_reader_finds_paths_in_groups_and_skips_comments_and_strings() {
    let modules: BTreeSet<Vec<String>> = [
        vec![],
        vec!["rt".to_string()],
        vec!["rt".to_string(), "gil".to_string()],
        vec!["host".to_string()],
        vec!["pool".to_string()],
    ]
    .into_iter()
    .collect();
    let code = code_only(
        "use crate::{host::Host, rt::{gil::Gil, self}};\n// crate::pool::x\nlet s = \"crate::pool\";\nx = crate::pool::Pool::new();\n",
    );
    let found = references(&["api".to_string()], &code, &modules);
    let names: BTreeSet<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        names,
        ["host", "pool", "rt::gil"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
