//! One file per subcommand: glue between arguments and the library crates.

pub mod ttlv;
