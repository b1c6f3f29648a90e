//! The layers' arrows point down only (README, "Architecture"): the command line uses the use
//! cases, the use cases use the kernel, the runtime, the checks, the config and the state, and
//! nothing below reaches up. Read from the source, so a new `use` that reaches up fails here.

use std::path::Path;

/// Each layer (a folder or file under `src/`) and the layers it must not name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("ops", &["crate::cli"]),
    (
        "fleet",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
            "crate::health",
        ],
    ),
    (
        "kernel",
        &[
            "crate::cli",
            "crate::ops",
            "crate::runtime",
            "crate::health",
            // The port types it shares with the config are in crate::ports.
            "crate::config",
        ],
    ),
    (
        "ports.rs",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
            "crate::health",
            "crate::config",
            "crate::state",
        ],
    ),
    (
        "runtime",
        &["crate::cli", "crate::ops", "crate::kernel", "crate::health"],
    ),
    (
        "health",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
        ],
    ),
    (
        "config",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
            "crate::health",
        ],
    ),
    (
        "state.rs",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
            "crate::health",
        ],
    ),
    (
        "identity.rs",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
        ],
    ),
    (
        "trust.rs",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
        ],
    ),
    (
        "error.rs",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
        ],
    ),
    (
        "crash.rs",
        &[
            "crate::cli",
            "crate::ops",
            "crate::kernel",
            "crate::runtime",
        ],
    ),
];

fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read src") {
            sources(&entry.expect("entry").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Whether `line` names `path` (`crate::ops`), directly or in a group (`crate::{ops, ..}`).
fn names(line: &str, path: &str) -> bool {
    if line.contains(path) {
        return true;
    }
    let module = path.trim_start_matches("crate::");
    line.split("crate::{").skip(1).any(|group| {
        group
            .split('}')
            .next()
            .unwrap_or("")
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == module)
    })
}

#[test]
fn no_layer_reaches_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut reaching_up = Vec::new();
    for (layer, forbidden) in FORBIDDEN {
        let mut files = Vec::new();
        sources(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "layer {layer} has no source");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            for (number, line) in text.lines().enumerate() {
                for name in *forbidden {
                    if names(line, name) {
                        reaching_up.push(format!(
                            "{}:{}: {}",
                            file.display(),
                            number + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        reaching_up.is_empty(),
        "imports reaching up:\n{}",
        reaching_up.join("\n")
    );
}

#[test]
fn grouped_imports_are_seen() {
    assert!(names("use crate::{config, ops::Env};", "crate::ops"));
    assert!(names("use crate::ops::Env;", "crate::ops"));
    assert!(!names("use crate::{config, operations};", "crate::ops"));
}

#[test]
fn no_source_file_is_over_500_lines() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file)
                .expect("source")
                .lines()
                .count();
            (lines > 500).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

/// The sibling modules of `dir` (its `*.rs` files but `mod.rs`) that each one names through
/// `super::` — in a path or a grouped import — with `#[cfg(test)]` modules left out.
fn sibling_imports(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut siblings: Vec<String> = std::fs::read_dir(dir)
        .expect("a source folder")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".rs")?.to_string();
            (stem != "mod").then_some(stem)
        })
        .collect();
    siblings.sort();
    siblings
        .iter()
        .map(|module| {
            let text = std::fs::read_to_string(dir.join(format!("{module}.rs"))).expect("source");
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let mut groups: Vec<&str> = code.split("super::").skip(1).collect();
            groups.retain(|g| !g.starts_with("super::"));
            let named = siblings
                .iter()
                .filter(|other| *other != module)
                .filter(|other| {
                    groups.iter().any(|group| {
                        let group = match group.strip_prefix('{') {
                            Some(inner) => inner.split('}').next().unwrap_or(""),
                            None => group
                                .split(|c: char| !c.is_alphanumeric() && c != '_')
                                .next()
                                .unwrap_or(""),
                        };
                        group
                            .split(|c: char| !c.is_alphanumeric() && c != '_')
                            .any(|word| word == other.as_str())
                    })
                })
                .cloned()
                .collect();
            (module.clone(), named)
        })
        .collect()
}

/// No two modules of the firewall layer import each other, however indirectly: each change has
/// one place to go, and a module can be read with only what is below it.
#[test]
fn the_firewall_modules_import_in_one_direction() {
    let graph =
        sibling_imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernel/netfilter"));
    let edges = |module: &str| -> Vec<String> {
        graph
            .iter()
            .find(|(name, _)| name == module)
            .map(|(_, named)| named.clone())
            .unwrap_or_default()
    };
    for (start, _) in &graph {
        // Every module reachable from `start`; reaching `start` again is a circle.
        let mut seen: Vec<String> = Vec::new();
        let mut path = vec![start.clone()];
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), edges(start))];
        while let Some((_, next)) = stack.last_mut() {
            let Some(module) = next.pop() else {
                stack.pop();
                path.pop();
                continue;
            };
            assert!(
                module != *start,
                "an import circle: {} -> {module}",
                path.join(" -> ")
            );
            if !seen.contains(&module) {
                seen.push(module.clone());
                path.push(module.clone());
                stack.push((module.clone(), edges(&module)));
            }
        }
    }
}

#[test]
fn sibling_imports_are_read_from_paths_and_groups() {
    let graph =
        sibling_imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernel/netfilter"));
    let of = |module: &str| &graph.iter().find(|(m, _)| m == module).expect(module).1;
    assert!(
        of("script").contains(&"docker_user".to_string()),
        "a grouped import"
    );
    assert!(of("bindings").contains(&"batch".to_string()), "a path");
    assert!(of("raw").is_empty(), "{:?}", of("raw"));
}
