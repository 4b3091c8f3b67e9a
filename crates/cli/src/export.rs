//! `loketctl export`: finance's side of a reconciliation with a provider.
//! Every transaction of one provider created in a period, across clients,
//! one row each with the references the provider's statement carries (our
//! reference, the provider's trace), the amounts (ours and what the provider
//! reported) and the outcome, as CSV or JSON lines (the same figures in
//! both, times to the millisecond), followed by totals per kind and status.
//! It reads the database directly and writes nothing.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt as _;
use loket_protocol::{wib, Provider, TransactionStatus};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::output::{millis, MoneyView, Render};
use crate::CliError;

/// What to export: one provider, transactions created in `[from, until)`,
/// optionally of one status.
#[derive(Debug, Clone)]
pub struct ExportQuery {
    pub provider: Provider,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub status: Option<TransactionStatus>,
}

/// The row format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    Csv,
    JsonLines,
}

/// A period bound: RFC 3339, or a date (`2026-11-22`), which means that
/// day's midnight in WIB.
pub fn parse_bound(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .and_then(|midnight| midnight.and_local_timezone(wib()).single())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| {
            format!("{text:?} is neither a date (2026-11-22, a WIB day) nor an RFC 3339 time")
        })
}

#[derive(Debug, sqlx::FromRow, Serialize)]
pub struct ExportRow {
    #[serde(serialize_with = "serialize_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_optional_time")]
    pub finalized_at: Option<DateTime<Utc>>,
    pub id: Uuid,
    pub client: String,
    pub client_ref: String,
    pub kind: String,
    pub product_code: String,
    pub provider: String,
    pub our_reference: String,
    pub provider_trace: Option<String>,
    pub account: String,
    pub amount_minor: Option<i64>,
    pub currency: String,
    pub provider_amount_minor: Option<i64>,
    pub amount_mismatch: bool,
    pub status: String,
    pub provider_code: Option<String>,
    pub serial_number: Option<String>,
}

const COLUMNS: [&str; 18] = [
    "created_at",
    "finalized_at",
    "id",
    "client",
    "client_ref",
    "kind",
    "product_code",
    "provider",
    "our_reference",
    "provider_trace",
    "account",
    "amount_minor",
    "currency",
    "provider_amount_minor",
    "amount_mismatch",
    "status",
    "provider_code",
    "serial_number",
];

/// Both row formats write times as loketctl prints them everywhere
/// ([`millis`]). PostgreSQL keeps microseconds, which serde's default would
/// print in the JSON lines alone, so the same row would carry two different
/// figures.
fn serialize_time<S: serde::Serializer>(at: &DateTime<Utc>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&millis(at))
}

fn serialize_optional_time<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    out: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize_time(at, out),
        None => out.serialize_none(),
    }
}

impl ExportRow {
    fn csv_line(&self) -> String {
        let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        let fields = [
            millis(&self.created_at),
            self.finalized_at.as_ref().map(millis).unwrap_or_default(),
            self.id.to_string(),
            text_cell(&self.client),
            text_cell(&self.client_ref),
            text_cell(&self.kind),
            text_cell(&self.product_code),
            text_cell(&self.provider),
            text_cell(&self.our_reference),
            text_cell(self.provider_trace.as_deref().unwrap_or("")),
            text_cell(&self.account),
            number(self.amount_minor),
            text_cell(&self.currency),
            number(self.provider_amount_minor),
            self.amount_mismatch.to_string(),
            text_cell(&self.status),
            text_cell(self.provider_code.as_deref().unwrap_or("")),
            text_cell(self.serial_number.as_deref().unwrap_or("")),
        ];
        fields.map(|field| quoted(&field)).join(",")
    }

    /// The row as `format` writes it, without the line end.
    fn line(&self, format: RowFormat) -> String {
        match format {
            RowFormat::Csv => self.csv_line(),
            RowFormat::JsonLines => serde_json::to_string(self).expect("a row always serializes"),
        }
    }
}

/// A text cell a spreadsheet will not run: values from clients and
/// providers that start like a formula (`=`, `+`, `-`, `@`, tab, CR) get a
/// leading `'`.
fn text_cell(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_string(),
    }
}

/// RFC 4180 quoting: only where needed, quotes doubled.
fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Counts and sums per status, and how many amounts the provider reported
/// differently: the figures to hold against the provider's statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub provider: String,
    pub from: String,
    pub until: String,
    pub rows: u64,
    /// Count and our amounts per kind, then per status. Kinds are never
    /// added together: a payment and its refund, or a pay-in and a pay-out,
    /// move money in opposite directions.
    pub by_kind: BTreeMap<String, BTreeMap<String, StatusTotal>>,
    pub amount_mismatches: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusTotal {
    pub count: u64,
    /// Our amounts, in minor units (IDR has none: rupiah).
    pub amount_minor: i64,
}

/// Writes the rows of `query` to `out` as they are read (a long period is
/// never held in memory), and returns the totals.
pub async fn export(
    pool: &PgPool,
    query: &ExportQuery,
    format: RowFormat,
    out: &mut impl Write,
) -> Result<ExportSummary, CliError> {
    if query.from >= query.until {
        return Err(CliError::Usage("--until must be after --from".to_string()));
    }
    let io = |error: std::io::Error| CliError::Io {
        path: "standard output".into(),
        source: error,
    };
    if format == RowFormat::Csv {
        writeln!(out, "{}", COLUMNS.join(",")).map_err(io)?;
    }
    let mut summary = ExportSummary {
        provider: query.provider.as_str().to_string(),
        from: query.from.with_timezone(&wib()).to_rfc3339(),
        until: query.until.with_timezone(&wib()).to_rfc3339(),
        ..ExportSummary::default()
    };
    let mut rows = sqlx::query_as::<_, ExportRow>(
        "SELECT t.created_at, t.finalized_at, t.id, COALESCE(c.name, t.client_id::text) AS client, \
                t.client_ref, t.kind, \
                t.product_code, t.provider, t.provider_reference AS our_reference, t.provider_trace, \
                t.account, t.amount_minor, t.currency, t.provider_amount_minor, t.amount_mismatch, \
                t.status, t.provider_code, t.serial_number \
         FROM transactions t LEFT JOIN clients c ON c.id = t.client_id \
         WHERE t.provider = $1 AND t.created_at >= $2 AND t.created_at < $3 \
           AND ($4::text IS NULL OR t.status = $4) \
         ORDER BY t.created_at, t.id",
    )
    .bind(query.provider.as_str())
    .bind(query.from)
    .bind(query.until)
    .bind(query.status.map(|s| s.as_str()))
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        writeln!(out, "{}", row.line(format)).map_err(io)?;
        summary.count(&row);
    }
    out.flush().map_err(io)?;
    Ok(summary)
}

impl ExportSummary {
    fn count(&mut self, row: &ExportRow) {
        self.rows += 1;
        self.amount_mismatches += u64::from(row.amount_mismatch);
        let total = self
            .by_kind
            .entry(row.kind.clone())
            .or_default()
            .entry(row.status.clone())
            .or_default();
        total.count += 1;
        total.amount_minor += row.amount_minor.unwrap_or(0);
    }
}

impl Render for ExportSummary {
    fn text(&self) -> String {
        let mut rows = vec![(
            "exported".to_string(),
            format!(
                "{} {} transactions created in [{}, {})",
                self.rows, self.provider, self.from, self.until
            ),
        )];
        for (kind, statuses) in &self.by_kind {
            for (status, total) in statuses {
                let amount = MoneyView {
                    minor: total.amount_minor,
                    currency: "IDR".into(),
                };
                rows.push((
                    format!("  {kind} {status}"),
                    format!("{} ({amount})", total.count),
                ));
            }
        }
        if self.amount_mismatches > 0 {
            rows.push((
                "AMOUNT MISMATCH".to_string(),
                format!(
                    "{} transactions: the provider reported another amount",
                    self.amount_mismatches
                ),
            ));
        }
        // The figures in one column, however long a kind's name.
        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(label, value)| format!("{label:<width$} {value}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_a_wib_day_and_a_time_is_taken_as_written() {
        assert_eq!(
            parse_bound("2026-11-22").unwrap().to_rfc3339(),
            "2026-11-21T17:00:00+00:00"
        );
        assert_eq!(
            parse_bound("2026-11-22T10:00:00Z").unwrap().to_rfc3339(),
            "2026-11-22T10:00:00+00:00"
        );
        assert!(parse_bound("22/11/2026").is_err());
        assert!(parse_bound("2026-02-30").is_err());
    }

    /// A row of `kind` in `status` for `amount`, the rest left blank.
    fn row(kind: &str, status: &str, amount: i64) -> ExportRow {
        ExportRow {
            created_at: Utc::now(),
            finalized_at: None,
            id: Uuid::nil(),
            client: "client-a".into(),
            client_ref: "r".into(),
            kind: kind.into(),
            product_code: "QR".into(),
            provider: "snapqr".into(),
            our_reference: "ref".into(),
            provider_trace: None,
            account: String::new(),
            amount_minor: Some(amount),
            currency: "IDR".into(),
            provider_amount_minor: None,
            amount_mismatch: false,
            status: status.into(),
            provider_code: None,
            serial_number: None,
        }
    }

    #[test]
    fn totals_never_add_a_refund_or_cancel_to_the_payment_it_undoes() {
        let mut summary = ExportSummary::default();
        for (kind, status, amount) in [
            ("qr_payment", "success", 100_000),
            ("qr_payment", "success", 50_000),
            ("qr_cancel", "success", 100_000),
            ("qr_payment", "failed", 7_000),
        ] {
            summary.count(&row(kind, status, amount));
        }
        assert_eq!(summary.rows, 4);
        let payments = &summary.by_kind["qr_payment"];
        assert_eq!(payments["success"].count, 2);
        assert_eq!(payments["success"].amount_minor, 150_000);
        assert_eq!(payments["failed"].amount_minor, 7_000);
        assert_eq!(
            summary.by_kind["qr_cancel"]["success"].amount_minor,
            100_000
        );
        let text = summary.text();
        assert!(text.contains("qr_payment success"), "{text}");
        assert!(text.contains("qr_cancel success"), "{text}");
    }

    /// The summary printed is the README's example, figures in one column.
    #[test]
    fn the_summary_reads_as_the_readme_shows_it() {
        let mut summary = ExportSummary {
            provider: "okebayar".into(),
            from: "2026-11-22T00:00:00+07:00".into(),
            until: "2026-11-23T00:00:00+07:00".into(),
            ..ExportSummary::default()
        };
        for status in ["success", "failed", "success"] {
            summary.count(&row("prepaid_purchase", status, 10_500));
        }
        let readme = include_str!("../../../README.md");
        let example = format!("> okebayar-2026-11-22.csv\n{}\n```", summary.text());
        assert!(readme.contains(&example), "the README's example: {example}");
    }

    /// Every column of one row reads the same in the CSV and in the JSON
    /// line: the times included, which PostgreSQL holds to the microsecond.
    #[test]
    fn csv_and_json_lines_carry_the_same_figures() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let row = ExportRow {
            created_at: at("2026-11-22T04:35:42.964123Z"),
            finalized_at: Some(at("2026-11-22T04:35:43.000987Z")),
            id: Uuid::nil(),
            client: "client-a".into(),
            client_ref: "r1".into(),
            kind: "prepaid_purchase".into(),
            product_code: "PULSA10".into(),
            provider: "okebayar".into(),
            our_reference: "LKT1".into(),
            provider_trace: Some("0795347342000001".into()),
            account: "081234567890".into(),
            amount_minor: Some(10_500),
            currency: "IDR".into(),
            provider_amount_minor: None,
            amount_mismatch: false,
            status: "success".into(),
            provider_code: Some("000".into()),
            serial_number: None,
        };
        let csv = row.line(RowFormat::Csv);
        let json: serde_json::Value =
            serde_json::from_str(&row.line(RowFormat::JsonLines)).unwrap();
        let cells: Vec<&str> = csv.split(',').collect();
        assert_eq!(cells.len(), COLUMNS.len(), "{csv}");
        for (column, cell) in COLUMNS.iter().zip(cells) {
            let value = match &json[column] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            assert_eq!(value, cell, "{column}: JSON {json} vs CSV {csv}");
        }
        assert_eq!(json["created_at"], "2026-11-22T04:35:42.964Z");
        assert_eq!(json["finalized_at"], "2026-11-22T04:35:43.000Z");
    }

    #[test]
    fn cells_are_quoted_only_where_needed_and_never_run_as_formulas() {
        assert_eq!(quoted("plain"), "plain");
        assert_eq!(quoted("a,b"), "\"a,b\"");
        assert_eq!(quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quoted("two\nlines"), "\"two\nlines\"");
        assert_eq!(text_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(text_cell("+6281234"), "'+6281234");
        assert_eq!(text_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(text_cell("081234"), "081234");
    }
}
