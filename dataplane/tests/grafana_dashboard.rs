//! The Grafana dashboard in `control/ops/` cannot drift from the metrics: every metric its
//! queries name is one a running node exports (UDP and TCP on, as the binary renders its page),
//! every label a query groups by is on those series, and the panels the operators need are
//! there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use mixplane_control::admin::AdminHandler;
use mixplane_control::keys::{self, KeyMaterial};
use mixplane_control::metrics::PromText;
use mixplane_control::topology::TopologyHealth;
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::io::tcp::TcpSettings;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::{Admin, ControlPlane};
use mixplane_dataplane::sphinx::{NodeKeys, SphinxKey};

const DASHBOARD: &str = include_str!("../../control/ops/grafana-dashboard.json");

/// The metrics page of a running node, as the binary serves it (the plane's page and the
/// topology health series).
fn scrape() -> String {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("mixplane-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let k = KeyMaterial::generate(3);
    keys::write_key(&keys_dir.join(keys::PRIMARY_FILE), k.secret(), 3).unwrap();
    let config = NodeConfig {
        io: IoBackendKind::Mmsg,
        workers: 2,
        replay_expected: 10_000,
        tcp: Some(TcpSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..TcpSettings::default()
        }),
        ..NodeConfig::default()
    };
    let keys = Arc::new(NodeKeys::single(SphinxKey::from_secret(*k.secret(), 3)));
    let node = Node::start(config.clone(), keys).unwrap();
    let stored = keys::load_keys(&keys_dir).unwrap();
    let plane = Arc::new(ControlPlane::new(node, config, keys_dir, stored, None));
    let mut page = Admin(plane.clone()).metrics();
    let mut p = PromText::new();
    TopologyHealth::new().write_metrics(&mut p);
    page.push_str(&p.finish());
    Arc::try_unwrap(plane)
        .ok()
        .unwrap()
        .into_node()
        .shutdown()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    page
}

/// Each series name on the page with the label names its samples carry.
fn series(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if let Some(body) = line[end..].strip_prefix('{') {
            let body = &body[..body.find('}').unwrap()];
            labels.extend(
                body.split(',')
                    .filter_map(|kv| Some(kv.split_once('=')?.0.to_string())),
            );
        }
    }
    out
}

/// The metric names in a PromQL expression (everything spelled `mixplane_…`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("mixplane_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The labels of every `by (…)` in a PromQL expression.
fn grouped_by(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .flat_map(|s| s[..s.find(')').unwrap()].split(','))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Every query of the dashboard, with its panel's title.
fn queries(dash: &serde_json::Value) -> Vec<(String, String)> {
    let panels = dash["panels"].as_array().expect("panels");
    let mut out = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().expect("title").to_string();
        for t in p["targets"].as_array().expect("targets") {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    let exported = series(&scrape());
    assert!(exported.len() > 30, "the page has the node's series");
    let qs = queries(&dash);
    assert!(qs.len() > 20);
    let mut used = BTreeSet::new();
    for (title, expr) in &qs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{title}: `{expr}` names no mixplane metric"
        );
        for n in &names {
            assert!(exported.contains_key(n), "{title}: `{n}` is not exported");
        }
        for l in grouped_by(expr).iter().filter(|l| *l != "instance") {
            assert!(
                names.iter().any(|n| exported[n].contains(l)),
                "{title}: grouped by `{l}`, which {names:?} do not carry"
            );
        }
        used.extend(names);
    }
    // the panels operators need: rates in and out, drops by reason, wheel occupancy,
    // replay-filter fill, latency histograms, worker time by phase, TCP events
    for need in [
        "mixplane_packets_received_total",
        "mixplane_packets_sent_total",
        "mixplane_packets_dropped_total",
        "mixplane_wheel_packets",
        "mixplane_replay_filter_fill_ratio",
        "mixplane_residence_seconds_bucket",
        "mixplane_unwrap_seconds_per_packet_bucket",
        "mixplane_worker_busy_seconds_total",
        "mixplane_tcp_events_total",
    ] {
        assert!(used.contains(need), "no panel queries {need}");
    }
    let quantiles = qs
        .iter()
        .filter(|(_, e)| e.starts_with("histogram_quantile("))
        .count();
    assert!(quantiles >= 4, "latency quantiles via histogram_quantile");
}

#[test]
fn the_dashboard_imports_with_a_chosen_prometheus() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "ids are unique"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }
    // every query is limited to the chosen instances
    for (title, expr) in queries(&dash) {
        assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
    }
}
