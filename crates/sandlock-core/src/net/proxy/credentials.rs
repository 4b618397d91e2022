//! Credentials the proxy adds to requests (`credentials` and `http_auth`).
//!
//! A credential is named in the policy by where it comes from: `env:VAR` (a variable of the host's
//! environment) or `file:PATH` (a file on the host, one trailing newline dropped). Both are read
//! once, when the sandbox is made, and then live only in this process's memory: the policy keeps
//! the reference, not the value, and the sandbox can reach neither. A policy that would let it
//! (passing `VAR` through `pass_env`, or a `PATH` beneath a path the sandbox may read) is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use http::HeaderValue;

use super::rules::HttpRules;
use crate::error::PolicyError;

/// A secret: never shown (`Debug` prints its length only), overwritten with zeros when dropped.
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    /// The value, as a header value marked sensitive (so that HTTP libraries do not log it).
    pub(crate) fn header(&self, prefix: &str) -> Option<HeaderValue> {
        let mut v = Vec::with_capacity(prefix.len() + self.0.len());
        v.extend_from_slice(prefix.as_bytes());
        v.extend_from_slice(&self.0);
        let mut h = HeaderValue::from_bytes(&v).ok()?;
        v.fill(0);
        h.set_sensitive(true);
        Some(h)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned byte of our own buffer; the volatile write keeps the
            // compiler from dropping the wipe of memory about to be freed.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The credentials of a policy, by name.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    by_name: HashMap<String, Secret>,
}

impl Credentials {
    /// The secret called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Secret> {
        self.by_name.get(name)
    }
}

/// What the sandbox could read, to keep credentials out of its reach.
pub(crate) struct Reach<'a> {
    /// Host variables passed through (`pass_env`).
    pub(crate) pass_env: &'a [String],
    /// Canonical paths the sandbox may read or write beneath.
    pub(crate) paths: &'a [PathBuf],
}

/// Reads every credential the policy names and checks that each `http_auth` entry names one.
pub(crate) fn load(
    sources: &BTreeMap<String, String>,
    rules: &HttpRules,
    reach: &Reach<'_>,
) -> Result<Credentials, PolicyError> {
    let mut by_name = HashMap::new();
    for (name, source) in sources {
        let field = format!("credentials.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(PolicyError::new(
                "credentials",
                name,
                "a credential name is letters, digits, '_', '-' and '.'",
            ));
        }
        let secret = if let Some(var) = source.strip_prefix("env:") {
            if let Some(i) = reach.pass_env.iter().position(|v| v == var) {
                return Err(PolicyError::new(
                    format!("pass_env[{i}]"),
                    var,
                    format!(
                        "credential {name} comes from this variable; passing it through would \
                         show it to the sandbox"
                    ),
                ));
            }
            match std::env::var_os(var) {
                Some(v) if !v.is_empty() => std::os::unix::ffi::OsStringExt::into_vec(v),
                _ => {
                    return Err(PolicyError::new(
                        field,
                        source,
                        format!("{var} is not set (or empty) in sandlock's environment"),
                    ));
                }
            }
        } else if let Some(path) = source.strip_prefix("file:") {
            read_file(&field, source, Path::new(path), reach)?
        } else {
            return Err(PolicyError::new(
                field,
                source,
                "write env:VARIABLE or file:PATH",
            ));
        };
        if HeaderValue::from_bytes(&secret).is_err() {
            return Err(PolicyError::new(
                field,
                source,
                "the value holds a control character (a newline inside it?), which cannot go in \
                 an HTTP header",
            ));
        }
        by_name.insert(name.clone(), Secret(secret));
    }
    for (i, a) in rules.auth.iter().enumerate() {
        if !by_name.contains_key(&a.credential) {
            let known: Vec<&str> = sources.keys().map(String::as_str).collect();
            return Err(PolicyError::new(
                format!("http_auth[{i}]"),
                a.rule.text(),
                format!(
                    "no credential named {:?}; the credentials are: {}",
                    a.credential,
                    if known.is_empty() {
                        "none (add one with credentials / --credential NAME=env:VAR)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(Credentials { by_name })
}

fn read_file(
    field: &str,
    source: &str,
    path: &Path,
    reach: &Reach<'_>,
) -> Result<Vec<u8>, PolicyError> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| PolicyError::new(field, source, format!("cannot read it: {e}")))?;
    if let Some(p) = reach.paths.iter().find(|p| real.starts_with(p)) {
        return Err(PolicyError::new(
            field,
            source,
            format!(
                "the file lies beneath {}, which the sandbox may read; keep credentials outside \
                 the policy's paths",
                p.display()
            ),
        ));
    }
    let mut v = std::fs::read(&real)
        .map_err(|e| PolicyError::new(field, source, format!("cannot read it: {e}")))?;
    if v.ends_with(b"\n") {
        v.pop();
        if v.ends_with(b"\r") {
            v.pop();
        }
    }
    if v.is_empty() {
        return Err(PolicyError::new(field, source, "the file is empty"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(auth: &[&str]) -> HttpRules {
        HttpRules::parse(
            &["* h.test".to_string()],
            &[],
            &auth.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn sources(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn files_are_read_once_and_refused_within_the_sandboxes_reach() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let src = sources(&[("gh", format!("file:{}", f.display()))]);
        let none = Reach {
            pass_env: &[],
            paths: &[],
        };
        let c = load(&src, &rules(&["* h.test bearer gh"]), &none).unwrap();
        let h = c.get("gh").unwrap().header("Bearer ").unwrap();
        assert_eq!(h.as_bytes(), b"Bearer s3cret");
        assert!(h.is_sensitive());
        assert_eq!(format!("{:?}", c.get("gh").unwrap()), "Secret(6 bytes)");
        let readable = [std::fs::canonicalize(dir.path()).unwrap()];
        let inside = Reach {
            pass_env: &[],
            paths: &readable,
        };
        let e = load(&src, &rules(&[]), &inside).unwrap_err();
        assert_eq!(e.field, "credentials.gh");
        assert!(e.reason.contains("sandbox may read"), "{e}");
    }

    #[test]
    fn bad_sources_and_unknown_names_are_named() {
        let none = Reach {
            pass_env: &[],
            paths: &[],
        };
        let e = load(&sources(&[("gh", "vault:x".into())]), &rules(&[]), &none).unwrap_err();
        assert!(e.reason.contains("env:VARIABLE or file:PATH"), "{e}");
        let e = load(
            &sources(&[("gh", "env:SANDLOCK_TEST_SURELY_UNSET_VAR".into())]),
            &rules(&[]),
            &none,
        )
        .unwrap_err();
        assert!(e.reason.contains("is not set"), "{e}");
        let e = load(&sources(&[]), &rules(&["* h.test bearer gh"]), &none).unwrap_err();
        assert_eq!(e.field, "http_auth[0]");
        assert!(e.reason.contains("no credential named \"gh\""), "{e}");
        let passed = ["PATH".to_string()];
        let e = load(
            &sources(&[("p", "env:PATH".into())]),
            &rules(&[]),
            &Reach {
                pass_env: &passed,
                paths: &[],
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "pass_env[0]");
    }
}
