//! The trust bundle of `http_inject_ca`: the host's bundle with the sandbox's authority added,
//! which the filesystem view shows at the bundle's own path (see `crate::fsview::spec::FileMount`)
//! so that programs trust the interception without being told. The host's file is only read.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::PolicyError;

/// The policy field, for errors.
pub(crate) const FIELD: &str = "http_inject_ca";

/// Bundles larger than this are refused: a trust bundle is a few hundred KiB, and each sandbox
/// keeps a copy.
const MAX_BUNDLE: u64 = 16 << 20;

/// The paths the sandbox sees the bundle at: `path` as given (made absolute) and, where it is a
/// symlink, the file it leads to, since a program may open either.
pub(crate) fn paths(path: &Path) -> Vec<PathBuf> {
    let given = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = vec![given.components().collect::<PathBuf>()];
    if let Ok(real) = std::fs::canonicalize(path) {
        if !out.contains(&real) {
            out.push(real);
        }
    }
    out
}

/// What the sandbox reads at `path`: the host's bundle there, then `ca_pem`. Refuses a path that
/// is missing, not a regular file, too large, or holds no PEM certificate.
pub(crate) fn injected(path: &Path, ca_pem: &str) -> Result<Vec<u8>, PolicyError> {
    let shown = path.display().to_string();
    let bad = |why: String| PolicyError::new(FIELD, shown.clone(), why);
    let meta = std::fs::metadata(path).map_err(|e| {
        bad(if e.kind() == std::io::ErrorKind::NotFound {
            "no such file; name the trust bundle the sandbox's programs read (Debian and Ubuntu: \
             /etc/ssl/certs/ca-certificates.crt, Fedora: /etc/pki/tls/certs/ca-bundle.crt)"
                .to_string()
        } else {
            format!("cannot read it: {e}")
        })
    })?;
    if !meta.is_file() {
        return Err(bad(
            "not a regular file; name the PEM bundle itself, not its directory".to_string(),
        ));
    }
    if meta.len() > MAX_BUNDLE {
        return Err(bad(format!(
            "{} bytes; a trust bundle of more than {} MiB is not one",
            meta.len(),
            MAX_BUNDLE >> 20
        )));
    }
    let mut host = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&host)
        .filter(|c| c.is_ok())
        .count();
    if certs == 0 {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----); name the bundle the \
             sandbox's TLS library reads"
                .to_string(),
        ));
    }
    if !host.ends_with(b"\n") {
        host.push(b'\n');
    }
    host.extend_from_slice(ca_pem.as_bytes());
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn pem_blocks(b: &[u8]) -> usize {
        String::from_utf8_lossy(b)
            .matches("-----BEGIN CERTIFICATE-----")
            .count()
    }

    #[test]
    fn the_authority_follows_the_hosts_certificates() {
        let d = tempfile::tempdir().unwrap();
        let ca = crate::net::proxy::tls::Authority::new().unwrap();
        let host = d.path().join("host.pem");
        // Without a final newline, which must not glue the two blocks together.
        std::fs::write(&host, ca.ca_pem().trim_end()).unwrap();
        let out = injected(&host, CA).unwrap();
        assert_eq!(pem_blocks(&out), 2);
        assert!(out.starts_with(ca.ca_pem().trim_end().as_bytes()));
        assert!(out.ends_with(CA.as_bytes()));
        assert!(String::from_utf8_lossy(&out).contains("-----\n-----BEGIN"));
    }

    #[test]
    fn a_missing_path_a_directory_or_a_file_without_certificates_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        for (p, why) in [
            (d.path().join("nothing"), "no such file"),
            (d.path().to_path_buf(), "not a regular file"),
            (empty, "holds no PEM certificate"),
        ] {
            let e = injected(&p, CA).unwrap_err();
            assert_eq!(e.field, FIELD);
            assert_eq!(e.value, p.display().to_string());
            assert!(e.reason.contains(why), "{e}");
        }
    }

    #[test]
    fn a_symlinked_bundle_is_shown_at_both_paths() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap().join("real.pem");
        std::fs::write(&real, CA).unwrap();
        let link = d.path().join("link.pem");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(paths(&link), vec![link.clone(), real.clone()]);
        assert_eq!(paths(&real), vec![real]);
    }
}
