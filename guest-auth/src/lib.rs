//! The Hightower auth service: users with Argon2id passwords, API keys and
//! envelope-encrypted metadata, stored in the `auth/` namespace.
//!
//! The logic ([`auth_service::AuthService`]) is generic over the store,
//! randomness and the clock; it is unit-tested natively with in-memory
//! fakes. `bindings` (wasm32 only) is the thin layer that exports it as the
//! `hightower:kv/auth-service` component.

pub mod auth_service;
pub mod auth_types;
pub mod crypto;
pub mod environment;
pub mod error;
pub mod id_generator;
pub mod kek_usage;
pub mod scopes;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod bindings;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
