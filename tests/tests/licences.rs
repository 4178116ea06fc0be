//! The product's licences: every crate the `mixplane` binary links (normal dependencies of
//! `mixplane-dataplane`, found from `cargo metadata`'s resolved graph) has a licence expression
//! made only of permissive licences. Nym's crates (some GPL-3.0) are dev-dependencies of the
//! interop tests and must never reach this set.

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::Command;

/// Licences a linked crate may offer (one of them suffices in an `OR`; all in an `AND`).
const ALLOWED: [&str; 12] = [
    "MIT",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "0BSD",
    "Unlicense",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "CDLA-Permissive-2.0",
    "BSL-1.0",
];

/// Whether an SPDX-ish expression (with `/` as the old `OR`) is satisfiable by allowed licences.
fn acceptable(expr: &str) -> bool {
    let expr = expr.replace('/', " OR ").replace(['(', ')'], " ");
    // conjunctions of disjunctions: "A AND (B OR C)" -> every AND part needs one allowed option
    expr.split(" AND ").all(|part| {
        part.split(" OR ")
            .map(str::trim)
            .any(|l| ALLOWED.contains(&l) || l == "Apache-2.0 WITH LLVM-exception")
    })
}

#[test]
fn the_product_links_only_permissive_licences() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let licence: HashMap<&str, (&str, &str)> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap(),
                (
                    p["name"].as_str().unwrap(),
                    p["license"].as_str().unwrap_or("NONE"),
                ),
            )
        })
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = m["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = licence
        .iter()
        .find(|(_, (name, _))| *name == "mixplane-dataplane")
        .map(|(id, _)| *id)
        .expect("the dataplane package");
    // walk normal (not dev, not build) dependencies
    let mut seen = HashSet::from([root]);
    let mut todo = VecDeque::from([root]);
    while let Some(id) = todo.pop_front() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(pkg) {
                todo.push_back(pkg);
            }
        }
    }
    assert!(seen.len() > 50, "the walk found the dependency graph");
    let bad: Vec<String> = seen
        .iter()
        .map(|id| licence[id])
        .filter(|(_, l)| !acceptable(l))
        .map(|(n, l)| format!("{n}: {l}"))
        .collect();
    assert!(bad.is_empty(), "non-permissive licences linked: {bad:?}");
    let names: HashSet<&str> = seen.iter().map(|id| licence[id].0).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("nym-")),
        "a Nym crate reached the product"
    );
    assert!(names.contains("snow"), "Noise comes from snow");
}

#[test]
fn the_licence_check_refuses_copyleft() {
    assert!(acceptable("MIT OR Apache-2.0"));
    assert!(acceptable("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(acceptable("MIT/Apache-2.0"));
    assert!(!acceptable("GPL-3.0-only"));
    assert!(!acceptable("MIT AND GPL-3.0-or-later"));
    assert!(!acceptable("NONE"));
}
