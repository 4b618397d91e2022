//! Tests against the running kernel. Those that start podsim need root and skip without it.

mod probe;
mod profile;
mod run;
mod support;
