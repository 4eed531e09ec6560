//! The control API from the other side, for `atrest ctl`: one HTTP/1.1 request per
//! connection over the Unix socket (`Connection: close`), the answer parsed with
//! `httparse`, the body JSON.
//!
//! Why a small blocking client and not hyper's: `atrest ctl` makes one request at a time
//! and waits for it, from plain threads (and so do the tests), and the server is ours and
//! answers with a `Content-Length`. A tokio runtime and hyper's client machinery for that
//! would be more code to trust, not less. What hyper would give for free is bounded here
//! by hand: the connection, every read and the whole exchange have deadlines, and the
//! answer has a size limit, so a stuck or hostile peer on the socket cannot hang `ctl` or
//! make it allocate without end.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest answer read (a status of many volumes is a few KiB).
pub const MAX_ANSWER: usize = 8 << 20;
/// Time to get a connection (a server whose queue of unaccepted connections is full
/// keeps a connecting client waiting).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence from the server (a long poll waits up to 30 s before it answers; a
/// Save and Test as long as its KMIP servers take).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest exchange, however the answer trickles in.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed call to the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No connection.
    #[error("connecting to the atrest daemon's API at {} (is `atrest serve` running, and are you root?): {error}", socket.display())]
    Connect {
        /// The API socket.
        socket: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The connection broke.
    #[error("{doing} the API at {}: {error}", socket.display())]
    Io {
        /// Writing the request or reading the answer.
        doing: &'static str,
        /// The API socket.
        socket: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The daemon did not answer in time.
    #[error("the atrest daemon's API at {} did not answer within {after:?}", socket.display())]
    TimedOut {
        /// The API socket.
        socket: PathBuf,
        /// The deadline that passed.
        after: Duration,
    },
    /// The answer is larger than [`MAX_ANSWER`].
    #[error("the API's answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    /// The answer is not an HTTP response this client reads.
    #[error("the API's answer is not HTTP: {0}")]
    NotHttp(String),
    /// The answer's body is not JSON.
    #[error("the API's answer is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// Sends `method path` with `body` to the API at `socket`; the status code and the JSON.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), CallError> {
    let started = Instant::now();
    let timed_out = |after| CallError::TimedOut {
        socket: socket.to_owned(),
        after,
    };
    let io = |doing, error: std::io::Error| match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(IDLE_TIMEOUT),
        _ => CallError::Io {
            doing,
            socket: socket.to_owned(),
            error,
        },
    };
    let mut s = connect(socket).map_err(|error| match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(CONNECT_TIMEOUT),
        _ => CallError::Connect {
            socket: socket.to_owned(),
            error,
        },
    })?;
    s.set_read_timeout(Some(IDLE_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IDLE_TIMEOUT)))
        .map_err(|e| io("setting up", e))?;
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: atrest\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // One write: the server reads a request sent whole as it connects before any later
    // connection can displace this one (see the API's connection policy).
    s.write_all(&[request.as_bytes(), &body].concat())
        .map_err(|e| io("writing to", e))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 << 10];
    // Until the head is in, then until the body's length is (or the server closes).
    let mut head: Option<Head> = None;
    loop {
        if let Some(Head {
            at, len: Some(len), ..
        }) = head
        {
            if answer.len() >= at + len {
                answer.truncate(at + len);
                break;
            }
        }
        let left = CALL_TIMEOUT.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(timed_out(CALL_TIMEOUT));
        }
        s.set_read_timeout(Some(left.min(IDLE_TIMEOUT)))
            .map_err(|e| io("reading from", e))?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("reading from", e)),
        };
        if n == 0 {
            break;
        }
        if answer.len() + n > MAX_ANSWER {
            return Err(CallError::TooLarge);
        }
        answer.extend_from_slice(&buf[..n]);
        if head.is_none() {
            head = head_of(&answer)?;
        }
    }
    let Some(Head { code, at, len }) = head else {
        return Err(CallError::NotHttp("it ends within its head".into()));
    };
    if len.is_some_and(|l| answer.len() < at + l) {
        return Err(CallError::NotHttp(
            "it ends before its Content-Length".into(),
        ));
    }
    Ok((code, serde_json::from_slice(&answer[at..])?))
}

/// A connection to `socket` within [`CONNECT_TIMEOUT`]. On Linux, a blocking connect to a
/// Unix socket whose queue is full waits for as long as the socket's send timeout, which
/// std offers no way to set before connecting; rustix does.
fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    use rustix::net::{sockopt, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(CONNECT_TIMEOUT))?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(socket)?)?;
    Ok(UnixStream::from(fd))
}

/// What the head of an answer says.
#[derive(Clone, Copy)]
struct Head {
    /// The status code.
    code: u16,
    /// Where the body starts.
    at: usize,
    /// The body's declared length.
    len: Option<usize>,
}

/// The head of `answer`, once it is complete.
fn head_of(answer: &[u8]) -> Result<Option<Head>, CallError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let at = match r.parse(answer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(CallError::NotHttp(e.to_string())),
    };
    let mut len = None;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(CallError::NotHttp(
                "a chunked answer (this client reads a Content-Length or the connection's end)"
                    .into(),
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let l = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| CallError::NotHttp("a Content-Length that is no number".into()))?;
            if l > MAX_ANSWER {
                return Err(CallError::TooLarge);
            }
            len = Some(l);
        }
    }
    let code = r
        .code
        .ok_or_else(|| CallError::NotHttp("no status code".into()))?;
    Ok(Some(Head { code, at, len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A server on a fresh socket that reads the request, then does `then` with the
    /// stream; the socket's path.
    fn server(
        then: impl FnOnce(UnixStream) + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b);
            then(s);
        });
        (dir, path, t)
    }

    #[test]
    fn reads_an_answer_by_its_length_without_waiting_for_the_close() {
        let (_d, path, t) = server(|mut s| {
            s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 16\r\n\r\n{\"accepted\":\"x\"}")
                .unwrap();
            // Held open: the client must not wait for the end of the connection.
            std::thread::sleep(Duration::from_secs(3));
        });
        let started = Instant::now();
        let (code, v) = call(&path, "POST", "/v1/volumes/x/lock", None).unwrap();
        assert_eq!((code, v["accepted"].as_str()), (202, Some("x")));
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn refuses_an_answer_that_says_it_is_too_large() {
        let (_d, path, t) = server(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n{");
        });
        assert!(matches!(
            call(&path, "GET", "/v1/status", None),
            Err(CallError::TooLarge)
        ));
        t.join().unwrap();
    }

    #[test]
    fn refuses_an_endless_answer_at_the_limit() {
        let (_d, path, t) = server(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..(MAX_ANSWER >> 20) + 2 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        assert!(matches!(
            call(&path, "GET", "/v1/status", None),
            Err(CallError::TooLarge)
        ));
        t.join().unwrap();
    }

    #[test]
    fn says_what_is_wrong_with_an_answer_that_is_not_http() {
        let (_d, path, t) = server(|mut s| {
            let _ = s.write_all(b"\x00\x01 hello\r\n\r\n");
        });
        assert!(matches!(
            call(&path, "GET", "/v1/status", None),
            Err(CallError::NotHttp(_))
        ));
        t.join().unwrap();
    }

    #[test]
    fn no_daemon_is_a_connect_error_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let e = call(&path, "GET", "/v1/status", None).unwrap_err();
        assert!(matches!(e, CallError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("none.sock"), "{e}");
    }
}
