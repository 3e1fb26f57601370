//! Per-connection limits.

/// Limits of one connection, enforced by the decoder while it reads (not after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest message accepted, in bytes, counted after decompression. A larger message fails
    /// the connection with 1009 as soon as its size is known: at the frame header for plain
    /// frames, while inflating for compressed ones. Bounds memory per connection against huge
    /// frames, endless fragmentation and compression bombs. Default 1 MiB (SPEC §6).
    pub max_message_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 1024 * 1024,
        }
    }
}
