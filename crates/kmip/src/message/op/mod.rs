//! One file per operation family: the request and response payload structs.

mod attributes;
mod check;
mod create;
mod discover_versions;
mod get;
mod lifecycle;
mod locate;
mod query;

pub use attributes::*;
pub use check::*;
pub use create::*;
pub use discover_versions::*;
pub use get::*;
pub use lifecycle::*;
pub use locate::*;
pub use query::*;
