//! JIT tokens: who is calling.
//!
//! Every request carries `Authorization: Bearer obx_jit_v1.<payload>.<sig>`, where `payload` is
//! the unpadded base64url of the JSON `{"exp": <Unix ms>, "iss": "...", "sub": "..."}` and `sig` the
//! unpadded base64url of HMAC-SHA256(key, `"obx_jit_v1." + payload`). The signature is checked
//! (in constant time, by `hmac`) before anything in the payload is read; then the expiry. The
//! account is the pair `(iss, sub)`: LobeHub's deployment and its user id. Tokens are never
//! logged.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::config::JitKey;

/// The token prefix, which is also the first part of what the signature covers.
pub const PREFIX: &str = "obx_jit_v1.";

/// Longest `iss` or `sub` accepted.
const MAX_CLAIM: usize = 256;

/// Whose sessions and tasks a request may see: the token's issuer and subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// The issuer (LobeHub's `ONLYBOXES_JIT_ISSUER`, or its app URL).
    pub iss: String,
    /// The subject (LobeHub's user id).
    pub sub: String,
}

/// Why a request is not authenticated. The words go back to the caller; they never include the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing bearer token: send Authorization: Bearer obx_jit_v1.<payload>.<signature>")]
    Missing,
    /// Not a JIT token of this version.
    #[error("not an obx_jit_v1 token: {0}")]
    Malformed(&'static str),
    /// The signature does not match the key.
    #[error(
        "bad token signature: the server and LobeHub must share the signing key \
         (ONLYBOXES_JIT_SIGNING_KEY)"
    )]
    BadSignature,
    /// The token's `exp` has passed.
    #[error(
        "token expired at {exp} (Unix ms; now {now}); LobeHub signs a fresh token per request, so \
         check both clocks"
    )]
    Expired {
        /// The token's expiry.
        exp: u64,
        /// The server's clock.
        now: u64,
    },
    /// The payload is signed but not what the protocol describes.
    #[error("bad token payload: {0}")]
    Payload(String),
}

#[derive(serde::Deserialize)]
struct Claims {
    exp: u64,
    iss: String,
    sub: String,
}

/// Checks an `Authorization` header value against `key` at time `now_ms` (Unix milliseconds).
pub fn verify(key: &JitKey, header: Option<&str>, now_ms: u64) -> Result<Account, AuthError> {
    let value = header.ok_or(AuthError::Missing)?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => return Err(AuthError::Malformed("the scheme is not Bearer")),
    };
    let signed_and_sig = token
        .strip_prefix(PREFIX)
        .ok_or(AuthError::Malformed("it does not start with obx_jit_v1."))?;
    let (payload, sig) = signed_and_sig
        .rsplit_once('.')
        .ok_or(AuthError::Malformed("it has no signature part"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| AuthError::Malformed("the signature is not unpadded base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes())
        .map_err(|_| AuthError::Malformed("the server key is unusable"))?;
    mac.update(PREFIX.as_bytes());
    mac.update(payload.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| AuthError::BadSignature)?;

    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Payload("not unpadded base64url".into()))?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|e| {
        AuthError::Payload(format!(
            "{e}; expected {{\"exp\": <Unix ms>, \"iss\": \"...\", \"sub\": \"...\"}}"
        ))
    })?;
    if claims.exp <= now_ms {
        return Err(AuthError::Expired {
            exp: claims.exp,
            now: now_ms,
        });
    }
    for (name, v) in [("iss", &claims.iss), ("sub", &claims.sub)] {
        if v.is_empty() || v.len() > MAX_CLAIM {
            return Err(AuthError::Payload(format!(
                "{name} must be 1 to {MAX_CLAIM} bytes, not {}",
                v.len()
            )));
        }
    }
    Ok(Account {
        iss: claims.iss,
        sub: claims.sub,
    })
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A token as LobeHub makes one, written from the protocol description.
    fn token(key: &[u8], claims: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(claims);
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{PREFIX}{payload}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("Bearer {PREFIX}{payload}.{sig}")
    }

    fn key() -> JitKey {
        JitKey::from_bytes(KEY).unwrap()
    }

    #[test]
    fn a_good_token_names_its_account() {
        let t = token(KEY, r#"{"exp": 2000, "iss": "lobehub", "sub": "user_1"}"#);
        let a = verify(&key(), Some(&t), 1999).unwrap();
        assert_eq!(
            a,
            Account {
                iss: "lobehub".into(),
                sub: "user_1".into()
            }
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let t = token(
            b"another-key-another-key-another-key",
            r#"{"exp": 2000, "iss": "lobehub", "sub": "user_1"}"#,
        );
        assert_eq!(verify(&key(), Some(&t), 1), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_changed_payload_breaks_the_signature() {
        let t = token(KEY, r#"{"exp": 2000, "iss": "lobehub", "sub": "user_1"}"#);
        let other = URL_SAFE_NO_PAD.encode(r#"{"exp": 2000, "iss": "lobehub", "sub": "user_2"}"#);
        let (head, sig) = t.rsplit_once('.').unwrap();
        let (_, payload) = head.split_at(head.find(PREFIX).unwrap() + PREFIX.len());
        let forged = t.replace(payload, &other);
        assert_ne!(forged, t);
        assert!(forged.ends_with(sig));
        assert_eq!(
            verify(&key(), Some(&forged), 1),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn an_expired_token_is_refused_at_its_millisecond() {
        let t = token(KEY, r#"{"exp": 2000, "iss": "i", "sub": "s"}"#);
        assert!(verify(&key(), Some(&t), 1999).is_ok());
        assert_eq!(
            verify(&key(), Some(&t), 2000),
            Err(AuthError::Expired {
                exp: 2000,
                now: 2000
            })
        );
    }

    #[test]
    fn malformed_headers_are_refused_with_words() {
        let k = key();
        assert_eq!(verify(&k, None, 1), Err(AuthError::Missing));
        assert!(matches!(
            verify(&k, Some("Basic abc"), 1),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            verify(&k, Some("Bearer some-mcp-token"), 1),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            verify(&k, Some("Bearer obx_jit_v1.nosignature"), 1),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            verify(&k, Some("Bearer obx_jit_v1.abc.!!!"), 1),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn a_signed_payload_without_the_claims_is_refused() {
        let t = token(KEY, r#"{"iss": "i", "sub": "s"}"#);
        assert!(matches!(
            verify(&key(), Some(&t), 1),
            Err(AuthError::Payload(_))
        ));
        let t = token(KEY, r#"{"exp": 5, "iss": "", "sub": "s"}"#);
        assert!(matches!(
            verify(&key(), Some(&t), 1),
            Err(AuthError::Payload(_))
        ));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let t = token(KEY, r#"{"exp": 2000, "iss": "i", "sub": "s"}"#);
        let lower = t.replacen("Bearer", "bearer", 1);
        assert!(verify(&key(), Some(&lower), 1).is_ok());
    }
}
