//! What a catalogue product is sold as: the `products.kind` column, shared
//! by the ingress (which routes calls by it) and `loketctl products` (which
//! validates the file operators edit); and which products are BPJS bills,
//! billed by the month, with the months such a bill may name, shared by the
//! ingress (which validates inquiries by it) and the OkeBayar simulator
//! (which answers them).

use crate::Provider;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    Prepaid,
    PlnPrepaid,
    Postpaid,
    /// SNAP QR CPM payments (`QrPay`; the request carries the amount);
    /// cancels and refunds follow the payment.
    QrCpm,
    /// Smilepayz collection (`PayIn`; the request carries the amount).
    PayIn,
    /// Smilepayz disbursement (`PayOut`; the request carries the amount).
    PayOut,
}

impl ProductKind {
    pub const ALL: [ProductKind; 6] = [
        ProductKind::Prepaid,
        ProductKind::PlnPrepaid,
        ProductKind::Postpaid,
        ProductKind::QrCpm,
        ProductKind::PayIn,
        ProductKind::PayOut,
    ];

    /// The name in the `products.kind` column and the catalogue file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductKind::Prepaid => "prepaid",
            ProductKind::PlnPrepaid => "pln_prepaid",
            ProductKind::Postpaid => "postpaid",
            ProductKind::QrCpm => "qr_cpm",
            ProductKind::PayIn => "pay_in",
            ProductKind::PayOut => "pay_out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether a product of this kind has a fixed price in the catalogue
    /// (required), or must not have one (the bill or the request decides).
    pub fn is_priced(self) -> bool {
        matches!(self, ProductKind::Prepaid | ProductKind::PlnPrepaid)
    }

    /// The one provider that offers this kind, if only one does.
    pub fn only_provider(self) -> Option<Provider> {
        match self {
            ProductKind::QrCpm => Some(Provider::SnapQr),
            ProductKind::PayIn | ProductKind::PayOut => Some(Provider::Smilepayz),
            ProductKind::Prepaid | ProductKind::PlnPrepaid | ProductKind::Postpaid => None,
        }
    }

    /// The gRPC call a client uses for products of this kind (for messages).
    pub fn call(self) -> &'static str {
        match self {
            ProductKind::Prepaid => "Purchase",
            ProductKind::PlnPrepaid => "Inquire, then Purchase",
            ProductKind::Postpaid => "Inquire, then PayBill",
            ProductKind::QrCpm => "QrPay",
            ProductKind::PayIn => "PayIn",
            ProductKind::PayOut => "PayOut",
        }
    }
}

/// How a BPJS product's provider product code starts, in any case.
/// ASSUMED: OkeBayar's spec lists no product codes and the catalogue has no
/// column saying a product is BPJS; loket's catalogue seeds `BPJSKS`
/// (`deploy/products.toml`).
const BPJS_CODE_PREFIX: &str = "BPJS";

/// Whether a provider product code is a BPJS bill's, billed by the month
/// (OkeBayar spec §4): its inquiry names the months to pay (`accnumber3`)
/// and the payer's phone (`contactnumber`).
pub fn is_bpjs_product_code(code: &str) -> bool {
    code.get(..BPJS_CODE_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(BPJS_CODE_PREFIX))
}

/// The number of months a BPJS inquiry names (OkeBayar spec §4: 1 to 12),
/// or `None` when the text names none. Digits only, since Rust's parse
/// would read `+3` as 3.
pub fn bpjs_months(text: &str) -> Option<u8> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|months| (1..=12).contains(months))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BPJS bill is known by the start of its provider product code, in
    /// any case; a code merely containing `BPJS`, a shorter one, or one whose
    /// fourth byte is inside a character (no panic) is not.
    #[test]
    fn a_bpjs_product_code_starts_with_bpjs() {
        for bpjs in ["BPJSKS", "bpjsks", "BPJS", "BpjsTK"] {
            assert!(is_bpjs_product_code(bpjs), "{bpjs}");
        }
        for other in ["PLNPOST", "TELKOMPSTN", "KSBPJS", "BPJ", "", "BPJé"] {
            assert!(!is_bpjs_product_code(other), "{other}");
        }
    }

    #[test]
    fn bpjs_months_are_1_to_12_in_digits_only() {
        for (text, months) in [("1", 1), ("3", 3), ("12", 12), ("03", 3)] {
            assert_eq!(bpjs_months(text), Some(months), "{text}");
        }
        for bad in ["", "0", "13", "256", "x", "-1", "+3", " 3", "1.5"] {
            assert_eq!(bpjs_months(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in ProductKind::ALL {
            assert_eq!(ProductKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ProductKind::parse("PREPAID"), None);
    }
}
