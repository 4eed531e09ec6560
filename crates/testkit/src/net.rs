//! A TCP connection seen from the client's side: whether, and when, the server closed it
//! (end of file or a reset; anything the server sends first is read and dropped).

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads until the server closes `s` or `within` passes; returns when it closed.
pub fn wait_closed(s: &mut TcpStream, within: Duration) -> Option<Instant> {
    let until = Instant::now() + within;
    let mut b = [0u8; 4096];
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut b) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
}

/// Whether the server has closed `s`, from what has already arrived; never waits (and
/// leaves `s` non-blocking).
pub fn closed_now(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 4096];
    // Bounded: the peers watched are sent little or nothing (a greeting at most).
    for _ in 0..16 {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}
