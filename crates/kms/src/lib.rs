//! atrest's development KMIP server (`atrest kms serve`): the embedded default.
//!
//! A newcomer has no key manager at hand, and the tests need a server besides PyKMIP. This
//! crate is that server: KMIP 1.0–2.1 over mutual TLS (OpenSSL), client identity from the
//! certificate, the KMIP Credential checked against a users file, the symmetric-key
//! lifecycle of the specification, objects kept in a crash-safe store with their key
//! material sealed under a master key. It is for development and tests; production uses
//! the organisation's own key manager.
//!
//! Parts: [`setup`] lays out a server directory on first start (PKI, users, the client's
//! ready `client.toml`); [`store`] keeps objects; [`auth`] checks credentials; [`handler`]
//! turns one request into one response; [`server`] accepts connections, and `admission`
//! bounds what peers that have not authenticated may hold there.

#![forbid(unsafe_code)]

mod admission;
pub mod auth;
pub mod handler;
mod notice;
pub mod pki;
pub mod server;
pub mod setup;
pub mod store;
