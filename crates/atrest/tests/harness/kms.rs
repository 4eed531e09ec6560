//! One `atrest kms serve` child process on a free loopback port, for the test binaries
//! that need a real KMIP server. Not every binary uses every method.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn atrest_bin() -> &'static str {
    env!("CARGO_BIN_EXE_atrest")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `atrest kms serve` child process.
pub struct Kms {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Kms {
    pub fn start(dir: &Path, port: u16) -> Self {
        Self::start_with(dir, port, &[])
    }

    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .unwrap();
        let child = Command::new(atrest_bin())
            .args(["kms", "serve", "--dir", dir.to_str().unwrap(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut k = Self {
            dir: dir.to_owned(),
            port,
            child: Some(child),
        };
        k.wait_ready();
        k
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "atrest kms serve exited with {s}; see {}",
                    self.dir.with_extension("log").display()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("atrest kms serve did not listen within 30 s");
    }

    pub fn client_toml(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status it ended with.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Kms {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A raw TTLV connection to a development KMS over its mutual TLS, for what the client
/// would not send: OASIS replays, batches, oversized requests.
pub struct RawKmip {
    pub stream: openssl::ssl::SslStream<TcpStream>,
}

impl RawKmip {
    pub fn connect(kms: &Kms) -> Self {
        Self {
            stream: testkit::kms::tls_session(&kms.dir, ("127.0.0.1", kms.port)),
        }
    }

    /// Sends `request`, returns the response.
    pub fn call(&mut self, request: &kmip::ttlv::Item) -> kmip::ttlv::Item {
        self.stream.write_all(&kmip::ttlv::encode(request)).unwrap();
        self.read_response()
    }

    /// Reads one whole message.
    pub fn read_response(&mut self) -> kmip::ttlv::Item {
        use kmip::ttlv;
        let mut h = [0u8; 8];
        self.stream.read_exact(&mut h).unwrap();
        let len = ttlv::message_len(&h, &ttlv::Limits::default()).unwrap();
        let mut buf = vec![0u8; len];
        buf[..8].copy_from_slice(&h);
        self.stream.read_exact(&mut buf[8..]).unwrap();
        ttlv::decode(&buf).unwrap()
    }
}
