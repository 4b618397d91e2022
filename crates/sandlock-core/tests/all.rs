//! Integration tests against the real kernel: every confinement rule is an attempt that must fail
//! beside a control that must succeed. The same binary runs directly (as root in CI) and under the
//! restricted-pod harness (`podsim -- target/debug/deps/all-*`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod suite;
