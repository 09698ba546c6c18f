//! Keyward's domain logic: everything that decides, nothing that does IO.
//!
//! **Architecture Invariant:** this crate performs no IO (no files, network, database or
//! clock reads other than through arguments) and has no async code. Callers pass `now`.
//! It is therefore cheap to test exhaustively, and the verify hot path built on it is
//! predictable.

pub mod admin;
pub mod anomaly;
pub mod anomaly_response;
pub mod audit_chain;
pub mod code;
pub mod digest;
pub mod envelope;
pub mod ip;
pub mod key;
pub mod model;
pub mod permission;
pub mod policy;
pub mod posture;
pub mod ratelimit;
pub mod rotation;
pub mod scope;
pub mod secret;
pub mod time;
pub mod usage;
pub mod validate;
pub mod webhook;

pub use code::VerifyCode;
pub use digest::KeyDigest;
pub use key::{KeyPrefix, MintedKey, ParsedKey};
