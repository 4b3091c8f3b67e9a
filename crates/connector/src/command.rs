//! The validated command a connector works on (from a bus
//! [`Command`](loket_protocol::pb::bus::Command)).

use loket_protocol::conversions::{money_from_pb, operation_from_i32, ConversionError};
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
    /// Cancels and refunds: our reference of the original payment.
    pub original_reference: String,
    /// Cancels and refunds: the provider's reference of the original payment.
    pub original_provider_trace: String,
    /// Provider-specific, non-secret parameters (`qr_content`, `method`,
    /// `payer_name`, `payer_phone`, `payer_email`, `receiver_name`,
    /// `purpose`, `expiry_seconds`, `reason`).
    pub details: BTreeMap<String, String>,
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
            original_reference: command.original_reference,
            original_provider_trace: command.original_provider_trace,
            details: command.details.into_iter().collect(),
        })
    }
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
            ..self.clone()
        }
    }
}
