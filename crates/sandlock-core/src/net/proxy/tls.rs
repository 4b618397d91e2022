//! The proxy's TLS: a certificate authority made in memory for each sandbox, a certificate per host
//! the sandbox connects to (signed by it, made on first use), and upstream connections verified
//! against the host's trust store.
//!
//! The authority's private key never leaves this process's memory; only its certificate is
//! written out (`http_ca_out`), for the sandbox to trust. Upstream certificates are checked against
//! the certificates the host trusts (`rustls-native-certs` reads the system bundle, or the file
//! `SSL_CERT_FILE` names), or against the policy's `http_upstream_ca` file instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// How long the authority's certificate is valid: longer than any sandbox lives in practice.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a host's certificate is valid.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates are dated this far back, for clocks that lag the host's a little.
const BACKDATE: Duration = Duration::from_secs(3600);
/// Most host certificates kept; a sandbox that asks for more starts the cache over.
const MAX_CACHED: usize = 512;

/// The protocol the proxy speaks on both sides (it serves HTTP/1.1 only).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The sandbox's certificate authority and the certificates it has issued.
pub(crate) struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    /// One key for every host certificate: making a key is the slow part, and the sandbox learns
    /// nothing from two hosts sharing one.
    leaf_key: KeyPair,
    provider: Arc<CryptoProvider>,
    configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

/// The cryptography behind both sides: *ring*. rustls marks it deprecated for lacking
/// post-quantum key exchange, which only its aws-lc-rs provider has; that one needs a C and CMake
/// build of aws-lc in every build of sandlock (the CLI, the Python extension), for a key exchange
/// with servers the sandbox was allowed to reach anyway.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    // A positive integer, as RFC 5280 asks.
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

fn validity(p: &mut CertificateParams, how_long: Duration) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + how_long;
}

impl Authority {
    /// A new authority with a fresh key.
    pub(crate) fn new() -> Result<Authority, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make the CA key: {e}"))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "sandlock");
        dn.push(
            DnType::CommonName,
            format!("sandlock proxy CA (process {})", std::process::id()),
        );
        p.distinguished_name = dn;
        // It signs host certificates only, never another authority.
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.serial_number = Some(random_serial());
        validity(&mut p, CA_VALIDITY);
        let cert = p
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
        let leaf_key = KeyPair::generate().map_err(|e| format!("cannot make the host key: {e}"))?;
        Ok(Authority {
            ca_pem: cert.pem(),
            issuer: Issuer::new(p, key),
            leaf_key,
            provider: provider(),
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// The authority's certificate, PEM-encoded: what the sandbox must trust.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A TLS server configuration that presents a certificate for `host` (a name, or an address
    /// when the client sent no name), issued on first use.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        if let Some(c) = self.configs.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(c);
        }
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|e| format!("{host:?} cannot be a certificate name: {e}"))?,
            ),
        };
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        p.distinguished_name = dn;
        p.subject_alt_names = vec![san];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial());
        validity(&mut p, LEAF_VALIDITY);
        let cert = p
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| format!("cannot sign a certificate for {host}: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS server setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .map_err(|e| format!("TLS server setup: {e}"))?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let config = Arc::new(config);
        if let Ok(mut m) = self.configs.lock() {
            if m.len() >= MAX_CACHED {
                m.clear();
            }
            m.insert(host.to_string(), Arc::clone(&config));
        }
        Ok(config)
    }
}

/// The TLS client configuration for upstream servers: certificates verified against `roots` (a
/// PEM file) or, without it, the host's trust store.
pub(crate) fn client_config(roots: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{} is not a PEM bundle: {e}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{} holds no CA certificate", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "the host has no trusted CA certificates ({}); install ca-certificates, \
                     set SSL_CERT_FILE, or set http_upstream_ca",
                    if why.is_empty() {
                        "none found".to_string()
                    } else {
                        why.join("; ")
                    }
                ));
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client setup: {e}"))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_certificates_chain_to_the_authority() {
        let a = Authority::new().unwrap();
        assert!(a.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let one = a.server_config("allowed.test").unwrap();
        let again = a.server_config("allowed.test").unwrap();
        assert!(Arc::ptr_eq(&one, &again), "made once per host");
        a.server_config("127.0.0.2").unwrap();
        // A client that trusts only the authority accepts the host's certificate.
        let ca = CertificateDer::from_pem_slice(a.ca_pem().as_bytes()).unwrap();
        let mut store = RootCertStore::empty();
        store.add(ca).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("allowed.test").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(one).unwrap();
        for _ in 0..4 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut back = Vec::new();
            s.write_tls(&mut back).unwrap();
            c.read_tls(&mut back.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking(), "the handshake completed");
    }

    #[test]
    fn an_upstream_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(client_config(Some(&empty)).unwrap_err().contains("no CA"));
        assert!(
            client_config(Some(&dir.path().join("missing.pem")))
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
