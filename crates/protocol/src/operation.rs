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
}

impl Operation {
    /// The token used in subjects (`loket.cmd.<provider>.<token>`) and rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::PrepaidPurchase => "purchase",
            Operation::PrepaidInquiry => "prepaid_inquiry",
            Operation::BillInquiry => "bill_inquiry",
            Operation::BillPayment => "bill_payment",
            Operation::StatusCheck => "status",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Operation::PrepaidPurchase,
            Operation::PrepaidInquiry,
            Operation::BillInquiry,
            Operation::BillPayment,
            Operation::StatusCheck,
        ]
        .into_iter()
        .find(|op| op.as_str() == text)
    }

    /// A money-moving request must never be sent twice while its outcome is
    /// unknown (money-safety rule 2).
    pub fn moves_money(self) -> bool {
        matches!(self, Operation::PrepaidPurchase | Operation::BillPayment)
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
}

impl TransactionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::PrepaidPurchase => "prepaid_purchase",
            TransactionKind::PrepaidInquiry => "prepaid_inquiry",
            TransactionKind::BillInquiry => "bill_inquiry",
            TransactionKind::BillPayment => "bill_payment",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            TransactionKind::PrepaidPurchase,
            TransactionKind::PrepaidInquiry,
            TransactionKind::BillInquiry,
            TransactionKind::BillPayment,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }

    pub fn operation(self) -> Operation {
        match self {
            TransactionKind::PrepaidPurchase => Operation::PrepaidPurchase,
            TransactionKind::PrepaidInquiry => Operation::PrepaidInquiry,
            TransactionKind::BillInquiry => Operation::BillInquiry,
            TransactionKind::BillPayment => Operation::BillPayment,
        }
    }
}
