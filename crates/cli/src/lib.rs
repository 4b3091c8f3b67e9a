//! loketctl, the command line of loket, as a library so its parsing,
//! validation and printing are unit-tested. It owns: the clap command tree
//! ([`cli`]) and what is printed for a command line it refuses ([`args`]),
//! the gRPC client with the `x-api-key` interceptor ([`client`]), the
//! settings a flag or the environment gives ([`setting`]), the gRPC
//! commands ([`commands`]), the database-side commands — migrations,
//! client API keys, the product catalogue ([`admin`], [`products`],
//! [`keys`]), the support search by any reference ([`find`]) and finance's
//! export for reconciling with a provider ([`export`]) — operators' review
//! of the transactions parked in `needs_review` ([`review`]), every printed
//! result ([`output`]), the load benchmark ([`bench`]) and the bare pipeline
//! it is read against ([`baseline`]).
//!
//! It must not decide anything about a transaction by itself: it never
//! writes transactions or their states (the ingress creates them, the
//! reconciler moves them). An operator's decision on a transaction in review
//! is published as an event for the reconciler to apply, like a provider's
//! report. It never prints a secret — an API key is shown exactly once, when
//! created; the database and NATS URLs never.

pub mod admin;
pub mod args;
pub mod baseline;
pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod duration;
pub mod error;
pub mod export;
pub mod find;
pub mod keys;
pub mod output;
pub mod products;
pub mod review;
pub mod setting;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use cli::Cli;
pub use error::CliError;

use cli::{ClientCommand, Command, ProductsCommand, QrCommand, ReviewCommand};
use output::{render, render_line, Format, TransactionView};

/// Runs one command and prints its result on stdout. Errors are returned for
/// the binary to print on stderr with a non-zero exit code.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let format = if cli.json { Format::Json } else { Format::Text };

    match &cli.command {
        Command::Migrate => {
            let pool = admin::connect(cli.database_url.as_ref()).await?;
            print(render(format, &admin::migrate(&pool).await?))?;
        }
        Command::Client(command) => {
            let pool = admin::connect(cli.database_url.as_ref()).await?;
            match command {
                ClientCommand::Create { name } => {
                    admin::create_client(&pool, name, |created| print(render(format, created)))
                        .await?;
                }
                ClientCommand::List => print(render(format, &admin::list_clients(&pool).await?))?,
                ClientCommand::Disable { name } => print(render(
                    format,
                    &admin::set_client_disabled(&pool, name, true).await?,
                ))?,
                ClientCommand::Enable { name } => print(render(
                    format,
                    &admin::set_client_disabled(&pool, name, false).await?,
                ))?,
            }
        }
        Command::Products(command) => match command {
            ProductsCommand::Load { file } => {
                // Validate before connecting: a bad file needs no database.
                let products = admin::read_catalogue(file)?;
                let pool = admin::connect(cli.database_url.as_ref()).await?;
                print(render(
                    format,
                    &admin::upsert_products(&pool, &products).await?,
                ))?;
            }
            ProductsCommand::List => {
                let pool = admin::connect(cli.database_url.as_ref()).await?;
                print(render(format, &admin::list_products(&pool).await?))?;
            }
        },
        Command::Purchase(args) => {
            let mut client = ingress(&cli).await?;
            print(render(
                format,
                &commands::purchase(&mut client, args).await?,
            ))?;
        }
        Command::Inquire(args) => {
            let mut client = ingress(&cli).await?;
            print(render(format, &commands::inquire(&mut client, args).await?))?;
        }
        Command::Pay(args) => {
            let mut client = ingress(&cli).await?;
            print(render(format, &commands::pay(&mut client, args).await?))?;
        }
        Command::Qr(command) => {
            let mut client = ingress(&cli).await?;
            let view = match command {
                QrCommand::Pay(args) => commands::qr_pay(&mut client, args).await?,
                QrCommand::Query(args) => commands::qr_query(&mut client, args).await?,
                QrCommand::Cancel(args) => commands::qr_cancel(&mut client, args).await?,
                QrCommand::Refund(args) => commands::qr_refund(&mut client, args).await?,
            };
            print(render(format, &view))?;
        }
        Command::Payin(args) => {
            let mut client = ingress(&cli).await?;
            print(render(format, &commands::pay_in(&mut client, args).await?))?;
        }
        Command::Payout(args) => {
            let mut client = ingress(&cli).await?;
            print(render(format, &commands::pay_out(&mut client, args).await?))?;
        }
        Command::Get(args) => {
            let mut client = ingress(&cli).await?;
            print(render(format, &commands::get(&mut client, args).await?))?;
        }
        Command::Find(args) => {
            let pool = admin::connect(cli.database_url.as_ref()).await?;
            print(render(
                format,
                &find::find(&pool, &args.reference, args.limit)
                    .await?
                    .found_any()?,
            ))?;
        }
        Command::Export(args) => {
            let pool = admin::connect(cli.database_url.as_ref()).await?;
            let query = export::ExportQuery {
                provider: args.provider,
                from: args.from,
                until: args.until,
                status: args.status,
            };
            let rows = match format {
                Format::Json => export::RowFormat::JsonLines,
                Format::Text => export::RowFormat::Csv,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout());
            let summary = export::export(&pool, &query, rows, &mut out).await?;
            // The totals go to stderr, so stdout redirected to a file is
            // the rows alone.
            eprintln!("{}", render(format, &summary));
        }
        Command::Review(ReviewCommand::List(args)) => {
            let pool = admin::connect(cli.database_url.as_ref()).await?;
            print(render(format, &review::list(&pool, args.limit).await?))?;
        }
        Command::Review(ReviewCommand::Settle(args)) => {
            // Checked before connecting: a bad flag needs no database.
            let decision = review::decision(args)?;
            let nats_url = review::nats_url(args)?;
            let pool = admin::connect(cli.database_url.as_ref()).await?;
            print(render(
                format,
                &review::settle(&pool, nats_url, &decision, args.wait).await?,
            ))?;
        }
        Command::List(args) => {
            let mut client = ingress(&cli).await?;
            print(render(format, &commands::list(&mut client, args).await?))?;
        }
        Command::Watch(args) => {
            let mut client = ingress(&cli).await?;
            let mut stream = commands::watch(&mut client, args.id.clone()).await?;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    item = stream.message() => match item? {
                        Some(t) => print(render_line(format, &TransactionView::from_pb(&t)))?,
                        None => return Err(CliError::StreamClosed),
                    },
                }
            }
        }
        Command::Balance(args) => {
            let mut client = ingress(&cli).await?;
            print(render(format, &commands::balance(&mut client, args).await?))?;
        }
        Command::Explain(args) => {
            let query = commands::explain_query(args)?;
            let view = if args.offline {
                commands::explain_offline(&query)?
            } else {
                let mut client = ingress(&cli).await?;
                commands::explain_online(&mut client, &query).await?
            };
            print(render(format, &view))?;
        }
        Command::Codes(args) => {
            let view = if args.offline {
                commands::codes_offline(args)
            } else {
                let mut client = ingress(&cli).await?;
                commands::codes_online(&mut client, args).await?
            };
            print(render(format, &view))?;
        }
        Command::Bench(args) => {
            let key = client::api_key(cli.api_key.as_ref())?;
            let (stop, signal) = stop_on_ctrl_c();
            let report = bench::run(&cli.addr, Some(key), args, stop).await;
            signal.abort();
            print(render(format, &report?))?;
        }
        Command::Baseline(args) => {
            let (stop, signal) = stop_on_ctrl_c();
            let report = baseline::run(cli.database_url.as_ref(), &args.nats_url, args, stop).await;
            signal.abort();
            print(render(format, &report?))?;
        }
    }
    Ok(())
}

/// The connection a command that calls the ingress uses, with the API key
/// it must have (missing, it is named before connecting).
async fn ingress(cli: &Cli) -> Result<client::Client, CliError> {
    let key = client::api_key(cli.api_key.as_ref())?;
    client::connect(&cli.addr, Some(key)).await
}

/// A flag Ctrl-C sets, for a benchmark to stop early and still report; abort
/// the returned task when done.
fn stop_on_ctrl_c() -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    let signal = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::Relaxed);
        }
    });
    (stop, signal)
}

/// Prints one result on stdout. A reader that went away (`loketctl list |
/// head`) is an error the binary ends on quietly, not a panic.
fn print(text: String) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            path: "standard output".into(),
            source,
        })
}
