//! Bounds on what a peer can make the decoder do.
//!
//! A TTLV length field is a 32-bit number chosen by the sender. Without these limits a
//! hostile server (or client, for `kms`) could ask us to allocate 4 GiB for one message,
//! or nest Structures until the recursive decoder overflows its stack.

/// Largest whole message (outer 8-byte header included) we accept by default.
///
/// 1 MiB matches PyKMIP's cap; real data-at-rest traffic (keys, attributes, a certificate
/// chain in Register) is a few KiB. It bounds every allocation made while decoding: items
/// are at least 8 bytes on the wire, so a message can hold at most 128 Ki items.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024;

/// Deepest nesting of Structures we accept by default.
///
/// The deepest OASIS test case nests 9 levels (a Get response carrying a key with
/// attributes); 32 leaves room for vendor extensions while keeping recursion shallow.
pub const MAX_DEPTH: usize = 32;

/// Limits applied by one decode call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum total encoded length in bytes, headers and padding included.
    pub max_message_len: usize,
    /// Maximum Structure nesting; the outermost item is at depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_len: MAX_MESSAGE_LEN,
            max_depth: MAX_DEPTH,
        }
    }
}
