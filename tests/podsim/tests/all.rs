//! podsim's integration tests: one binary, one module per concern (see `suite/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
