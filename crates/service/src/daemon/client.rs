//! The control API from the other side, for `atrest ctl`: one HTTP/1.1 request per
//! connection over the Unix socket (`Connection: close`), the answer parsed with
//! `httparse`, the body JSON.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::error::ServiceError;

/// Longest answer read (a status of many volumes is a few KiB).
const MAX_ANSWER: u64 = 8 << 20;

/// Sends `method path` with `body` to the API at `socket`; the status code and the JSON.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ServiceError> {
    let io = |what, error| ServiceError::Io {
        what,
        path: socket.to_owned(),
        error,
    };
    let mut s = UnixStream::connect(socket).map_err(|e| {
        io("connecting to the atrest daemon's API (is `atrest serve` running, and are you root?) at", e)
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| io("API socket", e))?;
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: atrest\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(&body))
        .map_err(|e| io("writing to the API at", e))?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(|e| io("reading the API's answer from", e))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let at = match r.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(ServiceError::Refused("the API's answer is not HTTP".into())),
    };
    let code = r.code.unwrap_or(0);
    let json = serde_json::from_slice(&answer[at..])
        .map_err(|e| ServiceError::Refused(format!("the API's answer is not JSON: {e}")))?;
    Ok((code, json))
}
