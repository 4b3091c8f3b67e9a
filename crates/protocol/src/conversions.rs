//! Conversions between domain types and generated protobuf types, in one
//! place. A missing or unspecified required field is an error naming the
//! field, never a silent default.

use crate::pb;
use crate::pb::bus;
use crate::{Currency, Money, MoneyError, Operation, Outcome, TransactionKind, TransactionStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("{0}: required field is missing")]
    Missing(&'static str),
    #[error("{field}: {source}")]
    Money {
        field: &'static str,
        source: MoneyError,
    },
    #[error("{0}: unspecified or unknown enum value")]
    BadEnum(&'static str),
}

pub fn money_from_pb(
    field: &'static str,
    money: Option<&pb::Money>,
) -> Result<Money, ConversionError> {
    let money = money.ok_or(ConversionError::Missing(field))?;
    let currency = if money.currency.is_empty() {
        Currency::Idr
    } else {
        Currency::parse(&money.currency)
            .map_err(|source| ConversionError::Money { field, source })?
    };
    if money.minor < 0 {
        return Err(ConversionError::Money {
            field,
            source: MoneyError::Negative,
        });
    }
    Ok(Money {
        minor: money.minor,
        currency,
    })
}

impl From<Money> for pb::Money {
    fn from(money: Money) -> Self {
        pb::Money {
            minor: money.minor,
            currency: money.currency.code().to_string(),
        }
    }
}

impl From<Outcome> for pb::Outcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => pb::Outcome::Success,
            Outcome::Pending => pb::Outcome::Pending,
            Outcome::Failed => pb::Outcome::Failed,
            Outcome::Unknown => pb::Outcome::Unknown,
        }
    }
}

impl TryFrom<pb::Outcome> for Outcome {
    type Error = ConversionError;
    fn try_from(outcome: pb::Outcome) -> Result<Self, Self::Error> {
        match outcome {
            pb::Outcome::Success => Ok(Outcome::Success),
            pb::Outcome::Pending => Ok(Outcome::Pending),
            pb::Outcome::Failed => Ok(Outcome::Failed),
            pb::Outcome::Unknown => Ok(Outcome::Unknown),
            pb::Outcome::Unspecified => Err(ConversionError::BadEnum("outcome")),
        }
    }
}

/// Decodes the raw `i32` of a protobuf enum field.
pub fn outcome_from_i32(value: i32) -> Result<Outcome, ConversionError> {
    pb::Outcome::try_from(value)
        .map_err(|_| ConversionError::BadEnum("outcome"))?
        .try_into()
}

impl From<TransactionStatus> for pb::TransactionStatus {
    fn from(status: TransactionStatus) -> Self {
        match status {
            TransactionStatus::Received => pb::TransactionStatus::Received,
            TransactionStatus::Pending => pb::TransactionStatus::Pending,
            TransactionStatus::Unknown => pb::TransactionStatus::Unknown,
            TransactionStatus::Success => pb::TransactionStatus::Success,
            TransactionStatus::Failed => pb::TransactionStatus::Failed,
            TransactionStatus::NeedsReview => pb::TransactionStatus::NeedsReview,
        }
    }
}

impl TryFrom<pb::TransactionStatus> for TransactionStatus {
    type Error = ConversionError;
    fn try_from(status: pb::TransactionStatus) -> Result<Self, Self::Error> {
        Ok(match status {
            pb::TransactionStatus::Received => TransactionStatus::Received,
            pb::TransactionStatus::Pending => TransactionStatus::Pending,
            pb::TransactionStatus::Unknown => TransactionStatus::Unknown,
            pb::TransactionStatus::Success => TransactionStatus::Success,
            pb::TransactionStatus::Failed => TransactionStatus::Failed,
            pb::TransactionStatus::NeedsReview => TransactionStatus::NeedsReview,
            pb::TransactionStatus::Unspecified => return Err(ConversionError::BadEnum("status")),
        })
    }
}

impl From<Operation> for bus::Operation {
    fn from(operation: Operation) -> Self {
        match operation {
            Operation::PrepaidPurchase => bus::Operation::PrepaidPurchase,
            Operation::PrepaidInquiry => bus::Operation::PrepaidInquiry,
            Operation::BillInquiry => bus::Operation::BillInquiry,
            Operation::BillPayment => bus::Operation::BillPayment,
            Operation::StatusCheck => bus::Operation::StatusCheck,
            Operation::QrPayment => bus::Operation::QrPayment,
            Operation::QrCancel => bus::Operation::QrCancel,
            Operation::QrRefund => bus::Operation::QrRefund,
            Operation::PayIn => bus::Operation::PayIn,
            Operation::PayOut => bus::Operation::PayOut,
        }
    }
}

impl TryFrom<bus::Operation> for Operation {
    type Error = ConversionError;
    fn try_from(operation: bus::Operation) -> Result<Self, Self::Error> {
        Ok(match operation {
            bus::Operation::PrepaidPurchase => Operation::PrepaidPurchase,
            bus::Operation::PrepaidInquiry => Operation::PrepaidInquiry,
            bus::Operation::BillInquiry => Operation::BillInquiry,
            bus::Operation::BillPayment => Operation::BillPayment,
            bus::Operation::StatusCheck => Operation::StatusCheck,
            bus::Operation::QrPayment => Operation::QrPayment,
            bus::Operation::QrCancel => Operation::QrCancel,
            bus::Operation::QrRefund => Operation::QrRefund,
            bus::Operation::PayIn => Operation::PayIn,
            bus::Operation::PayOut => Operation::PayOut,
            bus::Operation::Unspecified => return Err(ConversionError::BadEnum("operation")),
        })
    }
}

/// Decodes the raw `i32` of an operation field.
pub fn operation_from_i32(field: &'static str, value: i32) -> Result<Operation, ConversionError> {
    bus::Operation::try_from(value)
        .map_err(|_| ConversionError::BadEnum(field))?
        .try_into()
        .map_err(|_| ConversionError::BadEnum(field))
}

impl From<TransactionKind> for pb::TransactionKind {
    fn from(kind: TransactionKind) -> Self {
        match kind {
            TransactionKind::PrepaidPurchase => pb::TransactionKind::PrepaidPurchase,
            TransactionKind::PrepaidInquiry => pb::TransactionKind::PrepaidInquiry,
            TransactionKind::BillInquiry => pb::TransactionKind::BillInquiry,
            TransactionKind::BillPayment => pb::TransactionKind::BillPayment,
            TransactionKind::QrPayment => pb::TransactionKind::QrPayment,
            TransactionKind::QrCancel => pb::TransactionKind::QrCancel,
            TransactionKind::QrRefund => pb::TransactionKind::QrRefund,
            TransactionKind::PayIn => pb::TransactionKind::PayIn,
            TransactionKind::PayOut => pb::TransactionKind::PayOut,
        }
    }
}

/// A protobuf timestamp from a chrono time.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A chrono time from a protobuf timestamp; `None` when out of range.
pub fn from_timestamp(at: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(at.seconds, at.nanos.try_into().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_money_names_the_field() {
        assert_eq!(
            money_from_pb("amount", None),
            Err(ConversionError::Missing("amount"))
        );
        let negative = pb::Money {
            minor: -1,
            currency: "IDR".into(),
        };
        assert!(money_from_pb("amount", Some(&negative))
            .unwrap_err()
            .to_string()
            .starts_with("amount"));
    }

    #[test]
    fn unspecified_enums_are_errors() {
        assert!(outcome_from_i32(0).is_err());
        assert!(outcome_from_i32(99).is_err());
        assert_eq!(outcome_from_i32(1), Ok(Outcome::Success));
        assert!(operation_from_i32("operation", 0).is_err());
    }
}
