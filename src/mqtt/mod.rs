//! MQTT framing and decoding over a byte stream.
pub mod sniff;
pub use sniff::{looks_like_connect, looks_like_tls};
