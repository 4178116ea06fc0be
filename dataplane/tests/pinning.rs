//! A worker goes to the core its configuration names even when the thread that starts the
//! node is pinned elsewhere (a benchmark's harness pins itself before it starts a node; the
//! workers used to inherit its core instead, silently). Its own test binary, so no other
//! test's node threads are in the process.

use std::sync::Arc;

use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sphinx::{NodeKeys, SphinxKey};

/// `Cpus_allowed_list` of every thread of this process named `name`.
fn allowed_lists_of(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let t = t.expect("task entry").path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        if let Some(l) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            out.push(l["Cpus_allowed_list:".len()..].trim().to_string());
        }
    }
    out
}

#[test]
fn a_worker_is_pinned_to_its_core_when_the_starting_thread_is_pinned_to_another() {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 {
        eprintln!(
            "skipped: this process may use {} core(s), the test needs two",
            cores.len()
        );
        return;
    }
    let (first, last) = (cores[0], cores[cores.len() - 1]);
    let node = std::thread::spawn(move || {
        assert!(core_affinity::set_for_current(first));
        Node::start(
            NodeConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                workers: 1,
                pin_cores: Some(vec![last.id]),
                io: IoBackendKind::Mmsg,
                slab_small: 64,
                slab_large: 4,
                wheel_capacity: 64,
                replay_expected: 1000,
                ..NodeConfig::default()
            },
            Arc::new(NodeKeys::single(SphinxKey::from_secret([7; 32], 1))),
        )
        .expect("node starts")
    })
    .join()
    .expect("starter thread");
    // the worker pins itself as it starts
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let want = last.id.to_string();
    loop {
        let lists = allowed_lists_of("mixplane-w0");
        if lists == [want.clone()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker allowed on {lists:?}, configured core {want} (starter pinned to {})",
            first.id
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    node.shutdown().expect("node stops");
}
