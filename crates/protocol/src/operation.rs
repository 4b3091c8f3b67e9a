//! What a connector is asked to do, and which of those move money.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    PrepaidPurchase,
    PrepaidInquiry,
    BillInquiry,
    BillPayment,
    StatusCheck,
    QrPayment,
    QrCancel,
    QrRefund,
    PayIn,
    PayOut,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::PrepaidPurchase,
        Operation::PrepaidInquiry,
        Operation::BillInquiry,
        Operation::BillPayment,
        Operation::StatusCheck,
        Operation::QrPayment,
        Operation::QrCancel,
        Operation::QrRefund,
        Operation::PayIn,
        Operation::PayOut,
    ];

    /// The token used in subjects (`loket.cmd.<provider>.<token>`) and rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::PrepaidPurchase => "purchase",
            Operation::PrepaidInquiry => "prepaid_inquiry",
            Operation::BillInquiry => "bill_inquiry",
            Operation::BillPayment => "bill_payment",
            Operation::StatusCheck => "status",
            Operation::QrPayment => "qr_payment",
            Operation::QrCancel => "qr_cancel",
            Operation::QrRefund => "qr_refund",
            Operation::PayIn => "pay_in",
            Operation::PayOut => "pay_out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// A money-moving request must never be sent twice while its outcome is
    /// unknown (money-safety rule 2). Inquiries and status checks are the
    /// only operations that may be repeated freely; a pay-in counts as
    /// money-moving because a second order could be paid twice.
    pub fn moves_money(self) -> bool {
        !matches!(
            self,
            Operation::PrepaidInquiry | Operation::BillInquiry | Operation::StatusCheck
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client asked for; decides which operation the first command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    PrepaidPurchase,
    PrepaidInquiry,
    BillInquiry,
    BillPayment,
    QrPayment,
    QrCancel,
    QrRefund,
    PayIn,
    PayOut,
}

impl TransactionKind {
    pub const ALL: [TransactionKind; 9] = [
        TransactionKind::PrepaidPurchase,
        TransactionKind::PrepaidInquiry,
        TransactionKind::BillInquiry,
        TransactionKind::BillPayment,
        TransactionKind::QrPayment,
        TransactionKind::QrCancel,
        TransactionKind::QrRefund,
        TransactionKind::PayIn,
        TransactionKind::PayOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::PrepaidPurchase => "prepaid_purchase",
            TransactionKind::PrepaidInquiry => "prepaid_inquiry",
            TransactionKind::BillInquiry => "bill_inquiry",
            TransactionKind::BillPayment => "bill_payment",
            TransactionKind::QrPayment => "qr_payment",
            TransactionKind::QrCancel => "qr_cancel",
            TransactionKind::QrRefund => "qr_refund",
            TransactionKind::PayIn => "pay_in",
            TransactionKind::PayOut => "pay_out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub fn operation(self) -> Operation {
        match self {
            TransactionKind::PrepaidPurchase => Operation::PrepaidPurchase,
            TransactionKind::PrepaidInquiry => Operation::PrepaidInquiry,
            TransactionKind::BillInquiry => Operation::BillInquiry,
            TransactionKind::BillPayment => Operation::BillPayment,
            TransactionKind::QrPayment => Operation::QrPayment,
            TransactionKind::QrCancel => Operation::QrCancel,
            TransactionKind::QrRefund => Operation::QrRefund,
            TransactionKind::PayIn => Operation::PayIn,
            TransactionKind::PayOut => Operation::PayOut,
        }
    }
}
