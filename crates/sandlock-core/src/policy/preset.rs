//! Built-in path sets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A named set of paths added to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Preset {
    /// What system programs (`python3`, `sh`, `node`, coreutils) need to start and run: `/usr`,
    /// `/lib*`, `/bin`, `/sbin`, the files of `/etc` that the C library and language runtimes read,
    /// and the harmless devices. It does not include the rest of `/etc`, `/home`, `/root`, `/proc`,
    /// `/tmp` or `/var`.
    System,
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(Preset::System),
            _ => Err(format!("unknown preset {s:?}; the presets are: system")),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preset::System => f.write_str("system"),
        }
    }
}

/// Read-only part of the `system` preset. Paths that do not exist on this machine are skipped.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    // Dynamic loader and C library configuration.
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ld.so.preload",
    // Name service: user and group names, host and service lookups.
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    // Locale, time zone, MIME types, terminal descriptions.
    "/etc/localtime",
    "/etc/timezone",
    "/etc/locale.alias",
    "/etc/locale.conf",
    "/etc/default/locale",
    "/etc/mime.types",
    "/etc/terminfo",
    "/etc/inputrc",
    // Font configuration: plotting libraries (matplotlib, through fontconfig) read it to find
    // the fonts under /usr/share/fonts.
    "/etc/fonts",
    // TLS trust store, and the alternatives symlinks that point into /usr.
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    // Interpreter-wide configuration that runtimes read at start-up.
    "/etc/python3",
    "/etc/python3.11",
    "/etc/python3.12",
    "/etc/python3.13",
    "/etc/os-release",
    "/etc/lsb-release",
    "/etc/debian_version",
    // Devices that reveal nothing and change nothing.
    "/dev/zero",
    "/dev/random",
    "/dev/urandom",
];

/// Writable part of the `system` preset: sinks that store nothing.
const SYSTEM_WRITE: &[&str] = &["/dev/null", "/dev/full"];

/// The (read-only, writable) path lists of the `system` preset.
pub(crate) fn system_paths() -> (&'static [&'static str], &'static [&'static str]) {
    (SYSTEM_READ, SYSTEM_WRITE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_preset_does_not_cover_secrets() {
        let (read, write) = system_paths();
        for p in read.iter().chain(write) {
            for banned in [
                "/etc", "/home", "/root", "/proc", "/tmp", "/var", "/run", "/",
            ] {
                assert_ne!(
                    *p, banned,
                    "the system preset must not grant {banned} whole"
                );
            }
            assert!(!p.starts_with("/home") && !p.starts_with("/root"), "{p}");
            assert!(
                !p.starts_with("/etc/shadow") && !p.starts_with("/etc/sudoers"),
                "{p}"
            );
        }
    }

    #[test]
    fn preset_names_parse() {
        assert_eq!("system".parse::<Preset>(), Ok(Preset::System));
        assert!("everything".parse::<Preset>().is_err());
    }
}
