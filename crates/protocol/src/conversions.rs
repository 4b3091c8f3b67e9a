//! Conversions between domain types and generated protobuf types, in one
//! place. A missing or unspecified required field is an error naming the
//! field, never a silent default. A provider's reported amount is read by
//! one rule wherever it arrives ([`readable_provider_amount`]).

use crate::pb;
use crate::pb::bus;
use crate::review::{self, OperatorDecision};
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
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl ConversionError {
    fn invalid(field: &'static str) -> impl FnOnce(String) -> Self {
        move |problem| ConversionError::Invalid { field, problem }
    }
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

/// A provider's reported amount in minor units, `None` when it reported
/// none, or why it cannot be used. A negative amount is no amount a
/// provider charges (a connector's arithmetic went wrong, or a reply was
/// misread), so it is unreadable: flagged, deciding nothing (money-safety
/// rule 8). Stored, it would break `transactions_provider_amount_not_negative`
/// on every delivery.
pub fn readable_provider_amount(minor: Option<i64>) -> Result<Option<i64>, String> {
    match minor {
        Some(minor) if minor < 0 => Err(format!("{minor} is negative")),
        minor => Ok(minor),
    }
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

/// A required UUID field.
fn uuid_field(field: &'static str, text: &str) -> Result<uuid::Uuid, ConversionError> {
    if text.is_empty() {
        return Err(ConversionError::Missing(field));
    }
    uuid::Uuid::parse_str(text).map_err(|_| {
        ConversionError::invalid(field)(format!(
            "{:?} is not a UUID",
            crate::text::shortened(text, 40)
        ))
    })
}

impl TryFrom<&bus::OperatorDecision> for OperatorDecision {
    type Error = ConversionError;
    fn try_from(message: &bus::OperatorDecision) -> Result<Self, Self::Error> {
        let status = pb::TransactionStatus::try_from(message.status)
            .map_err(|_| ConversionError::BadEnum("status"))?
            .try_into()?;
        let status = review::decided_status(status).map_err(ConversionError::invalid("status"))?;
        let serial_number = match message.serial_number.trim() {
            "" => None,
            serial => {
                review::serial_number_with(status)
                    .map_err(ConversionError::invalid("serial_number"))?;
                Some(
                    review::serial_number(serial)
                        .map_err(ConversionError::invalid("serial_number"))?,
                )
            }
        };
        if message.void_serial_number {
            review::void_serial_number_with(status)
                .map_err(ConversionError::invalid("void_serial_number"))?;
        }
        let decided_at = message
            .decided_at
            .as_ref()
            .ok_or(ConversionError::Missing("decided_at"))?;
        Ok(OperatorDecision {
            event_id: uuid_field("event_id", &message.event_id)?,
            transaction_id: uuid_field("transaction_id", &message.transaction_id)?,
            status,
            reason: review::reason(&message.reason).map_err(ConversionError::invalid("reason"))?,
            operator: review::operator(&message.operator)
                .map_err(ConversionError::invalid("operator"))?,
            serial_number,
            void_serial_number: message.void_serial_number,
            decided_at: from_timestamp(decided_at)
                .ok_or_else(|| ConversionError::invalid("decided_at")("out of range".into()))?,
            seen_event: review::seen_event(message.seen_event)
                .map_err(ConversionError::invalid("seen_event"))?,
        })
    }
}

impl From<&OperatorDecision> for bus::OperatorDecision {
    fn from(decision: &OperatorDecision) -> Self {
        bus::OperatorDecision {
            event_id: decision.event_id.to_string(),
            transaction_id: decision.transaction_id.to_string(),
            status: pb::TransactionStatus::from(decision.status) as i32,
            reason: decision.reason.clone(),
            operator: decision.operator.clone(),
            serial_number: decision.serial_number.clone().unwrap_or_default(),
            void_serial_number: decision.void_serial_number,
            decided_at: Some(timestamp(decision.decided_at)),
            seen_event: decision.seen_event,
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
    fn a_negative_provider_amount_is_unreadable_and_names_the_amount() {
        assert_eq!(readable_provider_amount(None), Ok(None));
        assert_eq!(readable_provider_amount(Some(0)), Ok(Some(0)));
        assert_eq!(readable_provider_amount(Some(1_500)), Ok(Some(1_500)));
        assert_eq!(
            readable_provider_amount(Some(-500)),
            Err("-500 is negative".to_string())
        );
    }

    fn decision() -> bus::OperatorDecision {
        bus::OperatorDecision {
            event_id: "0191aaaa-bbbb-7ccc-8ddd-eeeeffff0001".into(),
            transaction_id: "0191aaaa-bbbb-7ccc-8ddd-eeeeffff0002".into(),
            status: pb::TransactionStatus::Success as i32,
            reason: " OkeBayar confirmed delivery (ticket 42) ".into(),
            operator: "siti".into(),
            serial_number: "5123-4123-45".into(),
            decided_at: Some(timestamp(chrono::DateTime::UNIX_EPOCH)),
            seen_event: 41,
            void_serial_number: false,
        }
    }

    #[test]
    fn an_operator_decision_round_trips_and_bad_fields_are_named() {
        let checked = OperatorDecision::try_from(&decision()).unwrap();
        assert_eq!(checked.reason, "OkeBayar confirmed delivery (ticket 42)");
        assert_eq!(checked.status, TransactionStatus::Success);
        assert_eq!(checked.serial_number.as_deref(), Some("5123-4123-45"));
        let again = bus::OperatorDecision::from(&checked);
        assert_eq!(OperatorDecision::try_from(&again), Ok(checked));

        let refused = |change: fn(&mut bus::OperatorDecision)| {
            let mut message = decision();
            change(&mut message);
            OperatorDecision::try_from(&message)
                .unwrap_err()
                .to_string()
        };
        assert!(refused(|m| m.event_id.clear()).starts_with("event_id: required"));
        assert!(refused(|m| m.event_id = "cmd:1".into()).starts_with("event_id: "));
        assert!(refused(|m| m.transaction_id = "x".into()).starts_with("transaction_id: "));
        assert!(refused(|m| m.status = 0).starts_with("status: "));
        assert!(
            refused(|m| m.status = pb::TransactionStatus::Pending as i32).starts_with("status: ")
        );
        assert!(
            refused(|m| m.status = pb::TransactionStatus::NeedsReview as i32)
                .starts_with("status: ")
        );
        assert!(refused(|m| m.reason = " ".into()).starts_with("reason: required"));
        assert!(refused(|m| m.reason = "x".repeat(501)).starts_with("reason: at most 500"));
        assert!(refused(|m| m.operator.clear()).starts_with("operator: required"));
        assert!(refused(|m| m.operator = "x".repeat(65)).starts_with("operator: "));
        assert!(refused(|m| m.decided_at = None).starts_with("decided_at: required"));
        assert!(refused(|m| m.seen_event = 0).starts_with("seen_event: required"));
        assert!(refused(|m| m.seen_event = -3).starts_with("seen_event: "));
        assert!(refused(|m| m.status = pb::TransactionStatus::Failed as i32)
            .starts_with("serial_number: only with success"));
        let mut failed = decision();
        failed.status = pb::TransactionStatus::Failed as i32;
        failed.serial_number.clear();
        assert_eq!(
            OperatorDecision::try_from(&failed).unwrap().serial_number,
            None
        );
        failed.void_serial_number = true;
        let voided = OperatorDecision::try_from(&failed).unwrap();
        assert!(voided.void_serial_number);
        assert_eq!(
            OperatorDecision::try_from(&bus::OperatorDecision::from(&voided)),
            Ok(voided)
        );
        assert!(refused(|m| {
            m.serial_number.clear();
            m.void_serial_number = true;
        })
        .starts_with("void_serial_number: only with failed"));
    }

    #[test]
    fn unspecified_enums_are_errors() {
        assert!(outcome_from_i32(0).is_err());
        assert!(outcome_from_i32(99).is_err());
        assert_eq!(outcome_from_i32(1), Ok(Outcome::Success));
        assert!(operation_from_i32("operation", 0).is_err());
    }
}
