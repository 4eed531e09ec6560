//! Where clients connect: a Unix socket (the default road) or TCP on loopback only.
//!
//! There is no TLS on this road, so the socket itself is the access control: a Unix socket
//! is created with mode 0600 (only its owner, and root, can connect) and TCP is refused on
//! any address but loopback. A Unix socket is bound inside a fresh 0700 directory, given
//! its mode there, and only then renamed onto its path, so there is no moment when it is
//! reachable with the umask's permissions. A socket file left by a dead server is
//! replaced; one that a live server still accepts on is not, nor is any other kind of file.

use std::fs::{self, DirBuilder};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::ListenError;

/// An address to listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A Unix socket at this path (created with mode 0600).
    Unix(PathBuf),
    /// TCP on a loopback address (`127.0.0.0/8` or `::1`); port 0 picks a free port.
    Tcp(SocketAddr),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// A bound Unix socket; removes its file when dropped, if the file is still ours.
pub(crate) struct UnixSocketFile {
    listener: UnixListener,
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        // Another server may have replaced the file meanwhile: remove only our own.
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.dev_ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// A bound listener, non-blocking (the accept loop polls it).
pub(crate) enum Listener {
    Unix(UnixSocketFile),
    Tcp(TcpListener),
}

impl Listener {
    pub(crate) fn bind(addr: &ListenAddr) -> Result<Listener, ListenError> {
        match addr {
            ListenAddr::Unix(path) => bind_unix(path).map(Listener::Unix),
            ListenAddr::Tcp(addr) => bind_tcp(*addr).map(Listener::Tcp),
        }
    }

    /// The address as bound (TCP port 0 resolved).
    pub(crate) fn local_addr(&self) -> Option<ListenAddr> {
        match self {
            Listener::Unix(u) => Some(ListenAddr::Unix(u.path.clone())),
            Listener::Tcp(t) => t.local_addr().ok().map(ListenAddr::Tcp),
        }
    }

    /// Accepts one pending connection; `WouldBlock` when there is none.
    pub(crate) fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Unix(u) => {
                let (s, _) = u.listener.accept()?;
                Ok((Stream::Unix(s), format!("unix:{}", u.path.display())))
            }
            Listener::Tcp(t) => {
                let (s, peer) = t.accept()?;
                Ok((Stream::Tcp(s), format!("tcp:{peer}")))
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(u) => u.listener.as_fd(),
            Listener::Tcp(t) => t.as_fd(),
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    if !addr.ip().to_canonical().is_loopback() {
        return Err(ListenError::NotLoopback(addr));
    }
    let l = TcpListener::bind(addr).map_err(|source| ListenError::Tcp { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| ListenError::Tcp { addr, source })?;
    Ok(l)
}

/// Fails unless `path` is free or holds a socket nobody accepts on.
fn check_stale(path: &Path) -> Result<(), ListenError> {
    let unix_err = |source| ListenError::Unix {
        path: path.to_owned(),
        source,
    };
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(unix_err(e)),
        Ok(m) if !m.file_type().is_socket() => Err(ListenError::NotASocket(path.to_owned())),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(ListenError::SocketInUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("{}: replacing a stale socket", path.display());
                Ok(())
            }
            Err(e) => Err(unix_err(e)),
        },
    }
}

fn bind_unix(path: &Path) -> Result<UnixSocketFile, ListenError> {
    let unix_err = |source| ListenError::Unix {
        path: path.to_owned(),
        source,
    };
    if path.file_name().is_none() {
        return Err(ListenError::BadPath(path.to_owned()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    check_stale(path)?;

    // Short name: socket paths are limited to 107 bytes.
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let tmp = parent.join(format!(
        ".nbd{:x}.{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(unix_err)?;
    let inner = tmp.join("s");
    let bound = (|| {
        let l = UnixListener::bind(&inner)?;
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o600))?;
        fs::rename(&inner, path)?;
        l.set_nonblocking(true)?;
        Ok::<_, io::Error>(l)
    })();
    let _ = fs::remove_file(&inner);
    let _ = fs::remove_dir(&tmp);
    let listener = bound.map_err(unix_err)?;
    let m = fs::symlink_metadata(path).map_err(unix_err)?;
    Ok(UnixSocketFile {
        listener,
        path: path.to_owned(),
        dev_ino: (m.dev(), m.ino()),
    })
}

/// An accepted connection.
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Makes the accepted socket ready to serve: blocking, no Nagle delay for TCP (replies
    /// are single writes that must leave at once), and a bound on how long a reply may
    /// wait for a client that does not read.
    pub(crate) fn prepare(&self, write_timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_nonblocking(false)?;
                s.set_write_timeout(write_timeout)
            }
            Stream::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_write_timeout(write_timeout)
            }
        }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }
}

impl crate::conn::ReadTimeout for Stream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_tcp_refused() {
        for a in ["0.0.0.0:0", "10.0.0.1:10809", "[::]:0", "192.168.1.1:1"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert!(matches!(
                Listener::bind(&ListenAddr::Tcp(addr)),
                Err(ListenError::NotLoopback(_))
            ));
        }
        for a in ["127.0.0.1:0", "[::ffff:127.0.0.1]:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            match Listener::bind(&ListenAddr::Tcp(addr)) {
                Ok(_) => {}
                // Hosts without IPv6 cannot bind the mapped form; the check passed.
                Err(ListenError::Tcp { .. }) if a.starts_with('[') => {}
                Err(e) => panic!("{a}: {e}"),
            }
        }
    }

    #[test]
    fn unix_socket_mode_stale_and_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nbd.sock");
        let l = Listener::bind(&ListenAddr::Unix(path.clone())).unwrap();
        let m = fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // Live: refused.
        assert!(matches!(
            Listener::bind(&ListenAddr::Unix(path.clone())),
            Err(ListenError::SocketInUse(_))
        ));
        drop(l);
        assert!(!path.exists(), "our socket file is removed on drop");
        // Stale: a socket file nobody listens on any more.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l2 = Listener::bind(&ListenAddr::Unix(path.clone())).unwrap();
        let m = fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        drop(l2);
        // Not a socket: never replaced.
        fs::write(&path, b"data").unwrap();
        assert!(matches!(
            Listener::bind(&ListenAddr::Unix(path.clone())),
            Err(ListenError::NotASocket(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"data");
        // No temporary directory left behind.
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}
