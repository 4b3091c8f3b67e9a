//! Signing primitives more than one provider uses: RSA keys (loaded from
//! PEM, base64 DER or a file holding either; generated for tests and demos),
//! SHA256withRSA signatures in base64, and the exact-bytes JSON minifier that
//! signature recipes hash (whitespace outside strings removed, nothing
//! re-serialized). Provider crates build their own strings to sign on top.
//! Nothing here logs, and no error carries key material.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

/// Why a key could not be loaded. Never contains the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key configured")]
    Missing,
    #[error("key is neither PEM, base64 DER nor a readable file holding one ({0})")]
    Unreadable(String),
}

/// Removes whitespace outside JSON strings, and `//…` / `/*…*/` comments
/// (as the SDK minifier does). Key order and string contents — escapes
/// included — are kept byte for byte.
pub fn minify(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    let mut in_string = false;
    while i < body.len() {
        let b = body[i];
        if in_string {
            out.push(b);
            if b == b'\\' {
                if let Some(&next) = body.get(i + 1) {
                    out.push(next);
                    i += 1;
                }
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'/' if body.get(i + 1) == Some(&b'/') => {
                while i < body.len() && body[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if body.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < body.len() && !(body[i] == b'*' && body[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
                continue;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// Base64(RSASSA-PKCS1-v1_5-SHA256(key, message)).
pub fn rsa_sha256_sign(key: &RsaPrivateKey, message: &[u8]) -> String {
    let signing = SigningKey::<Sha256>::new(key.clone());
    STANDARD.encode(signing.sign(message).to_bytes())
}

/// Verifies a Base64 SHA256withRSA signature; any decoding problem is `false`.
pub fn rsa_sha256_verify(key: &RsaPublicKey, message: &[u8], signature_b64: &str) -> bool {
    let Ok(bytes) = STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(message, &signature)
        .is_ok()
}

fn looks_like_pem(text: &str) -> bool {
    text.trim_start().starts_with("-----BEGIN")
}

fn b64_der(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 64 {
        return None;
    }
    STANDARD.decode(compact).ok()
}

fn read_path(text: &str) -> Result<String, KeyError> {
    std::fs::read_to_string(text.trim())
        .map_err(|e| KeyError::Unreadable(format!("file: {}", e.kind())))
}

/// A key given inline (`direct` parses it) or as a path to a file holding
/// one; `which` ("private"/"public") names it in errors.
fn load_key<K>(text: &str, direct: fn(&str) -> Option<K>, which: &str) -> Result<K, KeyError> {
    if text.trim().is_empty() {
        return Err(KeyError::Missing);
    }
    if let Some(key) = direct(text) {
        return Ok(key);
    }
    if looks_like_pem(text) {
        return Err(KeyError::Unreadable(format!(
            "PEM is not an RSA {which} key"
        )));
    }
    let contents = read_path(text)?;
    direct(&contents).ok_or_else(|| KeyError::Unreadable(format!("file holds no RSA {which} key")))
}

/// A private key from PKCS#8 PEM, PKCS#1 PEM, base64 PKCS#8 DER, or a path
/// to a file holding one of those.
pub fn load_private_key(text: &str) -> Result<RsaPrivateKey, KeyError> {
    fn direct(text: &str) -> Option<RsaPrivateKey> {
        if looks_like_pem(text) {
            let text = text.trim();
            return RsaPrivateKey::from_pkcs8_pem(text)
                .ok()
                .or_else(|| RsaPrivateKey::from_pkcs1_pem(text).ok());
        }
        let der = b64_der(text)?;
        RsaPrivateKey::from_pkcs8_der(&der)
            .ok()
            .or_else(|| RsaPrivateKey::from_pkcs1_der(&der).ok())
    }
    load_key(text, direct, "private")
}

/// A public key from SPKI / PKCS#1 PEM, base64 SPKI DER, or a path to a file
/// holding one of those.
pub fn load_public_key(text: &str) -> Result<RsaPublicKey, KeyError> {
    fn direct(text: &str) -> Option<RsaPublicKey> {
        if looks_like_pem(text) {
            let text = text.trim();
            return RsaPublicKey::from_public_key_pem(text)
                .ok()
                .or_else(|| RsaPublicKey::from_pkcs1_pem(text).ok());
        }
        let der = b64_der(text)?;
        RsaPublicKey::from_public_key_der(&der)
            .ok()
            .or_else(|| RsaPublicKey::from_pkcs1_der(&der).ok())
    }
    load_key(text, direct, "public")
}

/// A freshly generated RSA-2048 pair as (PKCS#8 private PEM, SPKI public PEM),
/// for tests, simulators and `make run` (no key is ever committed).
pub fn generate_key_pair() -> (String, String) {
    let mut rng = rand::thread_rng();
    let key = RsaPrivateKey::new(&mut rng, 2048).expect("RSA-2048 generation");
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 encoding")
        .to_string();
    let public = RsaPublicKey::from(&key)
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI encoding");
    (private, public)
}
