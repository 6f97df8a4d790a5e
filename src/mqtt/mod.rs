//! MQTT framing and decoding over a byte stream: [`StreamDecoder`] per connection
//! direction, [`Packet`] as the version-independent result.
mod connect;
pub mod decoder;
pub mod encode;
pub mod packet;
pub mod sniff;

pub use decoder::{Decoded, StreamDecoder, MQTT_MAX_REMAINING};
pub use packet::{Connect, Packet, Publish, Version};
pub use sniff::{looks_like_connect, looks_like_tls, NotConnect, Opening};
