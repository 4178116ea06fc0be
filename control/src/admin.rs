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

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

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
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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

enum Reply {
    Ok(&'static str, String),
    Err(u16, String),
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

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

/// Reads from `s` into `buf` until `done(buf)` says how many bytes make the message, or the
/// deadline passes, the peer closes, or `buf` would pass `cap`.
fn read_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Instant,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Result<usize, u16> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(n) = done(buf) {
            return Ok(n);
        }
        if buf.len() >= cap {
            return Err(431);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return Err(408);
        }
        match s.read(&mut chunk[..(cap - buf.len()).min(4096)]) {
            Ok(0) => return Err(400),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(408),
        }
    }
}

/// Reads one request within `timeout`; an error is the status code to answer with.
fn read_request(s: &mut TcpStream, timeout: Duration) -> Result<Request, (u16, &'static str)> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let head_end = read_until(s, &mut buf, MAX_HEAD, deadline, |b| {
        b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
    })
    .map_err(|c| (c, "incomplete or oversized request head"))?;
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| (400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        return Err((400, "bad request line"));
    };
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        auth: None,
        body: Vec::new(),
    };
    let mut len = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err((400, "bad header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = value.parse().map_err(|_| (400, "bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("authorization") {
            req.auth = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((411, "send a Content-Length, not a transfer encoding"));
        }
    }
    if len > MAX_BODY {
        return Err((413, "body too large"));
    }
    let mut body = buf.split_off(head_end);
    read_until(s, &mut body, len, deadline, |b| {
        (b.len() >= len).then_some(len)
    })
    .map_err(|c| (c, "incomplete body"))?;
    body.truncate(len);
    req.body = body;
    Ok(req)
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Writes a whole response and closes the write side; errors (a client gone or too slow to
/// take it within the write timeout) are only logged.
fn respond(s: &mut TcpStream, reply: Reply) {
    let (code, ctype, body) = match reply {
        Reply::Ok(ct, b) => (200, ct, b),
        Reply::Err(c, m) => (
            c,
            "application/json",
            serde_json::json!({ "error": m }).to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(code),
        body.len()
    );
    let sent = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .and_then(|()| s.flush());
    if let Err(e) = sent {
        tracing::debug!(error = %e, "admin response not delivered");
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// What every connection thread shares.
struct Shared {
    handler: Arc<dyn AdminHandler>,
    token: Option<String>,
    limits: Limits,
    active: AtomicUsize,
}

/// Serves one connection: one request, one reply, within the timeouts.
fn serve(mut s: TcpStream, shared: &Shared) {
    let t = shared.limits.io_timeout;
    if s.set_nonblocking(false).is_err() || s.set_write_timeout(Some(t)).is_err() {
        return;
    }
    match read_request(&mut s, t) {
        Ok(req) => respond(
            &mut s,
            route(shared.handler.as_ref(), shared.token.as_deref(), &req),
        ),
        Err((code, why)) => {
            respond(&mut s, Reply::Err(code, why.into()));
            linger(&mut s);
        }
    }
}

/// After an early answer, reads and discards what the client still sends for a moment, so that
/// closing with unread data (which sends a reset) does not destroy the answer in flight.
fn linger(s: &mut TcpStream) {
    let end = Instant::now() + Duration::from_millis(200);
    let mut sink = [0u8; 4096];
    let mut left = MAX_BODY;
    while left > 0 && Instant::now() < end {
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        match s.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Accepts connections until `stop`, each served on its own thread, at most
/// `limits.max_connections` at once.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if shared.active.fetch_add(1, Ordering::AcqRel) >= shared.limits.max_connections {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            let _ = s.set_nonblocking(false);
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            respond(&mut s, Reply::Err(503, "too many admin connections".into()));
            continue;
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("mixplane-admin-conn".into())
            .spawn(move || {
                serve(s, &sh);
                sh.active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "admin connection thread not started");
        }
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
        let bind = |source| AdminError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let shared = Arc::new(Shared {
            handler,
            token,
            limits,
            active: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mixplane-admin".into())
            .spawn(move || accept_loop(listener, shared, s2))
            .map_err(|source| AdminError::Thread { addr, source })?;
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

    /// Stops accepting and waits for the accept thread (connections being served finish on
    /// their own threads, within the timeouts).
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
