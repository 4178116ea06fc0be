//! The `mixplane` binary as an operator runs it: `init`, `keys`, `run` with a topology file that
//! is reloaded when it changes and on SIGHUP, key rotation that follows nym-api, the admin API,
//! and a clean exit on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::local::{free_tcp, free_udp, get};

const BIN: &str = env!("CARGO_BIN_EXE_mixplane");

/// Polls `/status` until `pred` holds; returns the last status.
fn wait_status(admin: SocketAddr, within: Duration, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        if let Some(s) = get(admin, "/status") {
            if pred(&s) {
                return s;
            }
            last = s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("status never matched; last: {last}");
}

fn topology(n: usize) -> String {
    let nodes: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"node_id":{i},"ip_addresses":["192.0.2.{}"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"}}"#,
                i + 1
            )
        })
        .collect();
    format!("[{}]", nodes.join(","))
}

fn write_topology(p: &Path, n: usize) {
    // a new file renamed into place, as an operator's fetch script would
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, topology(n)).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

/// Serves the current `body` as JSON to every request on loopback; returns the URL.
fn serve_json(body: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    use std::io::{BufRead, BufReader};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/v1/unstable/nym-nodes/skimmed",
        l.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            // the request line and headers, up to the blank line
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let b = body.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            );
        }
    });
    url
}

/// The config `init` wrote at `cfg`, listening on `listen` with the admin API on `admin`, one
/// worker and a small replay filter.
fn small_node_config(cfg: &Path, listen: SocketAddr, admin: SocketAddr) -> String {
    std::fs::read_to_string(cfg)
        .unwrap()
        .replace(
            "listen = \"0.0.0.0:1789\"",
            &format!("listen = \"{listen}\""),
        )
        .replace(
            "listen = \"127.0.0.1:8081\"",
            &format!("listen = \"{admin}\""),
        )
        // the nym-node HTTP API and verloc on free ports
        .replace("listen = \"0.0.0.0:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"0.0.0.0:1790\"", "listen = \"127.0.0.1:0\"")
        .replace("workers = 0", "workers = 1")
        // every node of the test runs on 127.0.0.1
        .replace(
            "allow_loopback_next_hops = false",
            "allow_loopback_next_hops = true",
        )
        .replace(
            "expected_packets_per_second = 1000",
            "expected_packets_per_second = 10",
        )
}

/// Sends `sig` to the child and waits (up to 15 s) for it to exit; returns its stderr.
fn stop(mut child: std::process::Child) -> String {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    err
}

#[test]
fn topology_is_fetched_from_a_url_and_refetched_on_sighup() {
    let dir = std::env::temp_dir().join(format!("mixplane-bin-url-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        Command::new(BIN)
            .arg("init")
            .arg(&dir)
            .status()
            .unwrap()
            .success()
    );
    let body = std::sync::Arc::new(std::sync::Mutex::new(format!(
        "{{\"nodes\":{{\"pagination\":{{\"total\":2,\"page\":0,\"size\":50}},\"data\":{}}}}}",
        topology(2)
    )));
    let url = serve_json(body.clone());
    let cfg = dir.join("node.toml");
    let (listen, admin) = (free_udp(), free_tcp());
    let text = small_node_config(&cfg, listen, admin)
        .replace(
            "# url = \"https://validator.nymtech.net/api/v1/unstable/nym-nodes/skimmed\"",
            &format!("url = \"{url}\""),
        )
        // the test server is plain http
        .replace("allow_http = false", "allow_http = true")
        .replace("refresh_secs = 300", "refresh_secs = 3600");
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let s = wait_status(admin, Duration::from_secs(10), |s| {
        s.contains("\"nodes\":2")
    });
    assert!(s.contains("\"version\":1"), "{s}");
    // the document changes; the next fetch is an hour away, SIGHUP fetches now
    *body.lock().unwrap() = topology(3);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let s = wait_status(admin, Duration::from_secs(10), |s| {
        s.contains("\"nodes\":3")
    });
    assert!(s.contains("\"version\":2"), "{s}");
    // an unchanged document is not republished
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(800));
    assert!(get(admin, "/status").unwrap().contains("\"version\":2"));
    let err = stop(child);
    assert!(err.contains("topology fetched"), "{err}");
}

#[test]
fn init_keys_run_reload_and_stop() {
    let dir = std::env::temp_dir().join(format!("mixplane-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let st = Command::new(BIN).arg("init").arg(&dir).status().unwrap();
    assert!(st.success());
    // init refuses to overwrite
    assert!(
        !Command::new(BIN)
            .arg("init")
            .arg(&dir)
            .status()
            .unwrap()
            .success()
    );
    let cfg = dir.join("node.toml");
    let keys = Command::new(BIN)
        .args(["keys", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(keys.status.success());
    let shown = String::from_utf8_lossy(&keys.stdout).to_string();
    assert!(shown.contains("primary"), "{shown}");
    // init wrote a Noise key (0600), and `keys` shows its public key in base58
    let noise = dir.join("keys").join("x25519_noise");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&noise).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
    let line = shown
        .lines()
        .find(|l| l.starts_with("noise"))
        .expect(&shown);
    let b58 = line.split_whitespace().last().unwrap();
    // 32 bytes in base58 (Bitcoin alphabet: no 0, O, I, l) are 43 or 44 characters
    assert!((43..=44).contains(&b58.len()), "{line}");
    assert!(
        b58.chars()
            .all(|c| c.is_ascii_alphanumeric() && !"0OIl".contains(c)),
        "{line}"
    );

    let (listen, admin) = (free_udp(), free_tcp());
    let text = small_node_config(&cfg, listen, admin)
        .replace("# file = \"topology.json\"", "file = \"topology.json\"");
    std::fs::write(&cfg, text).unwrap();
    let topo = dir.join("topology.json");
    write_topology(&topo, 2);

    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let s = wait_status(admin, Duration::from_secs(10), |s| {
        s.contains("\"nodes\":2")
    });
    assert!(s.contains("\"version\":1"), "{s}");
    assert!(s.contains(&format!("\"listen\":\"{listen}\"")), "{s}");

    // changed on disk: picked up within a couple of seconds
    std::thread::sleep(Duration::from_millis(1100)); // a distinct mtime
    write_topology(&topo, 3);
    let s = wait_status(admin, Duration::from_secs(5), |s| s.contains("\"nodes\":3"));
    assert!(s.contains("\"version\":2"), "{s}");

    // SIGHUP reloads even an unchanged file
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    wait_status(admin, Duration::from_secs(5), |s| {
        s.contains("\"version\":3")
    });

    // a sharply shrunk file is refused, the topology kept and the alarm raised
    std::thread::sleep(Duration::from_millis(1100));
    write_topology(&topo, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let s = get(admin, "/status").unwrap();
    assert!(
        s.contains("\"version\":3") && s.contains("\"nodes\":3"),
        "{s}"
    );
    let metrics = get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("\nmixplane_topology_alarm 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmixplane_topology_refused_total 1\n"),
        "{metrics}"
    );

    // a broken file is refused and the topology kept
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&topo, "{not json").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let s = get(admin, "/status").unwrap();
    assert!(
        s.contains("\"version\":3") && s.contains("\"nodes\":3"),
        "{s}"
    );

    let metrics = get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("mixplane_packets_received_total"),
        "{metrics}"
    );

    // the verloc responder runs and its counters are on the admin page
    assert!(
        metrics.contains("\nmixplane_verloc_echoes_answered_total 0\n"),
        "{metrics}"
    );

    let err = stop(child);
    assert!(err.contains("topology not loaded"), "{err}");
    // the nym-node HTTP API ran, signing with the identity key `init` wrote
    assert!(err.contains("nym-node HTTP API listening"), "{err}");
    assert!(err.contains("identity key loaded"), "{err}");
    // the replay filter was persisted
    assert!(std::fs::read_dir(dir.join("replay")).unwrap().count() > 0);
}

/// `unix` (seconds) as an RFC 3339 UTC timestamp.
fn rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // the civil date of a day count since 1970-01-01, in 400-year eras of 146097 days
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_751_364_000 + 59), "2025-07-01T10:00:59Z");
}

/// nym-api's key-rotation-info for absolute epoch `e` (validity 4 epochs of 60 s from epoch
/// 1000), the epoch having started at unix time `start`.
fn rotation_info(e: u32, start: u64) -> String {
    format!(
        r#"{{"key_rotation_state":{{"validity_epochs":4,"initial_epoch_id":1000}},"current_absolute_epoch_id":{e},"current_epoch_start":"{}","epoch_duration":{{"secs":60,"nanos":0}}}}"#,
        rfc3339(start)
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The rotation ids of the live keys in a `/status` document.
fn live_keys(status: &str) -> (u64, Option<u64>) {
    let s: serde_json::Value = serde_json::from_str(status).unwrap();
    let k = &s["keys"];
    (
        k["primary"]["rotation_id"].as_u64().unwrap(),
        k["secondary"]["rotation_id"].as_u64(),
    )
}

#[test]
fn rotation_follows_nym_api() {
    let dir = std::env::temp_dir().join(format!("mixplane-bin-rot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let init = Command::new(BIN)
        .arg("init")
        .arg(&dir)
        .args(["--rotation-id", "5"])
        .status();
    assert!(init.unwrap().success());
    // rotation 5 is epochs 1020..=1023; nym-api says the epoch in progress is 1023, its last
    let body = std::sync::Arc::new(std::sync::Mutex::new(rotation_info(1023, unix_now() - 10)));
    let url = serve_json(body.clone());
    let base = &url[..url.find("/v1/").unwrap()];
    let cfg = dir.join("node.toml");
    let (listen, admin) = (free_udp(), free_tcp());
    let text = small_node_config(&cfg, listen, admin)
        .replace("source = \"local\"", "source = \"nym-api\"")
        .replace(
            "# nym_api_url = \"https://validator.nymtech.net/api\"",
            &format!("nym_api_url = \"{base}\""),
        )
        .replace("allow_http = false", "allow_http = true")
        .replace("refresh_secs = 300", "refresh_secs = 1");
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let within = Duration::from_secs(10);
    // the last epoch of rotation 5: rotation 6's key is pre-announced
    let s = wait_status(admin, within, |s| live_keys(s) == (5, Some(6)));
    assert!(s.contains("\"rotation\":\"nym-api\""), "{s}");
    // nym-api moves to epoch 1024: the swap
    *body.lock().unwrap() = rotation_info(1024, unix_now() - 1);
    wait_status(admin, within, |s| live_keys(s) == (6, Some(5)));
    // epoch 1025: the old key is purged
    *body.lock().unwrap() = rotation_info(1025, unix_now() - 1);
    wait_status(admin, within, |s| live_keys(s) == (6, None));
    // nym-api serves garbage: refused, keys untouched
    *body.lock().unwrap() = "{\"key_rotation_state\":null}".into();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(live_keys(&get(admin, "/status").unwrap()), (6, None));
    let err = stop(child);
    assert!(err.contains("key rotation follows nym-api"), "{err}");
    assert!(err.contains("key-rotation-info not fetched"), "{err}");
}

#[test]
fn check_host_reports_a_core_and_refuses_one_it_cannot_use() {
    let out = std::process::Command::new(BIN)
        .args(["check-host", "--seconds", "0.2"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("units; gaps "), "{text}");
    assert!(text.contains("into a gap"), "{text}");
    assert!(text.contains("worst core: "), "{text}");
    let refused = std::process::Command::new(BIN)
        .args(["check-host", "--cores", "100000", "--seconds", "0.1"])
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not one this process may run on"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
