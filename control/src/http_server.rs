//! The small HTTP/1.1 server under the admin API and the nym-node API: one request per
//! connection (`Connection: close`), a thread per connection, bounded in every dimension.
//!
//! A request head is capped at [`MAX_HEAD`] bytes and a body at the server's `max_body`; a
//! client must send its whole request, and take the reply, within [`Limits::io_timeout`] or the
//! connection is closed (408). At most [`Limits::max_connections`] are served at once; one more
//! is answered 503 at once. Chunked bodies are refused (411). What a request means is up to the
//! [`Router`] each server is started with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admin::{Limits, MAX_HEAD};

/// A parsed request.
pub(crate) struct Request {
    /// `GET`, `POST`, ...
    pub(crate) method: String,
    /// The target without its query string.
    pub(crate) path: String,
    /// The `Authorization` header, if any.
    pub(crate) auth: Option<String>,
    /// The body (`Content-Length` bytes).
    pub(crate) body: Vec<u8>,
}

/// An answer: 200 with a content type and body, or an error code with a message (sent as
/// `{"error": message}`).
pub(crate) enum Reply {
    Ok(&'static str, String),
    Err(u16, String),
}

/// What a server does with a request; called from several threads at once.
pub(crate) type Router = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A running server.
#[derive(Debug)]
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why a server did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The listening socket could not be set up.
    Bind(std::io::Error),
    /// The accept thread could not be started.
    Thread(std::io::Error),
}

/// What every connection thread shares.
struct Shared {
    route: Router,
    limits: Limits,
    max_body: usize,
    /// Names the server in logs.
    name: &'static str,
    active: AtomicUsize,
}

/// Where a request's bytes come from: a socket with a read timeout, or (for property tests
/// and the fuzz target) a byte slice, which never times out.
pub(crate) trait Source: Read {
    /// Makes the next read give up after `left`.
    fn set_timeout(&mut self, left: Duration) -> std::io::Result<()>;
}

impl Source for TcpStream {
    fn set_timeout(&mut self, left: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(left))
    }
}

impl Source for &[u8] {
    fn set_timeout(&mut self, _left: Duration) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads from `s` into `buf` until `done(buf)` says how many bytes make the message, or the
/// deadline passes, the peer closes, or `buf` would pass `cap`.
fn read_until<S: Source>(
    s: &mut S,
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
        if left.is_zero() || s.set_timeout(left).is_err() {
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

/// Reads one request within `timeout`, its body at most `max_body` bytes; an error is the
/// status code to answer with.
fn read_request<S: Source>(
    s: &mut S,
    timeout: Duration,
    max_body: usize,
) -> Result<Request, (u16, &'static str)> {
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
    if len > max_body {
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

/// Reads one request from `bytes` as the servers read it from a socket (a connection that
/// closes after these bytes): the method, the path without its query, and the body. An error
/// is the status code the server would answer with. For property tests and the fuzz target
/// (`mixplane_control::fuzzing`).
pub fn parse_request(
    bytes: &[u8],
    max_body: usize,
) -> Result<(String, String, Vec<u8>), (u16, &'static str)> {
    let mut src = bytes;
    let r = read_request(&mut src, Duration::from_secs(1), max_body)?;
    Ok((r.method, r.path, r.body))
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
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Writes a whole response and closes the write side; errors (a client gone or too slow to
/// take it within the write timeout) are only logged.
fn respond(s: &mut TcpStream, reply: Reply, name: &str) {
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
        tracing::debug!(server = name, error = %e, "HTTP response not delivered");
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// Serves one connection: one request, one reply, within the timeouts.
fn serve(mut s: TcpStream, shared: &Shared) {
    let t = shared.limits.io_timeout;
    if s.set_nonblocking(false).is_err() || s.set_write_timeout(Some(t)).is_err() {
        return;
    }
    match read_request(&mut s, t, shared.max_body) {
        Ok(req) => respond(&mut s, (shared.route)(&req), shared.name),
        Err((code, why)) => {
            respond(&mut s, Reply::Err(code, why.into()), shared.name);
            linger(&mut s, shared.max_body);
        }
    }
}

/// After an early answer, reads and discards what the client still sends for a moment (at
/// most `cap` bytes), so that closing with unread data (which sends a reset) does not destroy
/// the answer in flight.
fn linger(s: &mut TcpStream, cap: usize) {
    let end = Instant::now() + Duration::from_millis(200);
    let mut sink = [0u8; 4096];
    let mut left = cap.max(MAX_HEAD);
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
                tracing::debug!(server = shared.name, error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if shared.active.fetch_add(1, Ordering::AcqRel) >= shared.limits.max_connections {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            let _ = s.set_nonblocking(false);
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            respond(
                &mut s,
                Reply::Err(503, "too many connections".into()),
                shared.name,
            );
            continue;
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-conn", shared.name))
            .spawn(move || {
                serve(s, &sh);
                sh.active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(server = shared.name, error = %e, "connection thread not started");
        }
    }
}

impl HttpServer {
    /// Starts serving on `addr`: `name` names the threads and log lines, `max_body` caps
    /// request bodies, `route` answers each request.
    pub(crate) fn start(
        addr: SocketAddr,
        name: &'static str,
        limits: Limits,
        max_body: usize,
        route: Router,
    ) -> Result<HttpServer, StartError> {
        let listener = TcpListener::bind(addr).map_err(StartError::Bind)?;
        listener.set_nonblocking(true).map_err(StartError::Bind)?;
        let local = listener.local_addr().map_err(StartError::Bind)?;
        let shared = Arc::new(Shared {
            route,
            limits,
            max_body,
            name,
            active: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || accept_loop(listener, shared, s2))
            .map_err(StartError::Thread)?;
        Ok(HttpServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread (connections being served finish on
    /// their own threads, within the timeouts).
    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod parse_tests {
    use super::parse_request;
    use crate::admin::MAX_HEAD;
    use proptest::prelude::*;

    fn request(method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
        let mut r = format!("{method} {target} HTTP/1.1\r\n");
        for (n, v) in headers {
            r.push_str(&format!("{n}: {v}\r\n"));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn refusals_carry_their_status() {
        let len = |n: usize| vec![("Content-Length", n.to_string())];
        assert_eq!(
            parse_request(&request("POST", "/", &len(9), b"123"), 64)
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            parse_request(&request("POST", "/", &len(65), b""), 64)
                .unwrap_err()
                .0,
            413
        );
        let chunked = vec![("Transfer-Encoding", "chunked".to_string())];
        assert_eq!(
            parse_request(&request("POST", "/", &chunked, b""), 64)
                .unwrap_err()
                .0,
            411
        );
        let long = vec![("X-Pad", "a".repeat(MAX_HEAD))];
        assert_eq!(
            parse_request(&request("GET", "/", &long, b""), 64)
                .unwrap_err()
                .0,
            431
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 64)
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n", 64).unwrap_err().0, 400);
    }

    proptest! {
        /// A well-formed request comes back as it was sent: method, path without the query,
        /// exactly Content-Length bytes of body (bytes after it are the next request's).
        #[test]
        fn a_request_round_trips(
            method in "[A-Z]{1,7}",
            path in "/[a-z0-9/._-]{0,40}",
            query in proptest::option::of("[a-z0-9=&]{0,20}"),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            trailing in proptest::collection::vec(any::<u8>(), 0..20),
            pad in "[ -~]{0,60}",
        ) {
            let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
            let headers = vec![("Content-Length", body.len().to_string()), ("X-Pad", pad)];
            let mut bytes = request(&method, &target, &headers, &body);
            bytes.extend_from_slice(&trailing);
            let (m, p, b) = parse_request(&bytes, 300).unwrap();
            prop_assert_eq!(m, method);
            prop_assert_eq!(p, path);
            prop_assert_eq!(b, body);
        }

        /// Arbitrary bytes never panic; what is accepted respects the body cap and has no query.
        #[test]
        fn arbitrary_bytes_are_answered(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok((_, path, body)) = parse_request(&bytes, 64) {
                prop_assert!(body.len() <= 64);
                prop_assert!(!path.contains('?'));
            }
        }
    }
}
