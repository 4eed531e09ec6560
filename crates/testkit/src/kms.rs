//! A client of atrest's development KMS (`kms::setup` makes its directory) for the tests
//! that speak to it below the KMIP client: raw mutual-TLS sessions and hand-made requests.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode};

/// A TLS session to the development KMS at `addr` whose directory is `dir`, as the daemon
/// opens it: the directory's client certificate (`pki/client.crt`, `pki/client.key`), its
/// CA trusted (`pki/ca.crt`), the server named "localhost"; reads time out after 10 s.
pub fn tls_session(dir: &Path, addr: impl ToSocketAddrs) -> SslStream<TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client_connector(dir).connect("localhost", tcp).unwrap()
}

/// The TLS client side [`tls_session`] uses, for tests that connect many times (and want
/// to see a failed handshake rather than a panic): the directory's client certificate,
/// its CA trusted, the peer verified.
pub fn client_connector(dir: &Path) -> SslConnector {
    let pki = dir.join("pki");
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki.join("ca.crt")).unwrap();
    b.set_certificate_file(pki.join("client.crt"), SslFiletype::PEM)
        .unwrap();
    b.set_private_key_file(pki.join("client.key"), SslFiletype::PEM)
        .unwrap();
    b.set_verify(SslVerifyMode::PEER);
    b.build()
}

/// The KMIP XML text of a KMIP 1.4 request of `batch` Query items (QueryOperations), each
/// the same, under a UsernameAndPassword Credential.
pub fn query_request(username: &str, password: &str, batch: usize) -> String {
    let item = r#"<BatchItem><Operation type="Enumeration" value="Query"/><RequestPayload>
        <QueryFunction type="Enumeration" value="QueryOperations"/></RequestPayload></BatchItem>"#;
    format!(
        r#"<RequestMessage><RequestHeader><ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/>
        <ProtocolVersionMinor type="Integer" value="4"/></ProtocolVersion>
        <Authentication><Credential><CredentialType type="Enumeration" value="UsernameAndPassword"/>
        <CredentialValue><Username type="TextString" value="{username}"/><Password type="TextString" value="{password}"/>
        </CredentialValue></Credential></Authentication><BatchCount type="Integer" value="{batch}"/>
        </RequestHeader>{}</RequestMessage>"#,
        item.repeat(batch)
    )
}
