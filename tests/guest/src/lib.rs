//! stasis-guest
