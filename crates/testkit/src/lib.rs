//! Test tools that several of atrest's crates need, kept once, here.
//!
//! This crate is a dev-dependency only (`publish = false`): no shipped crate depends on
//! it, so the `unsafe` a test tool needs stays out of every library a build ships. It
//! holds what more than one crate's tests share; what the test binaries of one crate
//! share stays in that crate's `tests/` folder (`tests/common`, `tests/harness`), and the
//! hooks a crate must expose from inside (the fuzz properties, nbd's in-memory export)
//! stay behind that crate's `test-support` feature.
//!
//! - [`alloc`]: the allocation watcher, a counting global allocator that records the
//!   largest single allocation made while a section is watched; it holds the codecs' and
//!   the header parser's "a hostile length allocates nothing" claims to a number. Each test
//!   binary installs it with its own `#[global_allocator]` static (only a binary can).
//! - [`net`]: whether, and when, a server closed a TCP connection, seen from the client.
//! - `kms` (feature `kms`): a client of the development KMS, for the tests that attack
//!   it over raw mutual TLS: its TLS session and a KMIP Query request.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc;
#[cfg(feature = "kms")]
pub mod kms;
pub mod net;
