//! The data-file format of the catalogue and the lookup rules over it.
//!
//! A data file is TOML: an optional top-level `request_level` default and an
//! array `code` of inline tables, one line per row:
//!
//! ```toml
//! code = [
//!   { code = "208", ops = ["prepaid_inquiry"], outcome = "failed", retry = "after_fix", category = "duplicate", who = "tech_support", message = "…", action = "…", en = "…", id = "…" },
//! ]
//! ```
//!
//! `ops` (optional) limits a row to some operations; a row without `ops`
//! applies to every operation that no sibling row with the same key names.
//! `match` (optional, lower-case) makes the row a message-level variant.
//! `request_level = true` says the code rejects the request itself rather
//! than reporting the transaction's state (see the module rules in `mod.rs`).
//! Parsing checks every row (keys well formed, operations valid, texts
//! present, no two rows answering the same key, operation and message); a
//! broken file fails the data-file tests and panics on first use.

use std::collections::BTreeSet;

use super::{caution, operation_list, Category, CodeOperation, Explanation, Retry, WhoActs};
use crate::{Outcome, Provider};

/// What a provider module tells the table about its data.
pub(super) struct Spec {
    pub provider: Provider,
    /// The operations rows may name (after mapping).
    pub operations: &'static [CodeOperation],
    /// Whether a key is well formed for this provider.
    pub key_ok: fn(&str) -> bool,
    /// The embedded data file.
    pub data: &'static str,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    request_level: bool,
    code: Vec<Row>,
}

/// One row of a data file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Row {
    pub code: String,
    #[serde(default)]
    pub ops: Vec<CodeOperation>,
    #[serde(default, rename = "match")]
    pub patterns: Vec<String>,
    pub outcome: Outcome,
    pub retry: Retry,
    pub category: Category,
    pub who: WhoActs,
    pub message: String,
    pub action: String,
    pub en: String,
    pub id: String,
    #[serde(default)]
    pub request_level: Option<bool>,
}

impl Row {
    fn applies_to(&self, op: CodeOperation) -> bool {
        self.ops.is_empty() || self.ops.contains(&op)
    }

    fn names(&self, op: CodeOperation) -> bool {
        self.ops.contains(&op)
    }

    fn matches(&self, message_lower: &str) -> bool {
        !message_lower.is_empty()
            && self
                .patterns
                .iter()
                .any(|p| message_lower.contains(p.as_str()))
    }
}

/// A parsed, checked data file.
pub(super) struct Table {
    pub provider: Provider,
    pub operations: &'static [CodeOperation],
    pub rows: Vec<Row>,
    request_level: bool,
}

/// The row chosen for a lookup, with the other readings when the operation
/// was not given and they differ.
pub(super) struct Choice<'a> {
    pub row: &'a Row,
    pub alternatives: Vec<&'a Row>,
}

impl Table {
    /// Parses and checks a data file; the error lists every problem.
    pub fn parse(spec: &Spec) -> Result<Table, String> {
        let file: File = toml::from_str(spec.data)
            .map_err(|e| format!("{} catalogue data does not parse: {e}", spec.provider))?;
        let table = Table {
            provider: spec.provider,
            operations: spec.operations,
            rows: file.code,
            request_level: file.request_level,
        };
        let problems = table.problems(spec.key_ok);
        if problems.is_empty() {
            Ok(table)
        } else {
            Err(format!(
                "{} catalogue data is invalid:\n  {}",
                spec.provider,
                problems.join("\n  ")
            ))
        }
    }

    /// Parses a data file, panicking with every problem listed. The files are
    /// embedded at compile time and checked by the crate's tests, so this only
    /// fires on a data file that was changed without running them.
    pub fn load(spec: &Spec) -> Table {
        Table::parse(spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(&self, key_ok: fn(&str) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            let at = format!("row {} (code {:?})", i + 1, row.code);
            if !key_ok(&row.code) {
                problems.push(format!("{at}: malformed code for {}", self.provider));
            }
            for op in &row.ops {
                if !self.operations.contains(op) {
                    problems.push(format!(
                        "{at}: operation {op} does not apply to {} (expected one of {})",
                        self.provider,
                        operation_list(self.operations)
                    ));
                }
            }
            let mut seen = BTreeSet::new();
            for op in &row.ops {
                if !seen.insert(*op) {
                    problems.push(format!("{at}: operation {op} listed twice"));
                }
            }
            for p in &row.patterns {
                if p.trim().is_empty() || *p != p.to_lowercase() {
                    problems.push(format!(
                        "{at}: match pattern {p:?} must be non-empty lower case"
                    ));
                }
            }
            for (field, text) in [
                ("message", &row.message),
                ("action", &row.action),
                ("en", &row.en),
                ("id", &row.id),
            ] {
                if text.trim().is_empty() {
                    problems.push(format!("{at}: {field} is empty"));
                }
            }
            // Two rows may not answer the same (key, operation, message).
            for (j, other) in self.rows.iter().enumerate().skip(i + 1) {
                if other.code != row.code {
                    continue;
                }
                let ops_overlap = (row.ops.is_empty() && other.ops.is_empty())
                    || row.ops.iter().any(|op| other.ops.contains(op));
                let both_default = row.patterns.is_empty() && other.patterns.is_empty();
                let shared_pattern = row.patterns.iter().any(|p| other.patterns.contains(p));
                if ops_overlap && (both_default || shared_pattern) {
                    problems.push(format!(
                        "{at} and row {}: duplicate entry for the same operation{}",
                        j + 1,
                        if both_default {
                            ""
                        } else {
                            " and message pattern"
                        }
                    ));
                }
            }
        }
        problems
    }

    /// The operations for which `row` is the answer (without a message).
    pub fn effective_ops(&self, row: &Row) -> Vec<CodeOperation> {
        if !row.ops.is_empty() {
            return row.ops.clone();
        }
        let claimed: BTreeSet<CodeOperation> = self
            .rows
            .iter()
            .filter(|r| r.code == row.code && r.patterns.is_empty() == row.patterns.is_empty())
            .flat_map(|r| r.ops.iter().copied())
            .collect();
        self.operations
            .iter()
            .copied()
            .filter(|op| !claimed.contains(op))
            .collect()
    }

    /// Finds the row answering `key` for `op` and `message` (empty: not
    /// known). `None` when the table has no row for them.
    pub fn lookup(
        &self,
        key: &str,
        op: Option<CodeOperation>,
        message: &str,
    ) -> Option<Choice<'_>> {
        let message = message.to_lowercase();
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.code == key).collect();
        match op {
            Some(op) => {
                let cands: Vec<&Row> = rows.into_iter().filter(|r| r.applies_to(op)).collect();
                // Within each tier the most cautious row, not the first in
                // file order: a message may match several variants.
                let pick = |pred: &dyn Fn(&Row) -> bool| {
                    most_cautious(
                        &cands
                            .iter()
                            .copied()
                            .filter(|r| pred(r))
                            .collect::<Vec<_>>(),
                    )
                };
                let row = pick(&|r| r.names(op) && r.matches(&message))
                    .or_else(|| pick(&|r| r.ops.is_empty() && r.matches(&message)))
                    .or_else(|| pick(&|r| r.names(op) && r.patterns.is_empty()))
                    .or_else(|| pick(&|r| r.ops.is_empty() && r.patterns.is_empty()))
                    .or_else(|| most_cautious(&cands))?;
                Some(Choice {
                    row,
                    alternatives: Vec::new(),
                })
            }
            None => {
                let matched: Vec<&Row> = rows
                    .iter()
                    .copied()
                    .filter(|r| r.matches(&message))
                    .collect();
                let defaults: Vec<&Row> = rows
                    .iter()
                    .copied()
                    .filter(|r| r.patterns.is_empty())
                    .collect();
                let readings = if !matched.is_empty() {
                    matched
                } else if !defaults.is_empty() {
                    defaults
                } else {
                    rows
                };
                let row = most_cautious(&readings)?;
                let differ = readings.iter().any(|r| r.outcome != row.outcome);
                let alternatives = if differ { readings } else { Vec::new() };
                Some(Choice { row, alternatives })
            }
        }
    }

    /// The most cautious message variant among the rows whose key starts
    /// with `key_prefix` and that apply to `op` (any, when not given) and
    /// match `message`. Used to read a Smilepayz 2-digit `code` plus message, which
    /// may match variants of several case codes (`"Transaction expired:
    /// operation not allowed in current status"` is both `403xx00` failed
    /// and `403xx02` unknown): the file's order must not decide between them.
    pub fn find_variant(
        &self,
        key_prefix: &str,
        op: Option<CodeOperation>,
        message: &str,
    ) -> Option<&Row> {
        let message = message.to_lowercase();
        let matched: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.code.starts_with(key_prefix) && r.matches(&message))
            .filter(|r| op.is_none_or(|op| r.applies_to(op)))
            .collect();
        most_cautious(&matched)
    }

    /// The explanation a row gives for `code` and `op`, applying the rule that
    /// a rejected status request leaves the transaction unknown.
    pub fn explanation(&self, row: &Row, code: &str, op: Option<CodeOperation>) -> Explanation {
        let mut e = Explanation {
            provider: self.provider,
            code: code.to_string(),
            operation: op,
            operations: self.effective_ops(row),
            provider_message: row.message.clone(),
            outcome: row.outcome,
            retry: row.retry,
            retry_safe: row.retry.is_safe(),
            category: row.category,
            who_acts: row.who,
            operator_action: row.action.clone(),
            merchant_message_en: row.en.clone(),
            merchant_message_id: row.id.clone(),
            in_catalogue: true,
        };
        let request_level = row.request_level.unwrap_or(self.request_level);
        if let Some(op) = op {
            if op.is_status_query() && request_level && row.outcome == Outcome::Failed {
                let (en, id) = super::generic_merchant_message(Outcome::Unknown);
                e.outcome = Outcome::Unknown;
                e.retry = Retry::QueryFirst;
                e.retry_safe = false;
                e.operations = vec![op];
                e.operator_action = format!(
                    "The {op} request itself was rejected, so the transaction's status is still unknown \
                     (never fail it on this). {} Then check the status again.",
                    row.action
                );
                e.merchant_message_en = en.to_string();
                e.merchant_message_id = id.to_string();
            }
        }
        e
    }

    /// The explanation of a lookup result; without an operation, lists the
    /// other readings in the operator action.
    pub fn explain_choice(
        &self,
        choice: &Choice<'_>,
        code: &str,
        op: Option<CodeOperation>,
    ) -> Explanation {
        let mut e = self.explanation(choice.row, code, op);
        if !choice.alternatives.is_empty() {
            let readings: Vec<String> = choice
                .alternatives
                .iter()
                .map(|r| {
                    let ops = self.effective_ops(r);
                    let ops = if ops.is_empty() {
                        "other operations".to_string()
                    } else {
                        operation_list(&ops)
                    };
                    format!("{ops} → {}", r.outcome)
                })
                .collect();
            e.operator_action = format!(
                "{} (Operation not given, so this is the most cautious reading; by operation: {}.)",
                e.operator_action,
                readings.join("; ")
            );
            e.operations = choice
                .alternatives
                .iter()
                .flat_map(|r| self.effective_ops(r))
                .collect();
            e.operations.sort();
            e.operations.dedup();
        }
        e
    }
}

fn most_cautious<'a>(rows: &[&'a Row]) -> Option<&'a Row> {
    // The first of the most cautious rows, in file order.
    let best = rows.iter().map(|r| caution(r.outcome)).max()?;
    rows.iter().copied().find(|r| caution(r.outcome) == best)
}
