//! `loketctl`: parse the command line, run it, print errors as
//! `error: CODE: message` (with `--json`, as one JSON object) on stderr and
//! exit non-zero.

fn main() {
    let cli = loket_cli::args::parse(std::env::args_os()).unwrap_or_else(|refusal| refusal.exit());
    let json = cli.json;
    let runtime = loket_runtime::runtime().unwrap_or_else(|error| {
        eprintln!("error: starting the tokio runtime: {error}");
        std::process::exit(1);
    });
    if let Err(error) = runtime.block_on(loket_cli::run(cli)) {
        if error.is_closed_output() {
            // Nobody reads our output any more.
        } else if json {
            eprintln!("{}", error.to_json());
        } else {
            eprintln!(
                "error: {}",
                loket_cli::output::printable(&error.to_string())
            );
        }
        std::process::exit(error.exit_code());
    }
}
