//! One TLS connection to one server: connect with timeouts, send a request in one write,
//! read one framed response.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use openssl::ssl::{HandshakeError, SslStream};
use zeroize::Zeroizing;

use super::config::ServerAddr;
use super::error::ClientError;
use super::tls;
use crate::ttlv::{self, Limits};

/// What the handshake established, for "Save and Test".
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// "TLSv1.3", "TLSv1.2".
    pub version: String,
    /// The cipher suite's OpenSSL name.
    pub cipher: String,
    /// The server certificate's subject (one line).
    pub server_subject: String,
    /// The server certificate's notAfter.
    pub server_not_after: String,
    /// Days until the server certificate expires.
    pub server_days_left: i32,
    /// Time for TCP connect plus the TLS handshake.
    pub handshake_time: Duration,
}

pub(crate) struct Connection {
    pub server: ServerAddr,
    stream: SslStream<TcpStream>,
    pub tls: TlsInfo,
    /// Requests already answered: a failure on a used connection may just be an idle close.
    pub answered: u64,
}

impl Connection {
    pub fn open(
        context: &openssl::ssl::SslContext,
        server: &ServerAddr,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let name = server.to_string();
        let started = Instant::now();
        let addrs: Vec<_> = (server.host.as_str(), server.port)
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                server: name.clone(),
                source,
            })?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(t), _) => t,
            (None, Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ClientError::Refused { server: name })
            }
            (None, Some(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(ClientError::ConnectTimeout {
                    server: name,
                    after: connect_timeout,
                })
            }
            (None, Some(source)) => {
                return Err(ClientError::Io {
                    server: name,
                    source,
                })
            }
            (None, None) => {
                return Err(ClientError::Resolve {
                    server: name,
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
                })
            }
        };
        let io = |source| ClientError::Io {
            server: server.to_string(),
            source,
        };
        // KMIP messages are small request/response pairs: Nagle would only add latency.
        tcp.set_nodelay(true).map_err(io)?;
        tcp.set_read_timeout(Some(connect_timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(connect_timeout)).map_err(io)?;
        let setup = |e: openssl::error::ErrorStack| ClientError::Tls {
            server: name.clone(),
            detail: e.to_string(),
        };
        // What `SslConnector::configure` does: SNI and the name the certificate must carry
        // (an IP address is matched against the certificate's IP entries).
        let mut ssl = openssl::ssl::Ssl::new(context).map_err(setup)?;
        match server.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ssl.param_mut().set_ip(ip).map_err(setup)?,
            Err(_) => {
                ssl.set_hostname(&server.host).map_err(setup)?;
                let p = ssl.param_mut();
                p.set_hostflags(openssl::x509::verify::X509CheckFlags::NO_PARTIAL_WILDCARDS);
                p.set_host(&server.host).map_err(setup)?;
            }
        }
        let stream = match ssl.connect(tcp) {
            Ok(s) => s,
            Err(HandshakeError::Failure(mid)) => {
                let verify = mid.ssl().verify_result();
                let mut e = tls::handshake_error(&name, &server.host, verify, mid.error());
                if let ClientError::Timeout { after, .. } = &mut e {
                    *after = connect_timeout;
                }
                return Err(e);
            }
            Err(HandshakeError::WouldBlock(_)) => {
                return Err(ClientError::Timeout {
                    server: name,
                    after: connect_timeout,
                })
            }
            Err(HandshakeError::SetupFailure(e)) => {
                return Err(ClientError::Tls {
                    server: name,
                    detail: e.to_string(),
                })
            }
        };
        let ssl = stream.ssl();
        let (server_not_after, server_days_left, server_subject) = match ssl.peer_certificate() {
            Some(c) => {
                let (na, days) = tls::expiry(c.not_after());
                (na, days, tls::subject(&c))
            }
            None => (String::new(), 0, String::new()),
        };
        let info = TlsInfo {
            version: ssl.version_str().to_owned(),
            cipher: ssl
                .current_cipher()
                .map(|c| c.name().to_owned())
                .unwrap_or_default(),
            server_subject,
            server_not_after,
            server_days_left,
            handshake_time: started.elapsed(),
        };
        Ok(Self {
            server: server.clone(),
            stream,
            tls: info,
            answered: 0,
        })
    }

    /// Sends `request` in one write and reads one whole response message.
    pub fn round_trip(
        &mut self,
        request: &[u8],
        timeout: Duration,
        limits: &Limits,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let name = self.server.to_string();
        let tcp = self.stream.get_ref();
        let io = |source| ClientError::Io {
            server: name.clone(),
            source,
        };
        tcp.set_read_timeout(Some(timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(timeout)).map_err(io)?;
        // One write: PyKMIP breaks a request whose parts arrive seconds apart.
        self.stream
            .write_all(request)
            .and_then(|()| self.stream.flush())
            .map_err(|e| self.io_error(e, timeout))?;
        let mut header = [0u8; 8];
        self.stream
            .read_exact(&mut header)
            .map_err(|e| self.io_error(e, timeout))?;
        let len = ttlv::message_len(&header, limits).map_err(|source| ClientError::Decode {
            server: self.server.to_string(),
            source,
        })?;
        let mut buf = Zeroizing::new(vec![0u8; len]);
        buf[..8].copy_from_slice(&header);
        self.stream
            .read_exact(&mut buf[8..])
            .map_err(|e| self.io_error(e, timeout))?;
        self.answered += 1;
        Ok(buf)
    }

    fn io_error(&self, e: std::io::Error, timeout: Duration) -> ClientError {
        let server = self.server.to_string();
        if let Some(ssl) = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<openssl::ssl::Error>())
        {
            let mut c = tls::classify(&server, ssl);
            if let ClientError::Timeout { after, .. } = &mut c {
                *after = timeout;
            }
            return c;
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ClientError::Closed { server },
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout {
                server,
                after: timeout,
            },
            _ => ClientError::Io { server, source: e },
        }
    }
}
