//! The admin API: a small HTTP/1.1 server on a local address.
//!
//! * `GET /metrics`: Prometheus text.
//! * `GET /status`: JSON (keys and rotation ids, topology version, workers).
//! * `POST /topology`: replace the topology with the JSON body.
//! * `POST /keys/rotate`: rotate the Sphinx keys now.
//!
//! Mutating endpoints need `Authorization: Bearer <token>` (the scheme in any case), the token
//! read from a file at start-up (compared in constant time); without a token file they answer
//! 403. Bodies are capped at [`MAX_BODY`], request heads at [`MAX_HEAD`].
//!
//! A slow or stalled client cannot hold up the others: every connection is served on its own
//! thread, at most [`Limits::max_connections`] at once (one more is answered 503 at once), and a
//! request must arrive whole, and its reply be taken, within [`Limits::io_timeout`], or the
//! connection is closed. One request per connection (`Connection: close`). The server never
//! touches the dataplane's hot path: it calls the [`AdminHandler`] the binary provides, from
//! several threads at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::http_server::{HttpServer, Reply, Request, StartError};

/// Largest request body accepted.
pub const MAX_BODY: usize = 4 << 20;
/// Largest request line plus headers accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// How much the server takes on at once, and how long it waits for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Default 16.
    pub max_connections: usize,
    /// Time a client has to send its whole request, and again to take the reply. Default 5 s.
    pub io_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            io_timeout: Duration::from_secs(5),
        }
    }
}

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
#[derive(Debug)]
pub struct AdminServer {
    inner: HttpServer,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The listening socket could not be set up.
    #[error("admin API on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server thread could not be started.
    #[error("admin API on {addr}: starting its thread: {source}")]
    Thread {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Errors reading the admin token file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error("{path}: other users can read the admin token; run chmod 600 on it")]
    Insecure {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The token is shorter than [`MIN_TOKEN_LEN`].
    #[error("{path}: the token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// The shortest admin token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Whether `auth` (an `Authorization` header value) carries `token` as a bearer token. The
/// scheme is matched in any case (RFC 9110); the token in constant time.
fn bearer_matches(token: &str, auth: Option<&str>) -> bool {
    let Some((scheme, given)) = auth.map(str::trim).and_then(|a| a.split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(token.as_bytes().ct_eq(given.trim().as_bytes()))
}

fn route(handler: &dyn AdminHandler, token: Option<&str>, req: &Request) -> Reply {
    let json = "application/json";
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/metrics") => Reply::Ok("text/plain; version=0.0.4", handler.metrics()),
        ("GET", "/status") => Reply::Ok(json, handler.status()),
        ("POST", "/keys/rotate" | "/topology") if token.is_none() => Reply::Err(
            403,
            "mutating endpoints are disabled: no admin token file is configured".into(),
        ),
        ("POST", "/keys/rotate" | "/topology")
            if !token.is_some_and(|t| bearer_matches(t, req.auth.as_deref())) =>
        {
            Reply::Err(401, "missing or wrong bearer token".into())
        }
        ("POST", "/keys/rotate") => match handler.rotate_keys() {
            Ok(s) => Reply::Ok(json, s),
            Err(e) => Reply::Err(500, e),
        },
        ("POST", "/topology") => match handler.set_topology(&req.body) {
            Ok(s) => Reply::Ok(json, s),
            Err(e) => Reply::Err(400, e),
        },
        (_, "/metrics" | "/status" | "/keys/rotate" | "/topology") => {
            Reply::Err(405, "method not allowed".into())
        }
        _ => Reply::Err(404, "not found".into()),
    }
}

impl AdminServer {
    /// Starts serving on `addr` with the default [`Limits`]. `token`: the bearer token for
    /// mutating endpoints (None: disabled).
    pub fn start(
        addr: SocketAddr,
        token: Option<String>,
        handler: Arc<dyn AdminHandler>,
    ) -> Result<AdminServer, AdminError> {
        Self::start_with(addr, token, handler, Limits::default())
    }

    /// Starts serving on `addr` with the given limits.
    pub fn start_with(
        addr: SocketAddr,
        token: Option<String>,
        handler: Arc<dyn AdminHandler>,
        limits: Limits,
    ) -> Result<AdminServer, AdminError> {
        let route = Box::new(move |req: &Request| route(handler.as_ref(), token.as_deref(), req));
        let inner = HttpServer::start(addr, "mixplane-admin", limits, MAX_BODY, route).map_err(
            |e| match e {
                StartError::Bind(source) => AdminError::Bind { addr, source },
                StartError::Thread(source) => AdminError::Thread { addr, source },
            },
        )?;
        Ok(AdminServer { inner })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Stops accepting and waits for the accept thread (connections being served finish on
    /// their own threads, within the timeouts).
    pub fn stop(self) {
        self.inner.stop();
    }
}

/// Reads the admin token file: the first line, trimmed; a file other users can read, or a
/// token shorter than [`MIN_TOKEN_LEN`], is an error.
pub fn read_token(path: &std::path::Path) -> Result<String, TokenError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(TokenError::Insecure {
            path: path.to_path_buf(),
        });
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort {
            path: path.to_path_buf(),
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
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
        assert!(matches!(read_token(&d), Err(TokenError::TooShort { .. })));
        std::fs::write(&d, "a-long-enough-admin-token\nignored").unwrap();
        assert_eq!(read_token(&d).unwrap(), "a-long-enough-admin-token");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_token(&d), Err(TokenError::Insecure { .. })));
        let _ = std::fs::remove_file(&d);
    }

    #[test]
    fn the_bearer_scheme_matches_in_any_case() {
        let t = "0123456789abcdef-secret";
        for auth in ["Bearer ", "bearer ", "BEARER ", "  bEaReR   "] {
            assert!(bearer_matches(t, Some(&format!("{auth}{t}"))), "{auth}");
        }
        assert!(!bearer_matches(t, Some(&format!("Basic {t}"))));
        assert!(!bearer_matches(t, Some(t)));
        assert!(!bearer_matches(t, Some("Bearer 0123456789abcdef-secreT")));
        assert!(!bearer_matches(t, None));
        // and through the server
        let fake = Arc::new(Fake::default());
        let srv = AdminServer::start("127.0.0.1:0".parse().unwrap(), Some(t.into()), fake.clone())
            .unwrap();
        let raw = format!(
            "POST /keys/rotate HTTP/1.1\r\nHost: x\r\nauthorization: bearer {t}\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(request(srv.local_addr(), &raw).0, 200);
        assert_eq!(*fake.rotated.lock().unwrap(), 1);
        srv.stop();
    }

    /// Times a GET of /metrics.
    fn timed_metrics(a: SocketAddr) -> (u16, Duration) {
        let t = std::time::Instant::now();
        let (code, _) = get(a, "/metrics");
        (code, t.elapsed())
    }

    #[test]
    fn stalled_clients_do_not_block_metrics() {
        let fake = Arc::new(Fake::default());
        let token = "0123456789abcdef-secret";
        let limits = Limits {
            max_connections: 8,
            io_timeout: Duration::from_millis(1500),
        };
        let srv = AdminServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            Some(token.into()),
            fake.clone(),
            limits,
        )
        .unwrap();
        let a = srv.local_addr();
        // a body promised and never sent, half a request head, and a silent connection
        let mut stalled = Vec::new();
        for raw in [
            format!(
                "POST /topology HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n{{\"a\""
            ),
            "GET /metrics HTTP/1.1\r\nHost: x\r\n".to_string(),
            String::new(),
        ] {
            let mut s = std::net::TcpStream::connect(a).unwrap();
            s.write_all(raw.as_bytes()).unwrap();
            stalled.push(s);
        }
        std::thread::sleep(Duration::from_millis(100));
        let (code, took) = timed_metrics(a);
        assert_eq!(code, 200);
        assert!(took < Duration::from_millis(1000), "metrics took {took:?}");
        // the stalled ones are closed after the timeout, with 408, and nothing was applied
        for mut s in stalled {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        }
        assert!(fake.topo.lock().unwrap().is_empty());
        srv.stop();
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_at_once() {
        let fake = Arc::new(Fake::default());
        let limits = Limits {
            max_connections: 2,
            io_timeout: Duration::from_secs(3),
        };
        let srv =
            AdminServer::start_with("127.0.0.1:0".parse().unwrap(), None, fake, limits).unwrap();
        let a = srv.local_addr();
        let _held: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(a).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        let (code, took) = timed_metrics(a);
        assert_eq!(code, 503);
        assert!(took < Duration::from_millis(1000), "{took:?}");
        drop(_held);
        // once they are gone (closed by the peer), metrics are served again
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while timed_metrics(a).0 != 200 {
            assert!(std::time::Instant::now() < end, "never served again");
            std::thread::sleep(Duration::from_millis(50));
        }
        srv.stop();
    }

    #[test]
    fn oversized_and_malformed_requests_are_answered() {
        let fake = Arc::new(Fake::default());
        let token = "0123456789abcdef-secret";
        let srv =
            AdminServer::start("127.0.0.1:0".parse().unwrap(), Some(token.into()), fake).unwrap();
        let a = srv.local_addr();
        let big = format!(
            "POST /topology HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(request(a, &big).0, 413);
        let chunked = "POST /topology HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(request(a, chunked).0, 411);
        let huge_head = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(request(a, &huge_head).0, 431);
        assert_eq!(request(a, "GET\r\n\r\n").0, 400);
        srv.stop();
    }
}
