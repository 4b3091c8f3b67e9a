//! The gRPC commands: each builds one request from validated arguments, calls
//! the ingress and returns a view from [`crate::output`]. `explain` and
//! `codes` can also answer from the built-in catalogue (`--offline`); both
//! paths go through the same `pb::CodeExplanation`, so they print the same.

use std::time::Duration;

use loket_protocol::catalogue::{self, CodeOperation};
use loket_protocol::conversions::timestamp;
use loket_protocol::{pb, Provider};

use crate::cli::{
    BalanceArgs, CodesArgs, ExplainArgs, GetArgs, InquireArgs, ListArgs, PayArgs, PayInArgs,
    PayOutArgs, PurchaseArgs, QrCancelArgs, QrPayArgs, QrQueryArgs, QrRefundArgs,
};
use crate::client::Client;
use crate::duration::wait_ms;
use crate::output::{
    BalanceView, CodeListView, ExplanationView, TransactionListView, TransactionView,
};
use crate::CliError;

/// How long a call may take beyond the server-side wait before we give up.
const CALL_MARGIN: Duration = Duration::from_secs(15);

/// A request with a client-side deadline of `wait + margin`, so a server that
/// never answers does not hang the terminal. A deadline passing is shown as
/// `DEADLINE_EXCEEDED`: the transaction may still complete; look it up.
fn request<T>(message: T, wait: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(wait.unwrap_or_default() + CALL_MARGIN);
    request
}

fn wait_of(wait: Option<Duration>) -> Result<u32, CliError> {
    wait_ms(wait).map_err(CliError::Usage)
}

pub fn purchase_request(args: &PurchaseArgs) -> Result<pb::PurchaseRequest, CliError> {
    Ok(pb::PurchaseRequest {
        client_ref: args.client_ref.clone(),
        product_code: args.product.clone(),
        account: args.account.clone(),
        inquiry_id: args.inquiry.clone().unwrap_or_default(),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn purchase(
    client: &mut Client,
    args: &PurchaseArgs,
) -> Result<TransactionView, CliError> {
    let message = purchase_request(args)?;
    let t = client
        .purchase(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub fn inquire_request(args: &InquireArgs) -> Result<pb::InquireRequest, CliError> {
    Ok(pb::InquireRequest {
        client_ref: args.client_ref.clone(),
        product_code: args.product.clone(),
        account: args.account.clone(),
        account2: args.account2.clone().unwrap_or_default(),
        account3: args.months.map(|m| m.to_string()).unwrap_or_default(),
        contact: args.contact.clone().unwrap_or_default(),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn inquire(client: &mut Client, args: &InquireArgs) -> Result<TransactionView, CliError> {
    let message = inquire_request(args)?;
    let t = client
        .inquire(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub fn pay_request(args: &PayArgs) -> Result<pb::PayBillRequest, CliError> {
    Ok(pb::PayBillRequest {
        client_ref: args.client_ref.clone(),
        inquiry_id: args.inquiry.clone(),
        amount: Some(pb::Money {
            minor: args.amount,
            currency: "IDR".into(),
        }),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn pay(client: &mut Client, args: &PayArgs) -> Result<TransactionView, CliError> {
    let message = pay_request(args)?;
    let t = client
        .pay_bill(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

fn idr(minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        minor,
        currency: "IDR".into(),
    })
}

pub fn qr_pay_request(args: &QrPayArgs) -> Result<pb::QrPayRequest, CliError> {
    Ok(pb::QrPayRequest {
        client_ref: args.client_ref.clone(),
        product_code: args.product.clone().unwrap_or_default(),
        amount: idr(args.amount),
        qr_content: args.qr_content.clone().unwrap_or_default(),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn qr_pay(client: &mut Client, args: &QrPayArgs) -> Result<TransactionView, CliError> {
    let message = qr_pay_request(args)?;
    let t = client
        .qr_pay(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub async fn qr_query(
    client: &mut Client,
    args: &QrQueryArgs,
) -> Result<TransactionView, CliError> {
    let message = pb::QrQueryRequest {
        transaction_id: args.id.clone(),
        wait_ms: wait_of(args.wait)?,
    };
    let t = client
        .qr_query(request(message, args.wait))
        .await?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub fn qr_cancel_request(args: &QrCancelArgs) -> Result<pb::QrCancelRequest, CliError> {
    Ok(pb::QrCancelRequest {
        client_ref: args.client_ref.clone(),
        transaction_id: args.transaction_id.clone(),
        reason: args.reason.clone().unwrap_or_default(),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn qr_cancel(
    client: &mut Client,
    args: &QrCancelArgs,
) -> Result<TransactionView, CliError> {
    let message = qr_cancel_request(args)?;
    let t = client
        .qr_cancel(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub fn qr_refund_request(args: &QrRefundArgs) -> Result<pb::QrRefundRequest, CliError> {
    Ok(pb::QrRefundRequest {
        client_ref: args.client_ref.clone(),
        transaction_id: args.transaction_id.clone(),
        amount: idr(args.amount),
        reason: args.reason.clone().unwrap_or_default(),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn qr_refund(
    client: &mut Client,
    args: &QrRefundArgs,
) -> Result<TransactionView, CliError> {
    let message = qr_refund_request(args)?;
    let t = client
        .qr_refund(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub fn pay_in_request(args: &PayInArgs) -> Result<pb::PayInRequest, CliError> {
    let payer = pb::Payer {
        name: args.payer_name.clone().unwrap_or_default(),
        phone: args.payer_phone.clone().unwrap_or_default(),
        email: args.payer_email.clone().unwrap_or_default(),
    };
    Ok(pb::PayInRequest {
        client_ref: args.client_ref.clone(),
        product_code: args.product.clone().unwrap_or_default(),
        amount: idr(args.amount),
        method: args.method.clone().unwrap_or_default(),
        payer: (payer != pb::Payer::default()).then_some(payer),
        expiry_seconds: args.expiry.unwrap_or_default(),
        purpose: args.purpose.clone().unwrap_or_default(),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn pay_in(client: &mut Client, args: &PayInArgs) -> Result<TransactionView, CliError> {
    let message = pay_in_request(args)?;
    let t = client
        .pay_in(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub fn pay_out_request(args: &PayOutArgs) -> Result<pb::PayOutRequest, CliError> {
    Ok(pb::PayOutRequest {
        client_ref: args.client_ref.clone(),
        product_code: args.product.clone().unwrap_or_default(),
        amount: idr(args.amount),
        method: args.method.clone(),
        account: args.account.clone(),
        receiver_name: args.receiver_name.clone().unwrap_or_default(),
        purpose: args.purpose.clone().unwrap_or_default(),
        wait_ms: wait_of(args.wait)?,
    })
}

pub async fn pay_out(client: &mut Client, args: &PayOutArgs) -> Result<TransactionView, CliError> {
    let message = pay_out_request(args)?;
    let t = client
        .pay_out(request(message, args.wait))
        .await
        .map_err(CliError::of_sent_call)?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub async fn get(client: &mut Client, args: &GetArgs) -> Result<TransactionView, CliError> {
    let key = match (&args.id, &args.client_ref) {
        (Some(id), _) => pb::get_transaction_request::Key::Id(id.clone()),
        (None, Some(client_ref)) => pb::get_transaction_request::Key::ClientRef(client_ref.clone()),
        (None, None) => return Err(CliError::Usage("give a transaction id or --ref".into())),
    };
    let message = pb::GetTransactionRequest { key: Some(key) };
    let t = client
        .get_transaction(request(message, None))
        .await?
        .into_inner();
    Ok(TransactionView::from_pb(&t))
}

pub fn list_request(args: &ListArgs) -> pb::ListTransactionsRequest {
    pb::ListTransactionsRequest {
        status: args.status.map_or(
            pb::TransactionStatus::Unspecified,
            pb::TransactionStatus::from,
        ) as i32,
        provider: args
            .provider
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        product_code: args.product.clone().unwrap_or_default(),
        created_from: args.since.map(timestamp),
        created_to: args.until.map(timestamp),
        page_size: args.limit,
        page_token: args.page_token.clone().unwrap_or_default(),
    }
}

/// One page, or with `--all` every page, following `next_page_token`.
pub async fn list(client: &mut Client, args: &ListArgs) -> Result<TransactionListView, CliError> {
    let mut message = list_request(args);
    let mut transactions = Vec::new();
    loop {
        let page = client
            .list_transactions(request(message.clone(), None))
            .await?
            .into_inner();
        transactions.extend(page.transactions.iter().map(TransactionView::from_pb));
        if !args.all || page.next_page_token.is_empty() {
            return Ok(TransactionListView {
                transactions,
                next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
            });
        }
        if page.next_page_token == message.page_token {
            return Err(CliError::Usage(
                "the server returned the same page token twice; stopping".into(),
            ));
        }
        message.page_token = page.next_page_token;
    }
}

/// Opens the watch stream. The caller prints each item until Ctrl-C.
pub async fn watch(
    client: &mut Client,
    id: Option<String>,
) -> Result<tonic::Streaming<pb::Transaction>, CliError> {
    let message = pb::WatchTransactionsRequest {
        transaction_id: id.unwrap_or_default(),
    };
    // A stream has no deadline, but its opening has: a server that accepts
    // the connection and never answers must not hang the terminal.
    let opened = tokio::time::timeout(CALL_MARGIN, client.watch_transactions(message))
        .await
        .map_err(|_| {
            CliError::Grpc(tonic::Status::unavailable(format!(
                "the server did not open the watch within {} s",
                CALL_MARGIN.as_secs()
            )))
        })??;
    Ok(opened.into_inner())
}

pub async fn balance(client: &mut Client, args: &BalanceArgs) -> Result<BalanceView, CliError> {
    let message = pb::GetBalanceRequest {
        provider: args.provider.as_str().to_string(),
    };
    let b = client
        .get_balance(request(message, None))
        .await?
        .into_inner();
    Ok(BalanceView::from_pb(&b))
}

/// What `explain` was asked: provider (given or guessed), code, operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainQuery {
    pub provider: Provider,
    pub code: String,
    pub operation: Option<CodeOperation>,
}

/// Reads `explain <provider> <code>` or `explain <code>`.
pub fn explain_query(args: &ExplainArgs) -> Result<ExplainQuery, CliError> {
    let (provider, code) = match &args.second {
        Some(code) => (
            Provider::parse(&args.first).map_err(|e| CliError::Explain(e.to_string()))?,
            code.trim().to_string(),
        ),
        None => {
            let code = args.first.trim().to_string();
            let provider = catalogue::guess_provider(&code).ok_or_else(|| {
                CliError::Explain(format!(
                    "cannot tell the provider of code {code:?}: write `loketctl explain <provider> {code}` \
                     (providers: okebayar, doku, snapqr, smilepayz)"
                ))
            })?;
            (provider, code)
        }
    };
    if code.is_empty() {
        return Err(CliError::Explain(
            "code is empty: give the provider's response code".into(),
        ));
    }
    let operation = args
        .operation
        .as_deref()
        .map(|op| {
            op.parse::<CodeOperation>()
                .map_err(|e| CliError::Explain(format!("--operation: {e}")))
        })
        .transpose()?;
    Ok(ExplainQuery {
        provider,
        code,
        operation,
    })
}

/// Answers from the built-in catalogue.
pub fn explain_offline(query: &ExplainQuery) -> Result<ExplanationView, CliError> {
    let explanation = catalogue::explain(query.provider, &query.code, query.operation)
        .map_err(|e| CliError::Explain(format!("{} {}: {e}", query.provider, query.code)))?;
    Ok(ExplanationView::from_pb(&pb::CodeExplanation::from(
        &explanation,
    )))
}

pub async fn explain_online(
    client: &mut Client,
    query: &ExplainQuery,
) -> Result<ExplanationView, CliError> {
    let message = pb::ExplainCodeRequest {
        provider: query.provider.as_str().to_string(),
        code: query.code.clone(),
        operation: query
            .operation
            .map(|op| op.as_str().to_string())
            .unwrap_or_default(),
    };
    let e = client
        .explain_code(request(message, None))
        .await?
        .into_inner();
    Ok(ExplanationView::from_pb(&e))
}

pub fn codes_offline(args: &CodesArgs) -> CodeListView {
    CodeListView {
        provider: args.provider.as_str().to_string(),
        codes: catalogue::codes(args.provider)
            .iter()
            .map(ExplanationView::from_library)
            .collect(),
    }
}

pub async fn codes_online(client: &mut Client, args: &CodesArgs) -> Result<CodeListView, CliError> {
    let message = pb::ListCodesRequest {
        provider: args.provider.as_str().to_string(),
    };
    let list = client
        .list_codes(request(message, None))
        .await?
        .into_inner();
    Ok(CodeListView {
        provider: args.provider.as_str().to_string(),
        codes: list.codes.iter().map(ExplanationView::from_pb).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("loketctl").chain(args.iter().copied()))
            .expect("valid")
            .command
    }

    #[test]
    fn purchase_request_carries_every_field() {
        let Command::Purchase(args) = command(&[
            "purchase",
            "--ref",
            "R1",
            "--product",
            "PLN20",
            "--account",
            "5123",
            "--inquiry",
            "I1",
            "--wait",
            "1500ms",
        ]) else {
            panic!()
        };
        let r = purchase_request(&args).expect("ok");
        assert_eq!(
            r,
            pb::PurchaseRequest {
                client_ref: "R1".into(),
                product_code: "PLN20".into(),
                account: "5123".into(),
                inquiry_id: "I1".into(),
                wait_ms: 1500,
            }
        );
    }

    #[test]
    fn inquire_months_go_to_account3() {
        let Command::Inquire(args) = command(&[
            "inquire",
            "--ref",
            "R",
            "--product",
            "BPJS",
            "--account",
            "0001",
            "--months",
            "3",
            "--contact",
            "0812",
        ]) else {
            panic!()
        };
        let r = inquire_request(&args).expect("ok");
        assert_eq!(r.account3, "3");
        assert_eq!(r.contact, "0812");
        assert_eq!(r.account2, "");
        assert_eq!(r.wait_ms, 0);
    }

    #[test]
    fn pay_request_amount_is_exact_idr() {
        let Command::Pay(args) =
            command(&["pay", "--ref", "R", "--inquiry", "I", "--amount", "52500"])
        else {
            panic!()
        };
        let r = pay_request(&args).expect("ok");
        assert_eq!(
            r.amount,
            Some(pb::Money {
                minor: 52_500,
                currency: "IDR".into()
            })
        );
    }

    #[test]
    fn wave_two_requests_carry_every_field() {
        use crate::cli::QrCommand;
        let Command::Qr(QrCommand::Pay(args)) = command(&[
            "qr", "pay", "--ref", "Q1", "--amount", "10000", "--wait", "3s",
        ]) else {
            panic!()
        };
        assert_eq!(
            qr_pay_request(&args).expect("ok"),
            pb::QrPayRequest {
                client_ref: "Q1".into(),
                product_code: String::new(),
                amount: idr(10_000),
                qr_content: String::new(),
                wait_ms: 3_000,
            }
        );
        let Command::Qr(QrCommand::Refund(args)) = command(&[
            "qr", "refund", "--ref", "R1", "--txn", "T1", "--amount", "2500", "--reason", "dup",
        ]) else {
            panic!()
        };
        let r = qr_refund_request(&args).expect("ok");
        assert_eq!(
            (r.transaction_id.as_str(), r.amount, r.reason.as_str()),
            ("T1", idr(2_500), "dup")
        );
        let Command::Qr(QrCommand::Cancel(args)) =
            command(&["qr", "cancel", "--ref", "C1", "--txn", "T1"])
        else {
            panic!()
        };
        assert_eq!(qr_cancel_request(&args).expect("ok").reason, "");
        let Command::Payin(args) = command(&[
            "payin",
            "--ref",
            "P1",
            "--amount",
            "150000",
            "--method",
            "QRIS",
            "--expiry",
            "1h",
            "--payer-email",
            "a@b.id",
        ]) else {
            panic!()
        };
        let r = pay_in_request(&args).expect("ok");
        assert_eq!(r.expiry_seconds, 3_600);
        assert_eq!(r.method, "QRIS");
        assert_eq!(r.payer.expect("payer").email, "a@b.id");
        let Command::Payin(args) = command(&["payin", "--ref", "P2", "--amount", "1"]) else {
            panic!()
        };
        let r = pay_in_request(&args).expect("ok");
        assert_eq!((r.payer, r.expiry_seconds), (None, 0), "server defaults");
        let Command::Payout(args) = command(&[
            "payout",
            "--ref",
            "O1",
            "--amount",
            "50000",
            "--method",
            "BCA",
            "--account",
            "1234567890",
            "--receiver",
            "Siti",
            "--purpose",
            "salary",
        ]) else {
            panic!()
        };
        let r = pay_out_request(&args).expect("ok");
        assert_eq!(
            (
                r.method.as_str(),
                r.account.as_str(),
                r.receiver_name.as_str(),
                r.purpose.as_str()
            ),
            ("BCA", "1234567890", "Siti", "salary")
        );
    }

    #[test]
    fn list_request_maps_filters() {
        let Command::List(args) = command(&[
            "list",
            "--status",
            "failed",
            "--provider",
            "okebayar",
            "--product",
            "PULSA10",
            "--until",
            "2025-02-01T00:00:00Z",
            "--limit",
            "5",
        ]) else {
            panic!()
        };
        let r = list_request(&args);
        assert_eq!(r.status, pb::TransactionStatus::Failed as i32);
        assert_eq!(r.provider, "okebayar");
        assert_eq!(r.product_code, "PULSA10");
        assert_eq!(r.created_to.map(|t| t.seconds), Some(1_738_368_000));
        assert!(r.created_from.is_none());
        assert_eq!(r.page_size, 5);
        let Command::List(args) = command(&["list"]) else {
            panic!()
        };
        assert_eq!(list_request(&args).status, 0);
    }

    #[test]
    fn explain_query_forms() {
        let Command::Explain(args) =
            command(&["explain", "OkeBayar", " 208 ", "--operation", "purchase"])
        else {
            panic!()
        };
        let q = explain_query(&args).expect("ok");
        assert_eq!(q.provider, Provider::OkeBayar);
        assert_eq!(q.code, "208");
        assert_eq!(q.operation, Some(CodeOperation::Purchase));

        let Command::Explain(args) = command(&["explain", "4046018"]) else {
            panic!()
        };
        assert_eq!(
            explain_query(&args).expect("guessed").provider,
            Provider::SnapQr
        );
        let Command::Explain(args) = command(&["explain", "5009100"]) else {
            panic!()
        };
        assert_eq!(
            explain_query(&args).expect("guessed").provider,
            Provider::Smilepayz
        );

        let Command::Explain(args) = command(&["explain", "acme", "1"]) else {
            panic!()
        };
        assert!(explain_query(&args)
            .unwrap_err()
            .to_string()
            .contains("unknown provider"));
        let Command::Explain(args) = command(&["explain", "12"]) else {
            panic!()
        };
        assert!(explain_query(&args)
            .unwrap_err()
            .to_string()
            .contains("cannot tell the provider"));
        let Command::Explain(args) = command(&["explain", "doku", "5586", "--operation", "dance"])
        else {
            panic!()
        };
        assert!(explain_query(&args)
            .unwrap_err()
            .to_string()
            .starts_with("--operation: unknown operation"));
    }

    #[test]
    fn offline_explain_matches_the_library() {
        let Command::Explain(args) = command(&["explain", "okebayar", "000", "--offline"]) else {
            panic!()
        };
        let view = explain_offline(&explain_query(&args).expect("ok")).expect("explained");
        let library = catalogue::explain(Provider::OkeBayar, "000", None).expect("library");
        assert_eq!(
            view,
            ExplanationView::from_pb(&pb::CodeExplanation::from(&library))
        );
        assert_eq!(view.outcome, "success");
        assert!(view.in_catalogue);

        let Command::Codes(args) = command(&["codes", "okebayar", "--offline"]) else {
            panic!()
        };
        let list = codes_offline(&args);
        assert_eq!(list.codes.len(), catalogue::codes(Provider::OkeBayar).len());
        assert!(list.codes.iter().any(|c| c.code == "208"));
    }

    #[test]
    fn offline_explain_of_bad_code_names_the_problem() {
        let Command::Explain(args) = command(&["explain", "okebayar", "abc", "--offline"]) else {
            panic!()
        };
        let error = explain_offline(&explain_query(&args).expect("query")).unwrap_err();
        assert!(
            error.to_string().starts_with("okebayar abc: code \"abc\""),
            "{error}"
        );
        assert_eq!(error.exit_code(), 2);
    }
}
