//! systemd's readiness protocol (`sd_notify`): a datagram to `$NOTIFY_SOCKET` saying
//! `READY=1` once every volume is unlocked or has its reason, `STATUS=...` as things
//! change, `STOPPING=1` at the end. Without the variable (not started by systemd) it does
//! nothing. Seven lines of protocol: no crate needed.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=value` lines) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abs) => SocketAddr::from_abstract_name(abs.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) else {
        return;
    };
    if let Err(e) = sock.send_to_addr(state.as_bytes(), &addr) {
        log::warn!("sd_notify to {path}: {e}");
    }
}
