//! The architecture, checked: which layer of `src/` may name which, read from
//! the code's own `crate::` paths (in `use` declarations and inline), so the
//! rules in the README's source map stay true as the code grows.
//!
//! - every import points down the layer table below (an import the table does
//!   not allow fails, naming the file and the path);
//! - no cycle between layers;
//! - only the store speaks SQL (`sqlx`), and neither the domain nor the
//!   service names a transport's crate (`tonic`, `axum`, `hyper`);
//! - no file in `src/` is longer than 600 lines.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The layers, lowest first: each with the module paths it owns and the
/// layers it may import. A path belongs to the layer with the longest
/// matching prefix.
const LAYERS: &[(&str, &[&str], &[&str])] = &[
    ("error", &["error", "Error", "Result"], &[]),
    ("domain", &["domain"], &["error"]),
    ("crypto", &["crypto"], &["domain", "error"]),
    ("files", &["files"], &["crypto", "error"]),
    ("metrics", &["ops::metrics"], &["domain", "error"]),
    // The folder's index: it only declares its modules.
    ("ops", &["ops"], &[]),
    ("store", &["store"], &["domain", "files", "error"]),
    ("view", &["view"], &["store", "crypto", "domain", "error"]),
    (
        "service",
        &["service"],
        &["view", "store", "crypto", "domain", "metrics", "error"],
    ),
    (
        "transport",
        &["transport"],
        &[
            "service", "view", "crypto", "domain", "metrics", "files", "error",
        ],
    ),
    (
        "seal",
        &["seal"],
        &["transport", "crypto", "domain", "files", "error"],
    ),
    (
        "config",
        &["config"],
        &["seal", "transport", "domain", "error"],
    ),
    (
        "server",
        &["server"],
        &[
            "seal",
            "config",
            "transport",
            "service",
            "view",
            "store",
            "crypto",
            "domain",
            "metrics",
            "files",
            "error",
        ],
    ),
    (
        "doctor",
        &["ops::doctor"],
        &[
            "seal",
            "server",
            "config",
            "transport",
            "store",
            "crypto",
            "domain",
            "files",
            "error",
        ],
    ),
    (
        "agent",
        &["agent"],
        &["transport", "crypto", "domain", "files", "error"],
    ),
    (
        "cli",
        &["cli"],
        &[
            "agent",
            "doctor",
            "seal",
            "server",
            "config",
            "transport",
            "service",
            "store",
            "crypto",
            "domain",
            "metrics",
            "files",
            "error",
        ],
    ),
];

/// The crates only some layers may name, and which.
const CRATES: &[(&str, &[&str])] = &[
    ("sqlx", &["store"]),
    ("tonic", &["transport", "server", "agent", "cli"]),
    ("axum", &["transport", "server", "agent", "cli"]),
    ("hyper", &["transport", "server", "cli"]),
];

/// Longest a file in `src/` may be.
const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/service/keysets.rs` is `service::keysets`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The layer a module path belongs to.
fn layer_of(path: &[String]) -> Option<&'static str> {
    let joined = path.join("::");
    LAYERS
        .iter()
        .flat_map(|(layer, prefixes, _)| prefixes.iter().map(move |p| (*layer, *p)))
        .filter(|(_, prefix)| joined == *prefix || joined.starts_with(&format!("{prefix}::")))
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(layer, _)| layer)
}

/// Code without comments, string literals and `#[cfg(test)]` modules: what
/// the shipped code names.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal ('"', '\'') or a lifetime ('a): skip a literal
            // whole, keep a lifetime as it is.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.next();
                    chars.next();
                    while chars.next().is_some_and(|c| c != '\'') {}
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                } else {
                    out.push('\'');
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Every path a use tree names, flattened: `a::{b, c::{d}}` gives `a::b`
/// and `a::c::d`.
fn flatten(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    flatten(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        flatten(&base, &inner[start..], out);
    } else if !tree.is_empty() {
        let tree = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push(join(prefix, tree));
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}::{b}"),
    }
}

/// The crate-internal module paths `code` (of module `module`) names:
/// `crate::…` and `super::…` paths, in `use` declarations and inline.
fn imports(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        flatten("", &rest[..end], &mut paths);
    }
    // Inline paths: `crate::a::b` and `super::a` outside use declarations.
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            let before = text[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(path.trim_end_matches(':').to_string());
        }
    }
    paths
        .into_iter()
        .filter_map(|p| resolve(module, &p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// `path` as a path from the crate root, if it is crate-internal.
fn resolve(module: &[String], path: &str) -> Option<Vec<String>> {
    let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    match parts.first() {
        Some(&"crate") => {
            parts.remove(0);
            Some(parts.into_iter().map(String::from).collect())
        }
        Some(&"super") => {
            let mut base = module.to_vec();
            while parts.first() == Some(&"super") {
                parts.remove(0);
                base.pop()?;
            }
            base.extend(parts.into_iter().map(String::from));
            Some(base)
        }
        _ => None,
    }
}

struct Source {
    file: PathBuf,
    module: Vec<String>,
    layer: &'static str,
    code: String,
    lines: usize,
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| !f.ends_with("main.rs") && !f.ends_with("lib.rs"))
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("read");
            let module = module_of(&file);
            let layer = layer_of(&module)
                .unwrap_or_else(|| panic!("{} belongs to no layer", file.display()));
            Source {
                lines: text.lines().count(),
                code: code_of(&text),
                file,
                module,
                layer,
            }
        })
        .collect()
}

fn allowed(layer: &str) -> &'static [&'static str] {
    LAYERS
        .iter()
        .find(|(name, _, _)| *name == layer)
        .map(|(_, _, may)| *may)
        .unwrap_or(&[])
}

fn relative(file: &Path) -> String {
    file.strip_prefix(src().parent().expect("root"))
        .unwrap_or(file)
        .display()
        .to_string()
}

#[test]
fn every_import_points_down_the_layers() {
    let mut wrong = BTreeSet::new();
    for source in sources() {
        for path in imports(&source.module, &source.code) {
            let Some(to) = layer_of(&path) else { continue };
            if to != source.layer && !allowed(source.layer).contains(&to) {
                wrong.insert(format!(
                    "{} ({}) imports crate::{} ({to})",
                    relative(&source.file),
                    source.layer,
                    path.join("::")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports the layer table does not allow:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_cycle_between_layers() {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for source in sources() {
        for path in imports(&source.module, &source.code) {
            if let Some(to) = layer_of(&path).filter(|to| *to != source.layer) {
                edges.entry(source.layer).or_default().insert(to);
            }
        }
    }
    // Depth-first search; a node met again while on the stack closes a cycle.
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node);
            cycles.push(cycle.join(" -> "));
            return;
        }
        if !done.insert(node) {
            return;
        }
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, cycles);
        }
        stack.pop();
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn crates_stay_in_their_layers() {
    let mut wrong = BTreeSet::new();
    for source in sources() {
        for (krate, layers) in CRATES {
            let named = source
                .code
                .match_indices(&format!("{krate}::"))
                .any(|(at, _)| {
                    !source.code[..at]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                });
            if named && !layers.contains(&source.layer) {
                wrong.insert(format!(
                    "{} ({}) names {krate}",
                    relative(&source.file),
                    source.layer
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "crates outside their layers:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|s| s.lines > MAX_LINES)
        .map(|s| format!("{} has {} lines", relative(&s.file), s.lines))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by job):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_reads_paths_as_the_compiler_does() {
    let module: Vec<String> = vec!["service".into(), "keysets".into()];
    let code = code_of(
        "use crate::{domain::{model::KeyState, rotation}, store::KeyRow as Row};\n\
         use super::Service; // crate::transport in a comment\n\
         let s = \"crate::server\"; let c = '\"'; fn f<'a>() { crate::ops::metrics::x(); }",
    );
    let found: BTreeSet<String> = imports(&module, &code)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    let expected: BTreeSet<String> = [
        "domain::model::KeyState",
        "domain::rotation",
        "store::KeyRow",
        "service::Service",
        "ops::metrics::x",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, expected);
    assert_eq!(
        layer_of(&["ops".into(), "metrics".into(), "x".into()]),
        Some("metrics")
    );
    assert_eq!(layer_of(&["Result".into()]), Some("error"));
}
