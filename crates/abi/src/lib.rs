//! stasis-abi: the /dev/stasis ioctl interface, shared by the CLI and the module.
#![no_std]
