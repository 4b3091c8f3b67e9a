//! Provider code meanings from `loket_protocol::catalogue`: the
//! `ExplainCode` / `ListCodes` calls and the `explanation` of every
//! transaction the ingress returns.

use loket_protocol::catalogue::{self, CodeOperation, ExplainError};
use loket_protocol::{pb, Provider, TransactionKind, TransactionStatus};

use crate::errors::ApiError;
use crate::validate::{self, shortened, ValidationError};

fn explain_error(error: ExplainError) -> ApiError {
    let field = match &error {
        ExplainError::EmptyCode | ExplainError::BadFormat { .. } => "code",
        ExplainError::UnsupportedOperation { .. } => "operation",
    };
    ApiError::InvalidArgument(ValidationError::new(field, error.to_string()))
}

/// `ExplainCode`: the provider may be omitted when the code's shape names it.
pub fn explain_code(request: &pb::ExplainCodeRequest) -> Result<pb::CodeExplanation, ApiError> {
    let code = request.code.trim();
    if code.is_empty() {
        return Err(ApiError::invalid("code", "required"));
    }
    if code.len() > 32 {
        return Err(ApiError::invalid("code", "at most 32 characters"));
    }
    let provider = if request.provider.trim().is_empty() {
        catalogue::guess_provider(code).ok_or_else(|| {
            ApiError::invalid(
                "provider",
                format!(
                    "required: code {:?} does not name its provider",
                    shortened(code, 32)
                ),
            )
        })?
    } else {
        validate::provider(&request.provider)?
    };
    let operation = if request.operation.trim().is_empty() {
        None
    } else {
        Some(CodeOperation::parse(&request.operation).ok_or_else(|| {
            ApiError::invalid(
                "operation",
                catalogue::UnknownOperation(shortened(&request.operation, 32)).to_string(),
            )
        })?)
    };
    let explanation = catalogue::explain(provider, code, operation).map_err(explain_error)?;
    Ok(pb::CodeExplanation::from(&explanation))
}

/// `ListCodes`: one provider's whole table.
pub fn list_codes(request: &pb::ListCodesRequest) -> Result<pb::ListCodesResponse, ApiError> {
    let provider = validate::provider(&request.provider)?;
    Ok(pb::ListCodesResponse {
        codes: catalogue::codes(provider)
            .iter()
            .map(pb::CodeExplanation::from)
            .collect(),
    })
}

/// Fills `transaction.explanation` from its provider code, if it has one
/// and its outcome agrees with the transaction's status
/// ([`TransactionStatus::is_explained_by`]).
pub fn enrich(transaction: &mut pb::Transaction) {
    if transaction.provider_code.is_empty() || transaction.explanation.is_some() {
        return;
    }
    let Ok(provider) = Provider::parse(&transaction.provider) else {
        return;
    };
    let Some(status) = pb::TransactionStatus::try_from(transaction.status)
        .ok()
        .and_then(|status| TransactionStatus::try_from(status).ok())
    else {
        return;
    };
    let operation = TransactionKind::ALL
        .into_iter()
        .find(|kind| pb::TransactionKind::from(*kind) as i32 == transaction.kind)
        .map(|kind| CodeOperation::from(kind.operation()));
    match catalogue::explain_with_message(
        provider,
        &transaction.provider_code,
        operation,
        &transaction.provider_message,
    ) {
        Ok(explanation) if status.is_explained_by(explanation.outcome) => {
            transaction.explanation = Some(pb::CodeExplanation::from(&explanation))
        }
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(%error, code = %transaction.provider_code, "provider code not explainable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn explain(
        provider: &str,
        code: &str,
        operation: &str,
    ) -> Result<pb::CodeExplanation, ApiError> {
        explain_code(&pb::ExplainCodeRequest {
            provider: provider.into(),
            code: code.into(),
            operation: operation.into(),
        })
    }

    fn invalid_field(result: Result<impl std::fmt::Debug, ApiError>) -> &'static str {
        match result {
            Err(ApiError::InvalidArgument(error)) => error.field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn explains_okebayar_codes_with_and_without_provider() {
        let explained = explain("okebayar", "204", "purchase").unwrap();
        assert_eq!(explained.provider, "okebayar");
        assert_eq!(explained.outcome, pb::Outcome::Failed as i32);
        let guessed = explain("", "000", "").unwrap();
        assert_eq!(guessed.provider, "okebayar");
    }

    #[test]
    fn bad_input_is_invalid_argument_naming_the_problem() {
        assert_eq!(invalid_field(explain("okebayar", "", "")), "code");
        assert_eq!(invalid_field(explain("nobody", "000", "")), "provider");
        assert_eq!(
            invalid_field(explain("okebayar", "000", "teleport")),
            "operation"
        );
        assert_eq!(invalid_field(explain("okebayar", "abc", "")), "code");
        assert_eq!(
            invalid_field(list_codes(&pb::ListCodesRequest {
                provider: String::new()
            })),
            "provider"
        );
        let status = crate::errors::to_status(&explain("okebayar", "", "").unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn list_codes_returns_the_whole_table_of_the_provider_asked() {
        for provider in [Provider::OkeBayar, Provider::SnapQr, Provider::Smilepayz] {
            let listed = list_codes(&pb::ListCodesRequest {
                provider: provider.as_str().into(),
            })
            .unwrap()
            .codes;
            let table = catalogue::codes(provider);
            assert!(!table.is_empty(), "{provider}");
            assert_eq!(listed.len(), table.len(), "{provider}");
            for (listed, entry) in listed.iter().zip(&table) {
                assert_eq!(listed, &pb::CodeExplanation::from(entry), "{provider}");
                assert_eq!(listed.provider, provider.as_str());
            }
        }
        let okebayar = list_codes(&pb::ListCodesRequest {
            provider: "okebayar".into(),
        })
        .unwrap()
        .codes;
        let wrong_number = okebayar
            .iter()
            .find(|c| c.code == "204")
            .expect("204 is listed");
        assert_eq!(wrong_number.outcome, pb::Outcome::Failed as i32);
    }

    #[test]
    fn transactions_with_a_code_get_an_explanation() {
        let mut transaction = pb::Transaction {
            provider: "okebayar".into(),
            kind: pb::TransactionKind::PrepaidPurchase as i32,
            status: pb::TransactionStatus::Failed as i32,
            provider_code: "204".into(),
            ..Default::default()
        };
        enrich(&mut transaction);
        let explanation = transaction.explanation.expect("explained");
        assert_eq!(explanation.code, "204");
        let mut none = pb::Transaction {
            provider: "okebayar".into(),
            ..Default::default()
        };
        enrich(&mut none);
        assert!(none.explanation.is_none());
    }

    /// A code whose outcome disagrees with the status (settled by an
    /// operator against it, or parked for review) is not explained: its
    /// merchant message would say the opposite of what holds.
    #[test]
    fn a_code_that_disagrees_with_the_status_gets_no_explanation() {
        let explained = |status: pb::TransactionStatus, code: &str| {
            let mut transaction = pb::Transaction {
                provider: "okebayar".into(),
                kind: pb::TransactionKind::PrepaidPurchase as i32,
                status: status as i32,
                provider_code: code.into(),
                ..Default::default()
            };
            enrich(&mut transaction);
            transaction.explanation.is_some()
        };
        use pb::TransactionStatus::*;
        assert!(explained(Success, "000"));
        assert!(explained(Pending, "002"));
        assert!(!explained(Failed, "000"));
        assert!(!explained(Success, "204"));
        assert!(!explained(NeedsReview, "000"));
        assert!(!explained(NeedsReview, "204"));
        assert!(!explained(Pending, "000"));
        assert!(!explained(Unspecified, "204"));
    }
}
