//! One file per subcommand: glue between arguments and the library crates.

pub mod demo;
pub mod format;
pub mod kmip;
pub mod kms;
pub mod status;
pub mod ttlv;
