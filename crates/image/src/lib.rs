#![no_std]
//! stasis-image
pub mod records;
