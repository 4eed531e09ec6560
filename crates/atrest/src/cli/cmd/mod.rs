//! One file per subcommand: glue between arguments and the library crates.

pub mod admin;
pub mod bind;
pub mod convert;
pub mod ctl;
pub mod decrypt;
pub mod demo;
pub mod encrypt;
pub mod format;
pub mod kmip;
pub mod kms;
pub mod open;
pub mod rekey;
pub mod serve;
pub mod status;
pub mod ttlv;
