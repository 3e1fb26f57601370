//! permessage-deflate (RFC 7692): negotiation ([`params`]) and the codec ([`codec`]).

pub mod codec;
pub mod params;

pub use codec::{Deflater, Inflater};
pub use params::{DeflateConfig, DeflateParams, NegotiationError};
