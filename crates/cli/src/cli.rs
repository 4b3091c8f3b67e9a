//! The command line, as clap types. Parsing only: nothing here connects or
//! prints. Values are validated on the way in (durations, statuses,
//! providers, times, amounts) so a typo is a usage error naming the flag, not
//! a server round trip.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use loket_protocol::{Provider, TransactionStatus};
use loket_runtime::Secret;

use crate::duration::parse_duration;

pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

#[derive(Debug, Parser)]
#[command(
    name = "loketctl",
    version,
    about = "Operate loket: clients, products, transactions, provider codes, and the load benchmark.",
    after_help = "Prefer LOKET_API_KEY and LOKET_DATABASE_URL over the flags: \
                  command-line arguments are visible to other users in the process list."
)]
pub struct Cli {
    /// gRPC address of the loket ingress.
    #[arg(long, global = true, env = "LOKET_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,

    /// API key of the calling client (sent as `x-api-key`).
    #[arg(long, global = true, env = "LOKET_API_KEY", hide_env_values = true, value_parser = secret)]
    pub api_key: Option<Secret>,

    /// Print JSON for scripts instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,

    /// PostgreSQL URL, for `migrate`, `client`, `products`, `find`, `export`, `review` and `baseline` only.
    #[arg(long, global = true, env = "LOKET_DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: Option<Secret>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations.
    Migrate,
    /// Manage internal clients and their API keys (database).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the product catalogue (database).
    #[command(subcommand)]
    Products(ProductsCommand),
    /// Buy a prepaid product (pulsa, data, PLN token).
    Purchase(PurchaseArgs),
    /// PLN-prepaid inquiry or postpaid bill inquiry.
    Inquire(InquireArgs),
    /// Pay a bill against a successful inquiry.
    Pay(PayArgs),
    /// SNAP QR CPM: pay, query, cancel and refund QR payments.
    #[command(subcommand)]
    Qr(QrCommand),
    /// Collect money (Smilepayz pay-in): prints the QR string, VA number or
    /// payment page for the payer.
    Payin(PayInArgs),
    /// Disburse money to a bank account or wallet (Smilepayz pay-out).
    Payout(PayOutArgs),
    /// Show one transaction, by id or by your client reference.
    Get(GetArgs),
    /// Support: find transactions of any client by any reference (id,
    /// client ref, our reference, the provider's trace, a serial number or
    /// token) with their history (database).
    Find(FindArgs),
    /// Finance: one provider's transactions created in a period, across
    /// clients, as CSV (or JSON lines with --json) on stdout, totals per
    /// kind and status on stderr (database).
    Export(ExportArgs),
    /// Operators: the transactions parked in needs_review, and settling one
    /// as success or failed once the case is settled with the provider
    /// (database; settle also NATS).
    #[command(subcommand)]
    Review(ReviewCommand),
    /// List your transactions, newest first.
    List(ListArgs),
    /// Print transaction updates as they happen, until Ctrl-C.
    Watch(WatchArgs),
    /// A provider's deposit balance.
    Balance(BalanceArgs),
    /// What a provider code means and what to do about it.
    Explain(ExplainArgs),
    /// A provider's whole code table.
    Codes(CodesArgs),
    /// Load benchmark: prepaid purchases through the real ingress.
    Bench(BenchArgs),
    /// Machine calibration for the benchmark: the bare INSERT -> JetStream ->
    /// UPDATE pipeline loket's throughput target is set against, on this
    /// machine now (own schema and stream, removed afterwards).
    Baseline(BaselineArgs),
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client and print its API key (shown once only).
    Create { name: String },
    /// List clients (never their keys).
    List,
    /// Disable a client: its key stops working.
    Disable { name: String },
    /// Enable a disabled client again.
    Enable { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ProductsCommand {
    /// Upsert the catalogue from a TOML file (see deploy/products.toml).
    Load { file: PathBuf },
    /// List the catalogue.
    List,
}

#[derive(Debug, Clone, Args)]
pub struct PurchaseArgs {
    /// Your unique reference for this purchase (idempotency key).
    #[arg(long = "ref")]
    pub client_ref: String,
    #[arg(long)]
    pub product: String,
    /// Customer number: MSISDN, meter number or customer id.
    #[arg(long)]
    pub account: String,
    /// PLN prepaid: the id of the successful inquiry to buy against.
    #[arg(long)]
    pub inquiry: Option<String>,
    /// Wait up to this long for a final state (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct InquireArgs {
    #[arg(long = "ref")]
    pub client_ref: String,
    #[arg(long)]
    pub product: String,
    /// Customer id, meter number (PSTN: the area code).
    #[arg(long)]
    pub account: String,
    /// PSTN: the number without area code.
    #[arg(long)]
    pub account2: Option<String>,
    /// BPJS: number of months to pay (1-12).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=12))]
    pub months: Option<u8>,
    /// Payer phone or e-mail (BPJS: the payer's phone, which the payment carries).
    #[arg(long)]
    pub contact: Option<String>,
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct PayArgs {
    #[arg(long = "ref")]
    pub client_ref: String,
    /// The id of the successful inquiry.
    #[arg(long)]
    pub inquiry: String,
    /// The inquiry's total in whole rupiah (e.g. 52500); must match it.
    #[arg(long, value_parser = parse_amount, allow_negative_numbers = true)]
    pub amount: i64,
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum QrCommand {
    /// Debit a customer-presented QR (without --qr the issuer generates one
    /// first: demo and test flows).
    Pay(QrPayArgs),
    /// Ask the issuer about a QR payment now.
    Query(QrQueryArgs),
    /// Void a QR payment (same day); its own transaction, linked to it.
    Cancel(QrCancelArgs),
    /// Refund part or all of a successful QR payment; never more than was
    /// paid minus earlier refunds.
    Refund(QrRefundArgs),
}

#[derive(Debug, Clone, Args)]
pub struct QrPayArgs {
    /// Your unique reference for this payment (idempotency key).
    #[arg(long = "ref")]
    pub client_ref: String,
    /// Whole rupiah, plain digits (e.g. 10000).
    #[arg(long, value_parser = parse_amount, allow_negative_numbers = true)]
    pub amount: i64,
    /// The QR content scanned from the customer's app.
    #[arg(long = "qr")]
    pub qr_content: Option<String>,
    /// Our product code (default: the server's QRCPM).
    #[arg(long)]
    pub product: Option<String>,
    /// Wait up to this long for a final state (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct QrQueryArgs {
    /// The QR payment's transaction id.
    pub id: String,
    /// Wait up to this long for the answer of the query.
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct QrCancelArgs {
    #[arg(long = "ref")]
    pub client_ref: String,
    /// The QR payment to void.
    #[arg(long = "txn")]
    pub transaction_id: String,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct QrRefundArgs {
    #[arg(long = "ref")]
    pub client_ref: String,
    /// The QR payment to refund.
    #[arg(long = "txn")]
    pub transaction_id: String,
    /// Whole rupiah to refund, plain digits.
    #[arg(long, value_parser = parse_amount, allow_negative_numbers = true)]
    pub amount: i64,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct PayInArgs {
    #[arg(long = "ref")]
    pub client_ref: String,
    /// Whole rupiah, plain digits (e.g. 150000).
    #[arg(long, value_parser = parse_amount, allow_negative_numbers = true)]
    pub amount: i64,
    /// QRIS, a VA bank code (BCA, BRI...) or a wallet (W_DANA, W_OVO...);
    /// default: a hosted payment page.
    #[arg(long)]
    pub method: Option<String>,
    #[arg(long)]
    pub payer_name: Option<String>,
    /// Required for W_OVO.
    #[arg(long)]
    pub payer_phone: Option<String>,
    #[arg(long)]
    pub payer_email: Option<String>,
    /// How long the payer has (e.g. 30m, 1h; default 1h, at most 24h).
    #[arg(long, value_parser = parse_expiry)]
    pub expiry: Option<u32>,
    #[arg(long)]
    pub purpose: Option<String>,
    /// Our product code (default: the server's PAYIN).
    #[arg(long)]
    pub product: Option<String>,
    /// Wait up to this long for the payment instructions (or a final state).
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct PayOutArgs {
    #[arg(long = "ref")]
    pub client_ref: String,
    /// Whole rupiah, plain digits (10000 to 999999999).
    #[arg(long, value_parser = parse_amount, allow_negative_numbers = true)]
    pub amount: i64,
    /// Bank or wallet code (BCA, BRI, DANA, OVO...).
    #[arg(long)]
    pub method: String,
    /// The receiver's bank account, VA or wallet id.
    #[arg(long)]
    pub account: String,
    /// The receiver's name.
    #[arg(long = "receiver")]
    pub receiver_name: Option<String>,
    #[arg(long)]
    pub purpose: Option<String>,
    /// Our product code (default: the server's PAYOUT).
    #[arg(long)]
    pub product: Option<String>,
    /// Wait up to this long for a final state.
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_parser = parse_provider)]
    pub provider: Provider,
    /// Created at or after: a date (2026-11-22, midnight WIB) or an RFC 3339 time.
    #[arg(long, value_parser = crate::export::parse_bound)]
    pub from: DateTime<Utc>,
    /// Created before: a date (midnight WIB, so `--from 2026-11-22 --until
    /// 2026-11-23` is one WIB day) or an RFC 3339 time.
    #[arg(long, value_parser = crate::export::parse_bound)]
    pub until: DateTime<Utc>,
    /// Only this status (received, pending, unknown, success, failed, needs_review).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<TransactionStatus>,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// The reference a merchant or provider quoted.
    pub reference: String,
    /// Show at most this many matches, newest first.
    #[arg(long, default_value_t = crate::find::DEFAULT_LIMIT)]
    pub limit: i64,
}

/// `loketctl review`: transactions parked in needs_review.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Every transaction in needs_review, the longest waiting first.
    List(ReviewListArgs),
    /// Record what the provider confirmed for a transaction in needs_review:
    /// the reconciler applies it (once), logs it and tells the client; this
    /// waits for that and prints the transaction as `find` does.
    Settle(SettleArgs),
}

/// `loketctl review list`.
#[derive(Debug, Args)]
pub struct ReviewListArgs {
    /// Show at most this many.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
}

/// `loketctl review settle`: an operator's decision, as given.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  loketctl review settle 01a2030a-6673-72b5-b51d-fe9355bbb525 --seen-event 4321 --status success \\\n    \
                  --serial-number 5123-4123-4567 --reason \"OkeBayar confirmed delivery, ticket 4711\" --operator siti"
)]
pub struct SettleArgs {
    /// The transaction's id (`loketctl review list` shows them).
    #[arg(value_parser = parse_transaction_id)]
    pub transaction_id: uuid::Uuid,
    /// The newest event of its history you decided on (`loketctl review
    /// list` and `loketctl find` show it): if a report came in since, the
    /// decision is refused and you look again.
    #[arg(long, value_parser = parse_seen_event)]
    pub seen_event: i64,
    /// What the provider confirmed: success or failed.
    #[arg(long, value_parser = parse_decision)]
    pub status: TransactionStatus,
    /// Why: what the provider confirmed, the ticket (at most 500 characters).
    #[arg(long, value_parser = loket_protocol::review::reason)]
    pub reason: String,
    /// Who decided (1 to 64 characters).
    #[arg(long, value_parser = loket_protocol::review::operator)]
    pub operator: String,
    /// With --status success: the serial number or token the provider
    /// confirmed. Never replaces one the transaction already holds.
    #[arg(long, value_parser = loket_protocol::review::serial_number)]
    pub serial_number: Option<String>,
    /// With --status failed: the serial number or token the transaction
    /// holds (the provider's evidence of delivery) is void, the provider
    /// having confirmed it reversed the delivery. Without it, settling
    /// failed a transaction that holds one is refused.
    #[arg(long, conflicts_with = "serial_number")]
    pub void_serial_number: bool,
    /// How long to wait for the reconciler to apply the decision.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    /// nats-server with JetStream: loket's bus. Needed: this flag or
    /// LOKET_NATS_URL (`review::nats_url` names both when neither is given).
    #[arg(long, env = "LOKET_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[group(id = "key", required = true, multiple = false, args = ["id", "client_ref"])]
pub struct GetArgs {
    /// Transaction id.
    pub id: Option<String>,
    /// Your client reference instead of the id.
    #[arg(long = "ref")]
    pub client_ref: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// received, pending, unknown, success, failed or needs_review.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<TransactionStatus>,
    #[arg(long, value_parser = parse_provider)]
    pub provider: Option<Provider>,
    /// Our product code.
    #[arg(long)]
    pub product: Option<String>,
    /// Created at or after (RFC 3339, e.g. 2025-01-31T00:00:00+07:00).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Page size.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Continue from the token a previous page printed.
    #[arg(long, conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Follow every page to the end.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Only this transaction (default: every transaction of yours).
    pub id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BalanceArgs {
    #[arg(value_parser = parse_provider)]
    pub provider: Provider,
}

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  loketctl explain okebayar 208 --operation purchase\n  \
                        loketctl explain 4046018\n  loketctl explain doku 5586 --offline"
)]
pub struct ExplainArgs {
    /// `<provider> <code>`, or a bare code whose provider can be told from it
    /// (7-digit SNAP/Smilepayz codes by their service code, 3 digits OkeBayar,
    /// XXYY DOKU).
    #[arg(value_name = "PROVIDER_OR_CODE")]
    pub first: String,
    #[arg(value_name = "CODE")]
    pub second: Option<String>,
    /// The operation the code answered (purchase, bill_payment, status_check, qr_refund, ...).
    #[arg(long)]
    pub operation: Option<String>,
    /// Answer from the built-in catalogue, without a server.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CodesArgs {
    #[arg(value_parser = parse_provider)]
    pub provider: Provider,
    /// Answer from the built-in catalogue, without a server.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Purchases in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Measured duration, after the warm-up.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Prepaid product to buy.
    #[arg(long, default_value = "PULSA10")]
    pub product: String,
    /// Un-measured warm-up before the measured duration.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Account number the simulator answers with immediate success.
    #[arg(long, default_value = crate::bench::DEFAULT_ACCOUNT)]
    pub account: String,
    /// `wait_ms` of each purchase: how long the ingress may hold a call for its final state.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    /// HTTP/2 connections to spread the calls over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,
    /// Run against an ingress on another machine too. The benchmark makes
    /// real purchases: without this it runs only against an ingress on this
    /// machine (`make run`, whose providers are simulators).
    #[arg(long)]
    pub allow_remote_ingress: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Items in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Measured duration, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Un-measured warm-up before the measured duration.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// nats-server with JetStream.
    #[arg(
        long,
        env = "LOKET_NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}

fn secret(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text))
}

pub fn parse_status(text: &str) -> Result<TransactionStatus, String> {
    TransactionStatus::parse(&text.trim().to_ascii_lowercase()).ok_or_else(|| {
        format!(
            "{text:?} is not a status (expected one of {})",
            TransactionStatus::ALL.map(|s| s.as_str()).join(", ")
        )
    })
}

/// The status an operator settles a transaction as: success or failed.
pub fn parse_decision(text: &str) -> Result<TransactionStatus, String> {
    parse_status(text)
        .and_then(loket_protocol::review::decided_status)
        .map_err(|_| format!("{text:?}: an operator settles a transaction as success or failed"))
}

/// A transaction id: a UUID.
pub fn parse_transaction_id(text: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(text.trim()).map_err(|_| {
        format!(
            "{:?} is not a transaction id (a UUID; `loketctl find` takes any reference)",
            loket_protocol::text::shortened(text, 40)
        )
    })
}

/// `--seen-event`: a history event's id, as `loketctl find` shows it
/// (`#4321` or `4321`).
fn parse_seen_event(text: &str) -> Result<i64, String> {
    let digits = text.trim().trim_start_matches('#');
    let id = digits.parse::<i64>().map_err(|_| {
        format!(
            "{:?} is not an event id (a number, as `loketctl find` shows it)",
            loket_protocol::text::shortened(text, 40)
        )
    })?;
    loket_protocol::review::seen_event(id)
}

pub fn parse_provider(text: &str) -> Result<Provider, String> {
    Provider::parse(text).map_err(|error| error.to_string())
}

pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is not an RFC 3339 time (e.g. 2025-01-31T00:00:00+07:00)"))
}

/// Whole rupiah as plain digits. `10.000` and `10,000` are refused: in
/// Indonesian the dot groups thousands, elsewhere it is a decimal point, and a
/// payment must not depend on which one the operator meant. Its flags take
/// a value with a leading hyphen (`allow_negative_numbers`), so `--amount
/// -5` is answered here, naming the flag, not by clap as an unexpected
/// argument `-5`.
pub fn parse_amount(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?}: write whole rupiah as plain digits, without separators (e.g. 52500)"
        ));
    }
    text.parse()
        .map_err(|_| format!("{text:?}: amount too large"))
}

/// A pay-in expiry as whole seconds (`30m`, `1h`, `90s`).
pub fn parse_expiry(text: &str) -> Result<u32, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_millis() != 0 {
        return Err(format!("{text:?}: whole seconds only"));
    }
    u32::try_from(duration.as_secs())
        .ok()
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| format!("{text:?}: out of range (e.g. 30m or 1h, at most 24h)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    /// clap puts a required flag on the usage line as one to type, even
    /// when its environment variable is set: every flag the environment can
    /// give is optional to clap (the command names it when it is missing).
    #[test]
    fn no_flag_the_environment_can_give_is_required() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                if let Some(variable) = arg.get_env() {
                    assert!(
                        !arg.is_required_set(),
                        "{path}: --{} ({variable:?}) is required",
                        arg.get_long().unwrap_or_default()
                    );
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        check(&command, "loketctl");
    }

    #[test]
    fn qr_payin_and_payout_commands_parse() {
        let cli = parse(&[
            "qr", "pay", "--ref", "Q1", "--amount", "10000", "--qr", "hQVD", "--wait", "5s",
        ])
        .expect("qr pay");
        let Command::Qr(QrCommand::Pay(args)) = cli.command else {
            panic!("not qr pay")
        };
        assert_eq!(
            (args.amount, args.qr_content.as_deref(), args.product),
            (10_000, Some("hQVD"), None)
        );
        assert!(parse(&["qr", "pay", "--ref", "Q1", "--amount", "10.000"]).is_err());
        assert!(parse(&["qr", "pay", "--ref", "Q1"]).is_err());
        let cli = parse(&[
            "qr", "refund", "--ref", "R", "--txn", "T", "--amount", "500",
        ])
        .expect("refund");
        let Command::Qr(QrCommand::Refund(args)) = cli.command else {
            panic!()
        };
        assert_eq!((args.transaction_id.as_str(), args.amount), ("T", 500));
        assert!(parse(&["qr", "refund", "--ref", "R", "--txn", "T"]).is_err());
        assert!(parse(&["qr", "cancel", "--ref", "R", "--txn", "T", "--reason", "dup"]).is_ok());
        assert!(parse(&["qr", "query", "T", "--wait", "2s"]).is_ok());

        let cli = parse(&[
            "payin",
            "--ref",
            "P",
            "--amount",
            "150000",
            "--method",
            "W_OVO",
            "--payer-phone",
            "0812",
            "--expiry",
            "30m",
        ])
        .expect("payin");
        let Command::Payin(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.expiry, Some(1_800));
        assert_eq!(args.payer_phone.as_deref(), Some("0812"));
        assert!(parse(&["payin", "--ref", "P", "--amount", "1", "--expiry", "1500ms"]).is_err());
        assert!(parse(&["payin", "--ref", "P", "--amount", "1", "--expiry", "60"]).is_err());

        let cli = parse(&[
            "payout",
            "--ref",
            "O",
            "--amount",
            "50000",
            "--method",
            "BCA",
            "--account",
            "1234567890",
            "--receiver",
            "Siti",
        ])
        .expect("payout");
        let Command::Payout(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.receiver_name.as_deref(), Some("Siti"));
        assert!(parse(&["payout", "--ref", "O", "--amount", "50000", "--method", "BCA"]).is_err());
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loketctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn purchase_with_wait_and_global_flags_anywhere() {
        let cli = parse(&[
            "purchase",
            "--ref",
            "R1",
            "--product",
            "PULSA10",
            "--account",
            "081234567890",
            "--wait",
            "30s",
            "--json",
            "--addr",
            "http://10.0.0.1:1",
        ])
        .expect("valid");
        assert!(cli.json);
        assert_eq!(cli.addr, "http://10.0.0.1:1");
        let Command::Purchase(args) = cli.command else {
            panic!("not purchase")
        };
        assert_eq!(args.client_ref, "R1");
        assert_eq!(args.product, "PULSA10");
        assert_eq!(args.wait, Some(Duration::from_secs(30)));
        assert_eq!(args.inquiry, None);
    }

    #[test]
    fn purchase_requires_ref_product_account() {
        let error = parse(&["purchase", "--product", "P", "--account", "1"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        assert!(error.to_string().contains("--ref"));
        let error = parse(&[
            "purchase",
            "--ref",
            "R",
            "--product",
            "P",
            "--account",
            "1",
            "--wait",
            "30",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("missing unit"), "{error}");
    }

    #[test]
    fn inquire_months_range() {
        let cli = parse(&[
            "inquire",
            "--ref",
            "R",
            "--product",
            "BPJS",
            "--account",
            "0001",
            "--months",
            "3",
        ])
        .expect("valid");
        let Command::Inquire(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.months, Some(3));
        assert!(parse(&[
            "inquire",
            "--ref",
            "R",
            "--product",
            "BPJS",
            "--account",
            "1",
            "--months",
            "13"
        ])
        .is_err());
        assert!(parse(&[
            "inquire",
            "--ref",
            "R",
            "--product",
            "BPJS",
            "--account",
            "1",
            "--months",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn pay_amount_must_be_plain_digits() {
        let cli =
            parse(&["pay", "--ref", "R", "--inquiry", "I", "--amount", "52500"]).expect("valid");
        let Command::Pay(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.amount, 52_500);
        for bad in ["10.000", "10,000", "-5", "1e3", ""] {
            assert!(
                parse(&["pay", "--ref", "R", "--inquiry", "I", "--amount", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_negative_amount_is_answered_by_the_amount_parser_naming_the_flag() {
        for command in [
            &["pay", "--ref", "R", "--inquiry", "I"][..],
            &["qr", "pay", "--ref", "Q"],
            &["qr", "refund", "--ref", "R", "--txn", "T"],
            &["payin", "--ref", "P"],
            &["payout", "--ref", "O", "--method", "BCA", "--account", "1"],
        ] {
            let mut args = command.to_vec();
            args.extend(["--amount", "-5"]);
            let error = parse(&args).unwrap_err();
            let text = error.to_string();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{args:?}: {text}");
            assert!(
                text.contains("--amount") && text.contains("plain digits"),
                "{args:?}: {text}"
            );
        }
    }

    #[test]
    fn get_by_id_or_ref_but_not_both_nor_neither() {
        let cli = parse(&["get", "abc"]).expect("id");
        let Command::Get(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.id.as_deref(), Some("abc"));
        let cli = parse(&["get", "--ref", "R9"]).expect("ref");
        let Command::Get(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.client_ref.as_deref(), Some("R9"));
        assert_eq!(
            parse(&["get"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["get", "abc", "--ref", "R"]).unwrap_err().kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn list_filters_are_validated() {
        let cli = parse(&[
            "list",
            "--status",
            "needs_review",
            "--provider",
            "OkeBayar",
            "--since",
            "2025-01-31T00:00:00+07:00",
            "--limit",
            "10",
            "--all",
        ])
        .expect("valid");
        let Command::List(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.status, Some(TransactionStatus::NeedsReview));
        assert_eq!(args.provider, Some(Provider::OkeBayar));
        assert_eq!(
            args.since.unwrap().to_rfc3339(),
            "2025-01-30T17:00:00+00:00"
        );
        assert_eq!(args.limit, 10);
        assert!(args.all);
        assert!(parse(&["list", "--status", "done"])
            .unwrap_err()
            .to_string()
            .contains("not a status"));
        assert!(parse(&["list", "--since", "yesterday"])
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
        assert!(parse(&["list", "--provider", "acme"]).is_err());
        assert!(parse(&["list", "--all", "--page-token", "x"]).is_err());
        let cli = parse(&["list"]).expect("defaults");
        let Command::List(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.limit, 50);
        assert!(!args.all);
    }

    /// `review settle` with every flag set, then `changes` made: a flag set
    /// to a value (added when absent), or left out (`None`).
    fn settle(changes: &[(&str, Option<&str>)]) -> Result<SettleArgs, clap::Error> {
        let mut flags = vec![
            ("--seen-event", "#4321"),
            ("--status", "Success"),
            ("--reason", " OkeBayar confirmed delivery, ticket 4711 "),
            ("--operator", "siti"),
            ("--serial-number", "5123-4123-4567"),
            ("--nats-url", "nats://127.0.0.1:14222"),
        ];
        for (flag, value) in changes {
            flags.retain(|(set, _)| set != flag);
            if let Some(value) = value {
                flags.push((flag, value));
            }
        }
        let mut args = vec!["review", "settle", "0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000"];
        args.extend(flags.iter().flat_map(|(flag, value)| [*flag, *value]));
        match parse(&args)?.command {
            Command::Review(ReviewCommand::Settle(args)) => Ok(args),
            other => panic!("not review settle: {other:?}"),
        }
    }

    #[test]
    fn review_settle_checks_every_flag_and_names_it() {
        let args = settle(&[]).expect("valid");
        assert_eq!(
            args.transaction_id.to_string(),
            "0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000"
        );
        assert_eq!(args.seen_event, 4321);
        assert_eq!(args.status, TransactionStatus::Success);
        assert_eq!(args.reason, "OkeBayar confirmed delivery, ticket 4711");
        assert_eq!(args.operator, "siti");
        assert_eq!(args.serial_number.as_deref(), Some("5123-4123-4567"));
        assert_eq!(args.wait, Duration::from_secs(10), "the default wait");
        assert_eq!(args.nats_url.as_deref(), Some("nats://127.0.0.1:14222"));
        let failed = settle(&[
            ("--status", Some("failed")),
            ("--serial-number", None),
            ("--wait", Some("2s")),
        ])
        .expect("failed, no serial number");
        assert_eq!(
            (failed.status, failed.serial_number, failed.wait),
            (TransactionStatus::Failed, None, Duration::from_secs(2))
        );

        let long_reason = "x".repeat(501);
        let long_name = "x".repeat(65);
        for (flag, bad, problem) in [
            ("--status", Some("pending"), "success or failed"),
            ("--status", Some("needs_review"), "success or failed"),
            ("--status", Some("done"), "success or failed"),
            ("--status", None, "required"),
            ("--reason", Some(" "), "required"),
            ("--reason", Some(long_reason.as_str()), "at most 500"),
            ("--reason", None, "required"),
            ("--operator", Some(""), "required"),
            ("--operator", Some(long_name.as_str()), "at most 64"),
            ("--operator", None, "required"),
            ("--serial-number", Some(""), "required"),
            ("--wait", Some("10"), "missing unit"),
            ("--seen-event", None, "required"),
            ("--seen-event", Some("0"), "required"),
            ("--seen-event", Some("last"), "not an event id"),
        ] {
            let error = settle(&[(flag, bad)]).unwrap_err().to_string();
            assert!(
                error.contains(flag) && error.contains(problem),
                "{flag} {bad:?}: {error}"
            );
        }

        let error = parse(&[
            "review",
            "settle",
            "R-42",
            "--status",
            "failed",
            "--reason",
            "r",
            "--operator",
            "o",
            "--nats-url",
            "nats://x",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("TRANSACTION_ID") && error.contains("not a transaction id"),
            "{error}"
        );

        let cli = parse(&["review", "list", "--limit", "5"]).expect("list");
        assert!(matches!(
            cli.command,
            Command::Review(ReviewCommand::List(ReviewListArgs { limit: 5 }))
        ));
        assert!(parse(&["review", "list", "--limit", "0"]).is_err());
        assert!(parse(&["review", "list", "--limit", "1001"]).is_err());
    }

    #[test]
    fn explain_forms() {
        let cli = parse(&["explain", "okebayar", "208", "--operation", "purchase"]).expect("two");
        let Command::Explain(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.first.as_str(), args.second.as_deref()),
            ("okebayar", Some("208"))
        );
        assert_eq!(args.operation.as_deref(), Some("purchase"));
        let cli = parse(&["explain", "4046018", "--offline"]).expect("bare");
        let Command::Explain(args) = cli.command else {
            panic!()
        };
        assert_eq!((args.first.as_str(), args.second), ("4046018", None));
        assert!(args.offline);
        assert!(parse(&["codes", "doku", "--offline"]).is_ok());
        assert!(parse(&["codes"]).is_err());
    }

    #[test]
    fn baseline_defaults_and_limits() {
        let cli = parse(&["baseline", "--nats-url", "nats://127.0.0.1:14222"]).expect("defaults");
        let Command::Baseline(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.concurrency, args.duration, args.warmup),
            (32, Duration::from_secs(10), Duration::from_secs(2))
        );
        assert_eq!(args.nats_url, "nats://127.0.0.1:14222");
        assert!(parse(&["baseline", "--concurrency", "65"]).is_err());
        assert!(parse(&["baseline", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn bench_defaults_and_overrides() {
        let cli = parse(&["bench"]).expect("defaults");
        let Command::Bench(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.concurrency, 32);
        assert_eq!(args.duration, Duration::from_secs(30));
        assert_eq!(args.warmup, Duration::from_secs(3));
        assert_eq!(args.product, "PULSA10");
        let cli = parse(&[
            "bench",
            "--concurrency",
            "64",
            "--duration",
            "2m",
            "--warmup",
            "500ms",
        ])
        .expect("set");
        let Command::Bench(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.concurrency, 64);
        assert_eq!(args.duration, Duration::from_secs(120));
        assert_eq!(args.warmup, Duration::from_millis(500));
        assert!(parse(&["bench", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn admin_commands() {
        let cli = parse(&["client", "create", "pos-backend"]).expect("create");
        assert!(
            matches!(cli.command, Command::Client(ClientCommand::Create { ref name }) if name == "pos-backend")
        );
        let cli = parse(&[
            "products",
            "load",
            "deploy/products.toml",
            "--database-url",
            "postgres://x",
        ])
        .expect("load");
        assert!(matches!(
            cli.command,
            Command::Products(ProductsCommand::Load { .. })
        ));
        assert_eq!(cli.database_url.expect("set").expose(), "postgres://x");
        assert!(parse(&["migrate"]).is_ok());
    }

    #[test]
    fn secrets_are_masked_in_debug_and_help() {
        let cli = parse(&[
            "--api-key",
            "lk_canary",
            "--database-url",
            "postgres://u:pw@h/db",
            "migrate",
        ])
        .expect("ok");
        let shown = format!("{cli:?}");
        assert!(!shown.contains("lk_canary"), "{shown}");
        assert!(!shown.contains("pw@"), "{shown}");
        use clap::CommandFactory as _;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("LOKET_API_KEY"));
    }
}
