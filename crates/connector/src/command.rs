//! The validated command a connector works on (from a bus
//! [`Command`](loket_protocol::pb::bus::Command)).

use chrono::{DateTime, Utc};
use loket_protocol::conversions::{
    from_timestamp, money_from_pb, operation_from_i32, ConversionError,
};
use loket_protocol::pb::bus;
use loket_protocol::{Money, Operation, Provider};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub transaction_id: String,
    pub provider: Provider,
    pub operation: Operation,
    pub provider_reference: String,
    pub provider_product_code: String,
    pub account: String,
    pub account2: String,
    pub account3: String,
    pub contact: String,
    pub amount: Option<Money>,
    pub inquiry_data: BTreeMap<String, String>,
    /// For a status check: the operation it is about.
    pub original_operation: Operation,
    pub provider_trace: String,
    pub first_dispatch: bool,
    /// Set by the worker on the send itself when the send journal shows no
    /// earlier send of this transaction ([`crate::journal::Recorded::First`]):
    /// a provider's "already done" then cannot be our own earlier attempt.
    /// Never on the bus; false everywhere else.
    pub first_send: bool,
    /// Set by the worker on a money-moving send, and on a status check that
    /// sends its request again: the moment just before the send journal
    /// recorded it. Other workers take a send recorded less than
    /// [`Connector::longest_send`](crate::Connector::longest_send) ago as
    /// possibly still on its way, so no request of this send may be in flight
    /// after then + `longest_send`; a connector whose request can be held up
    /// before it leaves (a token wait, a step ahead of it) checks this.
    /// Never on the bus; `None` everywhere else.
    pub journal_recorded: Option<std::time::Instant>,
    /// Cancels and refunds: our reference of the original payment.
    pub original_reference: String,
    /// Cancels and refunds: the provider's reference of the original payment.
    pub original_provider_trace: String,
    /// Provider-specific, non-secret parameters (`qr_content`, `method`,
    /// `payer_name`, `payer_phone`, `payer_email`, `receiver_name`,
    /// `purpose`, `expiry_seconds`, `reason`).
    pub details: BTreeMap<String, String>,
    /// When the transaction was created (from an older publisher that does
    /// not send it: the time in the UUIDv7 transaction id; unknown for any
    /// other id): money-moving requests are sent only within
    /// [`SEND_HORIZON`](loket_protocol::horizon::SEND_HORIZON) of it.
    pub transaction_created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("undecodable command: {0}")]
    Decode(String),
    #[error("invalid command: {0}")]
    Invalid(String),
}

impl From<ConversionError> for CommandError {
    fn from(error: ConversionError) -> Self {
        CommandError::Invalid(error.to_string())
    }
}

impl TryFrom<bus::Command> for Command {
    type Error = CommandError;

    fn try_from(command: bus::Command) -> Result<Self, Self::Error> {
        let require = |field: &'static str, value: &str| {
            if value.trim().is_empty() {
                Err(CommandError::Invalid(format!(
                    "{field}: required field is missing"
                )))
            } else {
                Ok(())
            }
        };
        require("transaction_id", &command.transaction_id)?;
        if uuid::Uuid::parse_str(&command.transaction_id).is_err() {
            // The journal keys sends by it: a command it cannot record
            // could never be sent, only handed back forever.
            return Err(CommandError::Invalid(
                "transaction_id: not a UUID".to_string(),
            ));
        }
        require("provider_reference", &command.provider_reference)?;
        let provider = Provider::parse(&command.provider)
            .map_err(|error| CommandError::Invalid(format!("provider: {error}")))?;
        let operation = operation_from_i32("operation", command.operation)?;
        let original_operation = if operation == Operation::StatusCheck {
            operation_from_i32("original_operation", command.original_operation)?
        } else {
            operation
        };
        let amount = match command.amount.as_ref() {
            Some(_) => Some(money_from_pb("amount", command.amount.as_ref())?),
            None => None,
        };
        let transaction_created_at = command
            .transaction_created_at
            .as_ref()
            .and_then(from_timestamp)
            .or_else(|| created_at_of(&command.transaction_id));
        Ok(Command {
            transaction_id: command.transaction_id,
            provider,
            operation,
            provider_reference: command.provider_reference,
            provider_product_code: command.provider_product_code,
            account: command.account,
            account2: command.account2,
            account3: command.account3,
            contact: command.contact,
            amount,
            inquiry_data: command.inquiry_data.into_iter().collect(),
            original_operation,
            provider_trace: command.provider_trace,
            first_dispatch: command.first_dispatch,
            first_send: false,
            journal_recorded: None,
            original_reference: command.original_reference,
            original_provider_trace: command.original_provider_trace,
            details: command.details.into_iter().collect(),
            transaction_created_at,
        })
    }
}

/// The creation time a UUIDv7 transaction id carries (every id the ingress
/// makes is one), for commands from publishers that do not send
/// `transaction_created_at`.
fn created_at_of(transaction_id: &str) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = uuid::Uuid::parse_str(transaction_id)
        .ok()?
        .get_timestamp()?
        .to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
}

impl Command {
    /// A provider-specific parameter, empty when absent.
    pub fn detail(&self, key: &str) -> &str {
        self.details
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The same command turned into a status check about its operation.
    pub fn as_status_check(&self) -> Command {
        Command {
            operation: Operation::StatusCheck,
            original_operation: self.original_operation,
            first_send: false,
            journal_recorded: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase(transaction_id: &str) -> bus::Command {
        bus::Command {
            transaction_id: transaction_id.into(),
            provider: "okebayar".into(),
            operation: bus::Operation::PrepaidPurchase as i32,
            provider_reference: "R1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_creation_time_comes_from_the_command_else_from_a_v7_id() {
        let sent = Utc::now() - chrono::Duration::hours(3);
        let mut with_time = purchase(&uuid::Uuid::now_v7().to_string());
        with_time.transaction_created_at = Some(loket_protocol::conversions::timestamp(sent));
        let command = Command::try_from(with_time).unwrap();
        assert_eq!(command.transaction_created_at, Some(sent));

        let v7 = uuid::Uuid::now_v7();
        let command = Command::try_from(purchase(&v7.to_string())).unwrap();
        let age = Utc::now() - command.transaction_created_at.unwrap();
        assert!(
            age >= chrono::Duration::zero() && age < chrono::Duration::seconds(5),
            "{age}"
        );

        let v4 = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            Command::try_from(purchase(&v4))
                .unwrap()
                .transaction_created_at,
            None
        );
    }

    /// The journal keys sends by the transaction id: a command whose id it
    /// cannot take is poison (terminated), not handed back forever.
    #[test]
    fn a_transaction_id_that_is_not_a_uuid_is_invalid_naming_it() {
        for id in ["T-1", "", "0190f0aa-0000-7000-8000"] {
            let error = Command::try_from(purchase(id)).unwrap_err();
            assert!(
                matches!(&error, CommandError::Invalid(why) if why.starts_with("transaction_id:")),
                "{id}: {error}"
            );
        }
    }
}
