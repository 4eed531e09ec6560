//! The service side of atrest: what the daemon and the command line share.
//!
//! Today this is the configuration file (`[kmip]` and `[[volume]]`, see `docs/design.md`): read,
//! checked, its relative paths resolved against the file's own folder, its secret files
//! refused when group or others may read them, and turned into the in-memory
//! [`kmip::client::ClientConfig`] the KMIP client takes. The daemon itself (unlock at start,
//! NBD export, key-state watch, admin page) arrives with its issues.

#![forbid(unsafe_code)]

pub mod config;
pub mod trusted;
