//! What a catalogue product is sold as: the `products.kind` column, shared
//! by the ingress (which routes calls by it) and `loketctl products` (which
//! validates the file operators edit).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in ProductKind::ALL {
            assert_eq!(ProductKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ProductKind::parse("PREPAID"), None);
    }
}
