//! The operations every front end offers, each a function from a request to a report.

pub mod bind;
pub mod convert;
pub mod format;
pub mod open;
pub mod status;
pub mod test;
