//! The application layer every front end shares: the command line, the daemon and (later)
//! the admin web page call the same functions here and print or serve what they return.
//!
//! - [`config`] and [`trusted`]: the configuration file, read with the checks a root
//!   daemon needs, its relative paths resolved against its folder.
//! - [`keys`]: the KMIP side (fetch, create with rollback, retire, state).
//! - [`device`]: a volume's devices, opened and locked.
//! - [`ops`]: typed operations (Save and Test, format, encrypt, decrypt, rekey, status)
//!   taking a request, an [`progress::Observer`] and a [`progress::Stop`], returning a
//!   `Serialize` report or a [`ServiceError`] that names what failed and what to do.

#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod daemon;
pub mod device;
pub mod error;
pub mod exports;
pub mod keys;
pub mod ops;
mod private_dir;
pub mod progress;
pub mod refusal;
pub mod runtime_path;
pub mod syslog;
pub mod trusted;

pub use error::ServiceError;
