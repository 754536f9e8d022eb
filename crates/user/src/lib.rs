//! stasis-user
