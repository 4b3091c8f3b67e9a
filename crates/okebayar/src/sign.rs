//! OkeBayar's request signature: `hex(MD5(userid + userpin + referencecode))`,
//! plain concatenation, UTF-8, lower-case hex (spec §2). It covers neither
//! amount nor product, and the PIN travels in the body: both are masked in
//! every stored exchange.

use md5::{Digest, Md5};

pub fn signature(userid: &str, userpin: &str, referencecode: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(userid.as_bytes());
    hasher.update(userpin.as_bytes());
    hasher.update(referencecode.as_bytes());
    hex::encode(hasher.finalize())
}

/// Constant-time comparison of a received signature with the expected one,
/// as sent: spec §2 has it in lower-case hex, and the provider (ASSUMED)
/// compares the text exactly, so upper case or surrounding spaces fail.
pub fn verify(userid: &str, userpin: &str, referencecode: &str, received: &str) -> bool {
    let expected = signature(userid, userpin, referencecode);
    expected.len() == received.len()
        && expected
            .bytes()
            .zip(received.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_from_the_spec() {
        assert_eq!(
            signature("pcu00001", "123456", "ORD20250115000001"),
            "c684d40b4e003ffaf56407fb73624383"
        );
    }

    #[test]
    fn verify_takes_the_lower_case_signature_as_sent_and_nothing_else() {
        let right = "c684d40b4e003ffaf56407fb73624383";
        assert!(verify("pcu00001", "123456", "ORD20250115000001", right));
        for wrong in [
            "C684D40B4E003FFAF56407FB73624383".to_string(),
            format!(" {right}"),
            format!("{right} "),
        ] {
            assert!(
                !verify("pcu00001", "123456", "ORD20250115000001", &wrong),
                "{wrong:?}"
            );
        }
        assert!(!verify(
            "pcu00001",
            "123456",
            "ORD20250115000001",
            "c684d40b4e003ffaf56407fb73624384"
        ));
        assert!(!verify("pcu00001", "123456", "ORD20250115000001", ""));
    }
}
