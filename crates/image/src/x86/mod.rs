//! The one home for x86-64 CPU details that the engines share: what a CPU
//! offers user code (CPUID feature words, XSAVE components and where they sit),
//! how to tell whether an image's CPU and this one are compatible, and the
//! XSAVE area's byte layout (FXSAVE legacy region, XSAVE header, software bytes
//! of a signal frame, re-layout between CPUs).
//!
//! It lives in `stasis-image` because the image's XSTATE areas and CPU record
//! are defined in terms of it, and because this crate already builds into the
//! kernel module unchanged (`no_std`, panic free): the user engine, the CLI and
//! `stasis.ko` all call this code, so no XSAVE offset is written twice.
//!
//! Nothing here executes a privileged instruction: `cpuid` and `xgetbv` (only
//! after OSXSAVE is seen) are allowed in user and kernel mode alike.

pub mod cpu;
pub mod xsave;

pub use cpu::{CpuCompat, FeatureList};
pub use xsave::{Layout, XsaveError};
