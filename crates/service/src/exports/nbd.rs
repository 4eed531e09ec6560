//! An unlocked volume over NBD (the `nbd` crate): a Unix socket by default, or loopback
//! TCP; any other address is refused, as this road has no TLS. Reads decrypt, writes
//! encrypt, FLUSH and FUA are an fdatasync of the device, WRITE_ZEROES writes encrypted
//! zeros (a hole would read back as garbage), TRIM punches holes only when the operator
//! asked for it (`--discard`), since holes show which blocks are free.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use nbd::{BlockExport, BlockSize, ExportConfig, ExportHandle, ListenAddr, Server, ServerOptions};
use volume::volume::{Unlocked, VolumeError};

use super::ExportError;
use crate::error::ServiceError;

/// The volume as an NBD export.
pub struct VolumeExport {
    vol: Arc<Unlocked>,
    discard: bool,
}

impl VolumeExport {
    /// `vol`, trimming only if `discard`.
    pub fn new(vol: Arc<Unlocked>, discard: bool) -> Self {
        Self { vol, discard }
    }
}

fn io_error(e: VolumeError) -> io::Error {
    match e {
        VolumeError::OutOfRange { .. } => {
            io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
        }
        VolumeError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl BlockExport for VolumeExport {
    fn size(&self) -> u64 {
        self.vol.size()
    }

    fn block_size(&self) -> BlockSize {
        BlockSize::for_sector(self.vol.sector_size())
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.vol.read_at(buf, offset).map_err(io_error)
    }

    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> io::Result<()> {
        self.vol.write_at(buf, offset).map_err(io_error)?;
        if fua {
            self.vol.flush().map_err(io_error)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.vol.flush().map_err(io_error)
    }

    fn can_trim(&self) -> bool {
        self.discard
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.vol.discard(offset, len).map_err(io_error)
    }
}

/// Parses `unix:PATH` or a loopback `IP:PORT`; anything else is refused with the reason.
pub fn parse_address(s: &str) -> Result<ListenAddr, ServiceError> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err(ExportError::NbdNoSocketPath.into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(p)));
    }
    let a: SocketAddr = s
        .parse()
        .map_err(|_| ExportError::NbdAddress(s.to_owned()))?;
    if !a.ip().is_loopback() {
        return Err(ExportError::NbdNotLoopback(a).into());
    }
    Ok(ListenAddr::Tcp(a))
}

/// A running NBD server for one volume.
pub struct NbdServer {
    server: Arc<Server>,
    export: ExportHandle,
    thread: Option<JoinHandle<()>>,
    vol: Arc<Unlocked>,
    name: String,
}

impl NbdServer {
    /// Where clients connect, as an NBD URI (`nbd+unix:///NAME?socket=PATH`,
    /// `nbd://127.0.0.1:PORT/NAME`).
    pub fn uri(&self) -> String {
        match self.server.local_addrs().first() {
            Some(ListenAddr::Unix(p)) => {
                format!("nbd+unix:///{}?socket={}", self.name, p.display())
            }
            Some(ListenAddr::Tcp(a)) => format!("nbd://{a}/{}", self.name),
            None => String::new(),
        }
    }

    /// The export, for closing it (the daemon locks a volume so).
    pub fn export(&self) -> &ExportHandle {
        &self.export
    }

    /// Stops serving: connections end after their requests in flight, then the volume is
    /// flushed.
    pub fn stop(mut self) -> Result<(), ServiceError> {
        self.halt();
        Ok(self.vol.flush()?)
    }

    fn halt(&mut self) {
        self.export.close();
        self.server.stop_handle().stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.halt();
        let _ = self.vol.flush();
    }
}

/// An NBD server as a [`super::RunningExport`] (stopping consumes the server).
pub struct Running(pub Option<NbdServer>);

impl super::RunningExport for Running {
    fn kind(&self) -> &'static str {
        "nbd"
    }

    fn at(&self) -> String {
        self.0.as_ref().map(NbdServer::uri).unwrap_or_default()
    }

    fn close(&mut self) -> Result<(), ServiceError> {
        match self.0.take() {
            Some(s) => s.stop(),
            None => Ok(()),
        }
    }
}

/// Serves `vol` as export `name` (also the default export) at `addr`.
pub fn serve(
    vol: Arc<Unlocked>,
    addr: &str,
    name: &str,
    discard: bool,
) -> Result<NbdServer, ServiceError> {
    let listen = parse_address(addr)?;
    if let ListenAddr::Unix(p) = &listen {
        // Made in a folder nobody else can write: no one swaps the socket for theirs.
        crate::runtime_path::check_socket(p, "NBD socket")?;
    }
    if let ListenAddr::Tcp(a) = &listen {
        // A Unix socket is 0600; a TCP port has no owner.
        log::warn!(
            "{name}: NBD on {a} lets every local account read and write the plaintext; \
             unix:PATH limits it to root"
        );
    }
    let server = Server::bind(&[listen], ServerOptions::default())
        .map_err(|e| ExportError::NbdListen(e.to_string()))?;
    let export = server
        .add_export(
            ExportConfig::new(name)
                .description("atrest volume")
                .default_export(),
            Arc::new(VolumeExport::new(vol.clone(), discard)),
        )
        .map_err(|e| ExportError::NbdExport {
            name: name.to_owned(),
            why: e.to_string(),
        })?;
    let server = Arc::new(server);
    let running = server.clone();
    let thread = std::thread::Builder::new()
        .name(format!("nbd-{name}"))
        .spawn(move || {
            if let Err(e) = running.run() {
                log::error!("NBD server: {e}");
            }
        })
        .map_err(|error| ServiceError::Io {
            what: "starting the NBD server thread for",
            path: name.into(),
            error,
        })?;
    Ok(NbdServer {
        server,
        export,
        thread: Some(thread),
        vol,
        name: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unix_sockets_and_loopback_are_accepted() {
        assert!(matches!(
            parse_address("unix:/run/x.sock"),
            Ok(ListenAddr::Unix(_))
        ));
        assert!(matches!(
            parse_address("127.0.0.1:10809"),
            Ok(ListenAddr::Tcp(_))
        ));
        assert!(matches!(
            parse_address("[::1]:10809"),
            Ok(ListenAddr::Tcp(_))
        ));
        for bad in [
            "0.0.0.0:10809",
            "10.1.2.3:10809",
            "[::]:10809",
            "unix:",
            "example.com:1",
        ] {
            let e = parse_address(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.is_empty(), "{bad} accepted");
        }
        assert!(parse_address("192.168.1.5:10809")
            .unwrap_err()
            .to_string()
            .contains("not a loopback"));
    }
}
