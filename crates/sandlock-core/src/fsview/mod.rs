//! Filesystem views without root: per-sandbox mounts (`fs_mount`) and a private `/tmp`.
//!
//! There are no mount namespaces here. When a policy has a view, the seccomp filter hands the
//! path syscalls to the supervisor, which decides for each path whether it lies in the view:
//! - a path that never enters a mounted directory (VIRT) is left to the kernel
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`), and Landlock checks it as always;
//! - a path that does is resolved by the supervisor, component by component, beneath a descriptor
//!   of the mount's host directory (HOST) held since the plan ([`walk`]), and the call is carried
//!   out there with `*at` calls on that descriptor, with the sandbox's own permissions
//!   ([`calls`], [`creds`]);
//! - `chdir` and `execve`, which only the sandbox itself can do, are restarted by the kernel with
//!   the HOST path put in place of the virtual one ([`redirect`]).
//!
//! Landlock stays the boundary: every HOST is granted to the sandbox and no real VIRT path ever
//! is, so a thread that rewrites a path after the supervisor looked can only reach what the policy
//! allows (`docs/security.md`). The private `/tmp` of a run lives in [`tmp`]; what the plan makes
//! of the policy (mount table, refusals, the skeleton that shows a VIRT's missing ancestors) in
//! [`spec`].

pub(crate) mod calls;
pub(crate) mod cow;
pub(crate) mod creds;
mod ops;
mod redirect;
pub(crate) mod spec;
pub(crate) mod tmp;
mod view;
pub(crate) mod walk;

pub(crate) use calls::{State, Verdict, handle, handles, socket_file};
pub(crate) use spec::ViewPlan;
pub(crate) use view::View;
