//! JWT verification (secrets, PEM keys, JWKS) and minting.

mod jwks;
mod keys;
mod mint;
mod verify;

pub use keys::secret_bytes;
pub use mint::{mint, mint_at, MintError};
pub use verify::JwtVerifier;
