//! The example ops files shipped in `control/ops/` stay valid: the config is the one
//! `mixplane init` writes and parses to the defaults, and the systemd unit keeps its hardening.

use mixplane_control::config::{Config, EXAMPLE};

const UNIT: &str = include_str!("../ops/mixplane.service");

/// `(key, value)` of every directive in the unit's `[Service]` section.
fn service_directives() -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

#[test]
fn example_config_is_the_init_config_and_parses_to_the_defaults() {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/node.toml"),
    )
    .unwrap();
    assert_eq!(shipped, EXAMPLE);
    let dir = std::env::temp_dir().join(format!("mixplane-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("node.toml");
    std::fs::write(&p, &shipped).unwrap();
    assert_eq!(Config::load(&p).unwrap(), Config::default());
}

#[test]
fn systemd_unit_is_hardened() {
    let d = service_directives();
    let get = |k: &str| -> Vec<&str> {
        d.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(get(k), vec![v], "{k}");
    }
    // capability bounding: at most CAP_NET_ADMIN (forced socket buffers), never more
    let caps = get("CapabilityBoundingSet");
    assert_eq!(caps.len(), 1);
    assert!(caps[0].split_whitespace().all(|c| c == "CAP_NET_ADMIN"));
    assert_eq!(get("AmbientCapabilities"), caps);
    // runs the real command with its config, as an unprivileged user
    assert_eq!(
        get("ExecStart"),
        vec!["/usr/local/bin/mixplane run --config /var/lib/mixplane/node.toml"]
    );
    assert_eq!(get("User"), vec!["mixplane"]);
    // the drain after SIGTERM (bounded by the 10 s delay cap) fits before SIGKILL
    let stop: u64 = get("TimeoutStopSec")[0].parse().unwrap();
    assert!(stop > 10);
    // the workers pin themselves: sched_setaffinity (@resources) must not be filtered out
    for f in get("SystemCallFilter") {
        if let Some(denied) = f.strip_prefix('~') {
            assert!(!denied.split_whitespace().any(|g| g == "@resources"), "{f}");
        }
    }
}

#[test]
fn systemd_accepts_the_unit_where_systemd_analyze_exists() {
    let dir = std::env::temp_dir().join(format!("mixplane-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("mixplane.service");
    // verify checks that the executables exist; any will do
    std::fs::write(&p, UNIT.replace("/usr/local/bin/mixplane", "/bin/true")).unwrap();
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&p)
        .output()
    {
        Err(e) => eprintln!("systemd-analyze not available ({e}); skipping"),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            assert!(!text.contains("Unknown key"), "{text}");
        }
    }
}
