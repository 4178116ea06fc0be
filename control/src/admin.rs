//! The admin API: a small HTTP server on a local address.
//!
//! * `GET /metrics`: Prometheus text.
//! * `GET /status`: JSON (keys and rotation ids, topology version, workers).
//! * `POST /topology`: replace the topology with the JSON body.
//! * `POST /keys/rotate`: rotate the Sphinx keys now.
//!
//! Mutating endpoints need `Authorization: Bearer <token>`, the token read from a file at
//! start-up (compared in constant time); without a token file they answer 403. Bodies are
//! capped at [`MAX_BODY`]. The server runs on its own thread and never touches the dataplane's
//! hot path: it calls the [`AdminHandler`] the binary provides.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use subtle::ConstantTimeEq;

/// Largest request body accepted.
pub const MAX_BODY: usize = 4 << 20;

/// What the admin API asks of the node.
pub trait AdminHandler: Send + Sync + 'static {
    /// The metrics page (Prometheus text).
    fn metrics(&self) -> String;
    /// The status document (JSON).
    fn status(&self) -> String;
    /// Rotates the keys now; returns a JSON result or an error message.
    fn rotate_keys(&self) -> Result<String, String>;
    /// Replaces the topology from a request body; returns a JSON result or an error message.
    fn set_topology(&self, body: &[u8]) -> Result<String, String>;
}

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[error("admin API on {addr}: {message}")]
pub struct AdminError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub message: String,
}

enum Reply {
    Ok(&'static str, String),
    Err(u16, String),
}

fn route(
    handler: &dyn AdminHandler,
    token: Option<&str>,
    method: &tiny_http::Method,
    path: &str,
    auth: Option<&str>,
    body: &mut dyn Read,
) -> Reply {
    use tiny_http::Method::{Get, Post};
    let json = "application/json";
    let authorized = || match (token, auth.and_then(|a| a.strip_prefix("Bearer "))) {
        (Some(t), Some(given)) => bool::from(t.as_bytes().ct_eq(given.trim().as_bytes())),
        _ => false,
    };
    match (method, path) {
        (Get, "/metrics") => Reply::Ok("text/plain; version=0.0.4", handler.metrics()),
        (Get, "/status") => Reply::Ok(json, handler.status()),
        (Post, "/keys/rotate" | "/topology") if token.is_none() => Reply::Err(
            403,
            "mutating endpoints are disabled: no admin token file is configured".into(),
        ),
        (Post, "/keys/rotate" | "/topology") if !authorized() => {
            Reply::Err(401, "missing or wrong bearer token".into())
        }
        (Post, "/keys/rotate") => match handler.rotate_keys() {
            Ok(s) => Reply::Ok(json, s),
            Err(e) => Reply::Err(500, e),
        },
        (Post, "/topology") => {
            let mut buf = Vec::new();
            match body.take(MAX_BODY as u64 + 1).read_to_end(&mut buf) {
                Ok(_) if buf.len() > MAX_BODY => Reply::Err(413, "body too large".into()),
                Ok(_) => match handler.set_topology(&buf) {
                    Ok(s) => Reply::Ok(json, s),
                    Err(e) => Reply::Err(400, e),
                },
                Err(e) => Reply::Err(400, format!("reading body: {e}")),
            }
        }
        (_, "/metrics" | "/status" | "/keys/rotate" | "/topology") => {
            Reply::Err(405, "method not allowed".into())
        }
        _ => Reply::Err(404, "not found".into()),
    }
}

impl AdminServer {
    /// Starts serving on `addr`. `token`: the bearer token for mutating endpoints (None:
    /// disabled).
    pub fn start(
        addr: SocketAddr,
        token: Option<String>,
        handler: Arc<dyn AdminHandler>,
    ) -> Result<AdminServer, AdminError> {
        let server = tiny_http::Server::http(addr).map_err(|e| AdminError {
            addr,
            message: e.to_string(),
        })?;
        let local = server.server_addr().to_ip().ok_or_else(|| AdminError {
            addr,
            message: "not an IP listener".into(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mixplane-admin".into())
            .spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let path = req.url().split('?').next().unwrap_or("").to_string();
                    let auth = req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.as_str().to_string());
                    let method = req.method().clone();
                    let reply = route(
                        handler.as_ref(),
                        token.as_deref(),
                        &method,
                        &path,
                        auth.as_deref(),
                        req.as_reader(),
                    );
                    let (code, ctype, body) = match reply {
                        Reply::Ok(ct, b) => (200, ct, b),
                        Reply::Err(c, m) => (
                            c,
                            "application/json",
                            serde_json::json!({ "error": m }).to_string(),
                        ),
                    };
                    let header = tiny_http::Header::from_bytes("Content-Type", ctype)
                        .expect("static header is valid");
                    let resp = tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header);
                    if let Err(e) = req.respond(resp) {
                        tracing::debug!(error = %e, "admin response failed");
                    }
                }
            })
            .map_err(|e| AdminError {
                addr,
                message: e.to_string(),
            })?;
        Ok(AdminServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads the admin token file: the first line, trimmed; an empty file is an error.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{}: other users can read the admin token; run chmod 600 on it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.len() < 16 {
        return Err(format!(
            "{}: the token must be at least 16 characters",
            path.display()
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        rotated: Mutex<u32>,
        topo: Mutex<Vec<u8>>,
    }

    impl AdminHandler for Fake {
        fn metrics(&self) -> String {
            "# TYPE x counter\nx 1\n".into()
        }
        fn status(&self) -> String {
            "{\"ok\":true}".into()
        }
        fn rotate_keys(&self) -> Result<String, String> {
            *self.rotated.lock().unwrap() += 1;
            Ok("{\"rotated\":true}".into())
        }
        fn set_topology(&self, body: &[u8]) -> Result<String, String> {
            if body.is_empty() {
                return Err("empty".into());
            }
            *self.topo.lock().unwrap() = body.to_vec();
            Ok("{}".into())
        }
    }

    fn request(addr: SocketAddr, raw: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    }

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    }

    fn post(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
        let a = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        request(
            addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{a}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    #[test]
    fn endpoints_and_auth() {
        let fake = Arc::new(Fake::default());
        let token = "0123456789abcdef-secret".to_string();
        let srv = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Some(token.clone()),
            fake.clone(),
        )
        .unwrap();
        let a = srv.local_addr();
        assert_eq!(get(a, "/metrics"), (200, "# TYPE x counter\nx 1\n".into()));
        assert_eq!(get(a, "/status").0, 200);
        assert_eq!(get(a, "/nope").0, 404);
        assert_eq!(get(a, "/keys/rotate").0, 405);
        assert_eq!(post(a, "/keys/rotate", None, "").0, 401);
        assert_eq!(
            post(a, "/keys/rotate", Some("wrong-token-xxxxxxxx"), "").0,
            401
        );
        assert_eq!(*fake.rotated.lock().unwrap(), 0);
        assert_eq!(post(a, "/keys/rotate", Some(&token), "").0, 200);
        assert_eq!(*fake.rotated.lock().unwrap(), 1);
        assert_eq!(post(a, "/topology", Some(&token), "").0, 400);
        assert_eq!(post(a, "/topology", Some(&token), "{\"a\":1}").0, 200);
        assert_eq!(&*fake.topo.lock().unwrap(), b"{\"a\":1}");
        // garbage on the socket does not stop the server
        let _ = request(a, "\x00\x01garbage\r\n\r\n");
        assert_eq!(get(a, "/status").0, 200);
        srv.stop();
    }

    #[test]
    fn without_a_token_mutations_are_disabled() {
        let fake = Arc::new(Fake::default());
        let srv = AdminServer::start("127.0.0.1:0".parse().unwrap(), None, fake.clone()).unwrap();
        assert_eq!(
            post(
                srv.local_addr(),
                "/keys/rotate",
                Some("anything-at-all-123"),
                ""
            )
            .0,
            403
        );
        assert_eq!(*fake.rotated.lock().unwrap(), 0);
        srv.stop();
    }

    #[test]
    fn token_files_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("mixplane-token-{}", std::process::id()));
        std::fs::write(&d, "short\n").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_token(&d).is_err());
        std::fs::write(&d, "a-long-enough-admin-token\nignored").unwrap();
        assert_eq!(read_token(&d).unwrap(), "a-long-enough-admin-token");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_token(&d).is_err());
        let _ = std::fs::remove_file(&d);
    }
}
