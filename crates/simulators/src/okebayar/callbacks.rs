//! The asynchronous half of a scenario: ledger transitions and callbacks,
//! step by step, `callback_delay_ms` apart. Callbacks go to `callback_url`
//! by GET (query string) or POST (body in the original request's format,
//! root `<transaction-status>`, ASSUMED) with `tracecode`, `referencecode`,
//! `status`, `serialnumber`, `harga` (what the deposit gave: 0 for a
//! failure, spec §4), `transactiontime`, `productcode` and `accnumber`. They
//! are unsigned, as OkeBayar's are (spec §6).

use std::time::Duration;

use chrono::Utc;
use loket_okebayar::wire::{format_time, Format};

use super::reply::Reply;
use super::scenarios::{AmountStyle, Step};
use super::OkeBayarSim;
use crate::common::OutgoingCallback;

/// What a callback needs to know about the request it completes.
#[derive(Debug, Clone)]
pub(crate) struct CallbackContext {
    pub(crate) reference: String,
    pub(crate) format: Format,
    pub(crate) style: AmountStyle,
}

/// Runs `steps` in order, each `at` × `callback_delay_ms` after the start.
/// Stops early when the simulator shuts down.
pub(crate) async fn run_steps(sim: OkeBayarSim, context: CallbackContext, steps: Vec<Step>) {
    let delay = Duration::from_millis(sim.inner.settings.callback_delay_ms);
    let start = tokio::time::Instant::now();
    for step in steps {
        let due = start + delay * step.at;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = sim.inner.stop.wait() => return,
        }
        if let Some(code) = step.settle {
            let ledger = &sim.inner.ledger;
            if ledger
                .settle(&context.reference, code, || ledger.next_serial())
                .is_some()
            {
                tracing::debug!(reference = %context.reference, code, "scenario: ledger settled");
            }
        }
        if let Some((status, copies)) = step.callback {
            let Some(callback) = build(&sim, &context, status, step.ghost) else {
                continue;
            };
            let deliveries =
                (0..copies.max(1)).map(|_| sim.inner.callbacks.deliver(callback.clone()));
            futures::future::join_all(deliveries).await;
        }
    }
}

/// The callback carrying `status` for the context's reference, or `None`
/// when no callback URL is configured.
fn build(
    sim: &OkeBayarSim,
    context: &CallbackContext,
    status: &str,
    ghost: bool,
) -> Option<OutgoingCallback> {
    let settings = &sim.inner.settings;
    let url = settings.callback_url.clone()?;
    let entry = sim.ledger_state(&context.reference)?;
    let (reference, tracecode) = if ghost {
        let trace = sim.inner.ledger.next_tracecode();
        (format!("GHOST{trace}"), trace)
    } else {
        (entry.reference.clone(), entry.tracecode.clone())
    };
    let serial = if status == "000" {
        entry.serial_number.as_str()
    } else {
        ""
    };
    let reply = Reply::new()
        .text("tracecode", tracecode)
        .text("referencecode", &reference)
        .text("status", status)
        .text("serialnumber", serial)
        .amount("harga", entry.charged(), context.style)
        .text("transactiontime", format_time(Utc::now()))
        .text("productcode", &entry.productcode)
        .text("accnumber", &entry.accnumber);
    Some(OutgoingCallback {
        reference,
        label: status.to_string(),
        url,
        method: settings.callback_method,
        query: reply.pairs(),
        body: reply.encode_as(context.format, settings.doc_literal_xml),
        content_type: context.format.content_type(),
    })
}
