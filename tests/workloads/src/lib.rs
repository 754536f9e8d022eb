//! stasis-workloads
