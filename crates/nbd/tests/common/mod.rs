//! Shared by the integration tests: an in-process server on a Unix socket in a temporary
//! directory, the real client tools, a raw protocol client for abuse, and exports that
//! block or fail on purpose.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nbd::wire::{
    decode_greeting, Command as Cmd, CommandFlags, ErrorCode, InfoRequest, InfoType, OptionHeader,
    OptionReplyHeader, OptionType, ReplyType, Request, SimpleReply, TransmissionFlags,
    FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES,
};
use nbd::{
    BlockExport, BlockSize, ExportConfig, ExportHandle, ListenAddr, MemExport, Server,
    ServerOptions, StopHandle,
};

/// A server running on its own thread, on a Unix socket in a fresh temporary directory.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub server: Arc<Server>,
    pub stop: StopHandle,
    pub exports: Vec<ExportHandle>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(exports: Vec<(ExportConfig, Arc<dyn BlockExport>)>) -> TestServer {
        Self::start_with(exports, ServerOptions::default(), &[])
    }

    /// `extra` listeners besides the Unix socket (e.g. TCP on 127.0.0.1:0).
    pub fn start_with(
        exports: Vec<(ExportConfig, Arc<dyn BlockExport>)>,
        options: ServerOptions,
        extra: &[ListenAddr],
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sock = dir.path().join("nbd.sock");
        let mut addrs = vec![ListenAddr::Unix(sock.clone())];
        addrs.extend_from_slice(extra);
        let server = Arc::new(Server::bind(&addrs, options).expect("bind"));
        let exports = exports
            .into_iter()
            .map(|(c, e)| server.add_export(c, e).expect("add export"))
            .collect();
        let stop = server.stop_handle();
        let s = server.clone();
        let thread = std::thread::spawn(move || s.run().expect("server run"));
        TestServer {
            dir,
            sock,
            server,
            stop,
            exports,
            thread: Some(thread),
        }
    }

    /// One in-memory export called "mem", the default.
    pub fn mem(size: usize, sector: u32) -> (TestServer, Arc<MemExport>) {
        let e = Arc::new(MemExport::new(size, sector));
        let s = TestServer::start(vec![(ExportConfig::new("mem").default_export(), e.clone())]);
        (s, e)
    }

    /// The URI of the default export.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.sock.display())
    }

    /// The URI of a named export.
    pub fn uri_of(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.sock.display())
    }

    pub fn tcp_port(&self) -> u16 {
        self.server
            .local_addrs()
            .iter()
            .find_map(|a| match a {
                ListenAddr::Tcp(a) => Some(a.port()),
                _ => None,
            })
            .expect("a TCP listener")
    }

    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Stops the server and waits for `run` to return.
    pub fn shutdown(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A real client tool; fails the test (does not skip it) if the tool is not installed.
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: apt-get install fio libnbd-bin qemu-utils (the tests need the real tools)"
    );
    Command::new(name)
}

/// Runs a command, failing the test with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits (polling, at most 20 s) until `cond` holds; fails the test naming `what` if it
/// never does.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write file");
}

/// A raw NBD client for protocol tests: every message built with the crate's own codec.
/// On the server's Unix socket unless made with [`Client::tcp`].
pub struct Client<S = UnixStream> {
    pub s: S,
}

impl Client {
    /// Connects and sends fixed-newstyle, no-zeroes client flags after checking the greeting.
    pub fn new(server: &TestServer) -> Client {
        Client::greeted(server.connect())
    }

    pub fn connect_go(server: &TestServer, name: &str) -> Client {
        let mut c = Client::new(server);
        c.go(name);
        c
    }
}

impl Client<TcpStream> {
    /// The same over the server's loopback TCP listener.
    pub fn tcp(server: &TestServer) -> Client<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", server.tcp_port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client::greeted(s)
    }
}

impl<S: Read + Write> Client<S> {
    fn greeted(mut s: S) -> Client<S> {
        let mut g = [0u8; 18];
        s.read_exact(&mut g).expect("greeting");
        assert_eq!(decode_greeting(&g).unwrap(), 3);
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
        Client { s }
    }

    /// Sends an option and collects its replies up to the final one.
    pub fn option(&mut self, option: OptionType, data: &[u8]) -> Vec<(ReplyType, Vec<u8>)> {
        self.send_option(option, data);
        let mut replies = Vec::new();
        loop {
            let mut h = [0u8; 20];
            self.s.read_exact(&mut h).expect("option reply");
            let h = OptionReplyHeader::decode(&h).expect("option reply magic");
            assert_eq!(h.option, option);
            let mut d = vec![0u8; h.len as usize];
            self.s.read_exact(&mut d).unwrap();
            let last = h.reply == ReplyType::ACK || h.reply.is_error();
            replies.push((h.reply, d));
            if last {
                return replies;
            }
        }
    }

    pub fn send_option(&mut self, option: OptionType, data: &[u8]) {
        let h = OptionHeader {
            option,
            len: data.len() as u32,
        };
        self.s.write_all(&[&h.encode()[..], data].concat()).unwrap();
    }

    /// `NBD_OPT_GO` with a block-size request; returns (size, flags).
    pub fn go(&mut self, name: &str) -> (u64, TransmissionFlags) {
        let data = InfoRequest {
            name,
            requests: vec![InfoType::BLOCK_SIZE],
        }
        .encode();
        let replies = self.option(OptionType::GO, &data);
        let (last, _) = replies.last().unwrap();
        assert_eq!(*last, ReplyType::ACK, "GO {name:?} failed: {replies:?}");
        let export = replies
            .iter()
            .find(|(t, d)| *t == ReplyType::INFO && d[..2] == [0, 0])
            .expect("NBD_INFO_EXPORT");
        let size = u64::from_be_bytes(export.1[2..10].try_into().unwrap());
        let flags = u16::from_be_bytes(export.1[10..12].try_into().unwrap());
        (size, TransmissionFlags(flags))
    }

    pub fn request(&mut self, command: Cmd, flags: u16, cookie: u64, offset: u64, len: u32) {
        let r = Request {
            flags: CommandFlags(flags),
            command,
            cookie,
            offset,
            len,
        };
        self.s.write_all(&r.encode()).unwrap();
    }

    pub fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) {
        let r = Request {
            flags: CommandFlags(0),
            command: Cmd::WRITE,
            cookie,
            offset,
            len: data.len() as u32,
        };
        self.s.write_all(&[&r.encode()[..], data].concat()).unwrap();
    }

    /// Reads one reply; `data_len` bytes follow it if it is a success.
    pub fn reply(&mut self, data_len: usize) -> (SimpleReply, Vec<u8>) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).expect("reply");
        let r = SimpleReply::decode(&h).expect("reply magic");
        let mut d = Vec::new();
        if r.error == ErrorCode::OK && data_len > 0 {
            d = vec![0u8; data_len];
            self.s.read_exact(&mut d).expect("reply data");
        }
        (r, d)
    }

    /// Sends a request without payload and returns its reply's error.
    pub fn simple(&mut self, command: Cmd, flags: u16, offset: u64, len: u32) -> ErrorCode {
        self.request(command, flags, 42, offset, len);
        let data_len = if command == Cmd::READ {
            len as usize
        } else {
            0
        };
        let (r, _) = self.reply(data_len);
        assert_eq!(r.cookie, 42);
        r.error
    }

    pub fn read_at(&mut self, offset: u64, len: u32) -> Vec<u8> {
        self.request(Cmd::READ, 0, 7, offset, len);
        let (r, d) = self.reply(len as usize);
        assert_eq!(r.error, ErrorCode::OK);
        d
    }

    /// Whether the server has closed the connection (reads end of file or a reset).
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

/// A memory export whose reads at `gate_offset` block until the gate is opened, to hold a
/// request in flight.
pub struct GateExport {
    pub inner: MemExport,
    pub gate_offset: u64,
    open: Mutex<bool>,
    cv: Condvar,
    pub entered: Mutex<u32>,
    entered_cv: Condvar,
}

impl GateExport {
    pub fn new(size: usize, gate_offset: u64) -> Self {
        GateExport {
            inner: MemExport::new(size, 512),
            gate_offset,
            open: Mutex::new(false),
            cv: Condvar::new(),
            entered: Mutex::new(0),
            entered_cv: Condvar::new(),
        }
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// Waits until a read has reached the gate.
    pub fn wait_entered(&self) {
        let g = self.entered.lock().unwrap();
        let (g, t) = self
            .entered_cv
            .wait_timeout_while(g, Duration::from_secs(20), |n| *n == 0)
            .unwrap();
        assert!(!t.timed_out() && *g > 0, "no read reached the gate");
    }
}

impl BlockExport for GateExport {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> BlockSize {
        self.inner.block_size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset == self.gate_offset {
            *self.entered.lock().unwrap() += 1;
            self.entered_cv.notify_all();
            let g = self.open.lock().unwrap();
            drop(self.cv.wait_while(g, |open| !*open).unwrap());
        }
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> io::Result<()> {
        self.inner.write(offset, buf, fua)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Sector size used by [`FaultExport`].
pub const FAULT_SECTOR: u64 = 512;

/// A memory export that fails reads of chosen sectors with chosen errors, or panics.
pub struct FaultExport {
    pub inner: MemExport,
}

impl BlockExport for FaultExport {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> BlockSize {
        self.inner.block_size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match offset / FAULT_SECTOR {
            1 => Err(io::Error::from_raw_os_error(28)),  // ENOSPC
            2 => Err(io::Error::from_raw_os_error(30)),  // EROFS
            3 => Err(io::Error::from_raw_os_error(108)), // ESHUTDOWN
            4 => Err(io::ErrorKind::InvalidInput.into()),
            5 => Err(io::Error::other("disk on fire")),
            6 => panic!("export bug"),
            _ => self.inner.read(offset, buf),
        }
    }
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> io::Result<()> {
        if offset / FAULT_SECTOR == 1 {
            return Err(io::Error::from_raw_os_error(1)); // EPERM
        }
        self.inner.write(offset, buf, fua)
    }
    fn flush(&self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(5))
    }
}
