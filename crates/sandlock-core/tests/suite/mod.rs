mod env_fds;
mod errors;
mod fs;
mod limits;
mod net;
mod signals;
mod stress;
pub(crate) mod support;
mod syscalls;
