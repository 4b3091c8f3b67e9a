//! SNAP signatures (spec §4): the B2B token signature (SHA256withRSA over
//! `clientKey|timestamp`), the transaction signature (HMAC-SHA512 over
//! `METHOD:path:token:lowerhex(sha256(minify(body))):timestamp`), and the
//! notify signatures (mode A: RSA over `METHOD:path:hash:timestamp`; mode B:
//! as a transaction). Bodies are hashed from the exact bytes sent, minified
//! by removing whitespace outside strings — never re-serialized, so key
//! order, escapes (`\/`, `\uXXXX`) and `null` stay as they were.
//!
//! Keys are PEM text, base64 DER or a path to a file holding either. Nothing
//! here logs or formats a key, a secret or a signature.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256, Sha512};

/// Keys, SHA256withRSA and the exact-bytes minifier are shared with every
/// provider (`loket_connector::signing`).
pub use loket_connector::signing::{
    generate_key_pair, load_private_key, load_public_key, minify, KeyError,
};

/// `lowerhex(SHA-256(minify(body)))`; an empty body hashes as `""` (Q4).
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(minify(body)))
}

/// §4.1: `clientKey|timestamp`.
pub fn token_string_to_sign(client_key: &str, timestamp: &str) -> String {
    format!("{client_key}|{timestamp}")
}

/// §4.2: `METHOD:path:token:hash:timestamp` (the token without `Bearer `).
pub fn transaction_string_to_sign(
    method: &str,
    path: &str,
    access_token: &str,
    body: &[u8],
    timestamp: &str,
) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        method.to_ascii_uppercase(),
        path,
        access_token,
        body_hash(body),
        timestamp
    )
}

/// §4.3 mode A: `METHOD:path:hash:timestamp`.
pub fn notify_string_to_sign(method: &str, path: &str, body: &[u8], timestamp: &str) -> String {
    format!(
        "{}:{}:{}:{}",
        method.to_ascii_uppercase(),
        path,
        body_hash(body),
        timestamp
    )
}

type HmacSha512 = Hmac<Sha512>;

/// `Base64(HMAC-SHA512(secret, stringToSign))`.
pub fn hmac_signature(secret: &str, string_to_sign: &str) -> String {
    let mut mac = HmacSha512::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Constant-time check of a received base64 HMAC-SHA512 signature.
pub fn verify_hmac(secret: &str, string_to_sign: &str, received: &str) -> bool {
    let Ok(received) = STANDARD.decode(received.trim()) else {
        return false;
    };
    let mut mac = HmacSha512::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&received).is_ok()
}

/// `Base64(RSASSA-PKCS1-v1_5-SHA256(key, message))` over a SNAP string to sign.
pub fn rsa_sign(key: &RsaPrivateKey, message: &str) -> String {
    loket_connector::signing::rsa_sha256_sign(key, message.as_bytes())
}

/// Verifies a base64 SHA256withRSA signature over a SNAP string to sign.
pub fn rsa_verify(key: &RsaPublicKey, message: &str, received: &str) -> bool {
    loket_connector::signing::rsa_sha256_verify(key, message.as_bytes(), received)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"partnerReferenceNo":"2020102900000000000001","qrContent":"hduvY...","amount":{"value":"10000.00","currency":"IDR"},"merchantId":"00007100010926","expiryTime":"2020-12-23T08:04:11+07:00"}"#;
    const TOKEN: &str = "gp9HjjEj813Y9JGoqwOeOPWbnt4CUpvIJbU1mMU4a11MNDZ7Sg5u9a";
    const TIMESTAMP: &str = "2020-12-23T07:54:11+07:00";

    #[test]
    fn worked_example_of_spec_4_4_reproduces_exactly() {
        let input = transaction_string_to_sign(
            "post",
            "/v1.0/qr/qr-cpm-payment",
            TOKEN,
            BODY.as_bytes(),
            TIMESTAMP,
        );
        assert_eq!(
            input,
            "POST:/v1.0/qr/qr-cpm-payment:gp9HjjEj813Y9JGoqwOeOPWbnt4CUpvIJbU1mMU4a11MNDZ7Sg5u9a:356ccd9a4f5332a6b3114aa6dfe38e33c6bf4ba73b16055ea4f48edd57e48909:2020-12-23T07:54:11+07:00"
        );
        let signature = hmac_signature("sim-client-secret-qrcpm-0001", &input);
        assert_eq!(
            signature,
            "YwCWxlcCHnT2kRNYG+Y48bkk4x0MeKSf7y7T8PpEwHzqObzukbqldxK8CToZP/Ni1T9fiAQw1cd1n03aK02GKg=="
        );
        assert!(verify_hmac(
            "sim-client-secret-qrcpm-0001",
            &input,
            &signature
        ));
        assert!(!verify_hmac(
            "sim-client-secret-qrcpm-0002",
            &input,
            &signature
        ));
        // Pretty-printed, the same body hashes the same (whitespace outside strings).
        let pretty = BODY.replace(",\"", ",\n  \"").replace(":{", ": {");
        assert_eq!(body_hash(pretty.as_bytes()), body_hash(BODY.as_bytes()));
    }

    #[test]
    fn minify_keeps_strings_escapes_order_and_null() {
        let raw = br#"{ "b" : "x y\" z" , "a":null, "c" : "a\/b \u00e9" }"#;
        assert_eq!(
            minify(raw),
            br#"{"b":"x y\" z","a":null,"c":"a\/b \u00e9"}"#.to_vec()
        );
        assert_eq!(
            body_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // A re-serialized body (escape dropped) hashes differently.
        assert_ne!(body_hash(br#"{"c":"a\/b"}"#), body_hash(br#"{"c":"a/b"}"#));
    }

    #[test]
    fn rsa_round_trip_and_a_flipped_byte_fails() {
        let (private_pem, public_pem) = generate_key_pair();
        let private = load_private_key(&private_pem).unwrap();
        let public = load_public_key(&public_pem).unwrap();
        let message = token_string_to_sign("partner-1", TIMESTAMP);
        let signature = rsa_sign(&private, &message);
        assert!(rsa_verify(&public, &message, &signature));
        assert!(!rsa_verify(&public, &format!("{message}x"), &signature));
        let mut bytes = STANDARD.decode(&signature).unwrap();
        bytes[17] ^= 0x01;
        assert!(!rsa_verify(&public, &message, &STANDARD.encode(&bytes)));
        assert!(!rsa_verify(&public, &message, "not base64!"));
        // Path loading works too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, &private_pem).unwrap();
        assert!(load_private_key(path.to_str().unwrap()).is_ok());
        let error =
            load_private_key("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")
                .unwrap_err();
        assert!(!error.to_string().contains("nope"));
    }
}
