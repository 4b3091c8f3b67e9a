//! The command line as typed: parsed into [`Cli`], or refused in a form
//! both a newcomer and a script can read. clap's refusal is kept, with two
//! changes:
//!
//! - its usage line is the command's plain usage, the one `--help` shows
//!   (`loketctl purchase [OPTIONS] --ref <CLIENT_REF> ...`). clap's own
//!   lists every flag that was given, the ones the environment
//!   (`LOKET_API_KEY`) or a default gave included, which reads as flags to
//!   type;
//! - under `--json` a usage error is one JSON object on stderr, in the shape
//!   of every other error ([`CliError::to_json`]) with `"code": "USAGE"`,
//!   and exit code 2.
//!
//! `--help` and `--version` are clap's, as they are.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory as _, Parser as _};

use crate::{Cli, CliError};

/// A command line loketctl does not run.
#[derive(Debug)]
pub enum Refusal {
    /// Help or version (stdout, exit 0), or a usage error (stderr, exit 2),
    /// for clap to print.
    Clap(clap::Error),
    /// A usage error under `--json`: printed on stderr, exit code 2.
    Json(serde_json::Value),
}

impl Refusal {
    /// Prints the refusal where it belongs and exits with its code.
    pub fn exit(&self) -> ! {
        match self {
            Refusal::Clap(error) => error.exit(),
            Refusal::Json(error) => {
                eprintln!("{error}");
                std::process::exit(2)
            }
        }
    }
}

/// Parses `args` (the program's name first).
pub fn parse<I, T>(args: I) -> Result<Cli, Refusal>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut error = match Cli::try_parse_from(&args) {
        Ok(cli) => return Ok(cli),
        Err(error) => error,
    };
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        return Err(Refusal::Clap(error));
    }
    let mut root = Cli::command();
    // Named as clap names it: by the program's file name.
    if let Some(name) = args
        .first()
        .and_then(|arg| std::path::Path::new(arg).file_name())
        .and_then(|name| name.to_str())
    {
        root = root.bin_name(name);
    }
    root.build();
    let command = named_command(&mut root, &args);
    if json_asked(&args) {
        return Err(Refusal::Json(usage_json(&error, command)));
    }
    if error.get(ContextKind::Usage).is_some() {
        error.insert(
            ContextKind::Usage,
            ContextValue::StyledStr(command.render_usage()),
        );
    }
    Err(Refusal::Clap(error))
}

/// Whether `--json` was given: a global flag, so anywhere before a bare
/// `--` (after which everything is a value).
fn json_asked(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json")
}

/// The (sub)command `args` name: `loketctl qr pay ...` is `qr pay`; the
/// deepest one named, as far as the words go (a word that names no
/// subcommand of a command that has some ends the search: clap refuses
/// it). A long flag that takes a value, written `--flag value`, takes the
/// next word with it; loketctl has no short flag that takes one.
fn named_command<'a>(root: &'a mut clap::Command, args: &[OsString]) -> &'a mut clap::Command {
    let mut path = Vec::new();
    let mut command = &*root;
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let Some(word) = word.to_str() else {
            continue;
        };
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let takes_value = !long.contains('=')
                && command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(long) && arg.get_action().takes_values());
            if takes_value {
                words.next();
            }
        } else if !word.starts_with('-') || word == "-" {
            match command.find_subcommand(word) {
                Some(sub) => {
                    path.push(sub.get_name().to_string());
                    command = sub;
                }
                None if command.has_subcommands() => break,
                None => {}
            }
        }
    }
    let mut command = root;
    for name in path {
        command = command
            .find_subcommand_mut(name)
            .expect("found on the way down");
    }
    command
}

/// A usage error as `--json` prints it: clap's message (without `error: `,
/// its tips, the usage line and the pointer to `--help`), exit code 2, code
/// `USAGE`.
fn usage_json(error: &clap::Error, command: &clap::Command) -> serde_json::Value {
    let message = if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // Rendered, this is the command's whole help: say what is missing,
        // as clap does when other arguments were given.
        let names: Vec<&str> = command
            .get_subcommands()
            .map(|sub| sub.get_name())
            .collect();
        format!(
            "'{}' requires a subcommand but one was not provided\n  [subcommands: {}]",
            command.get_bin_name().unwrap_or(command.get_name()),
            names.join(", ")
        )
    } else {
        let rendered = error.render().to_string();
        let rendered = rendered.strip_prefix("error: ").unwrap_or(&rendered);
        rendered
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_string()
    };
    CliError::Usage(message).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(args: &[&str]) -> Refusal {
        parse(std::iter::once("loketctl").chain(args.iter().copied())).expect_err("refused")
    }

    fn json_error(args: &[&str]) -> serde_json::Value {
        match refusal(args) {
            Refusal::Json(error) => error,
            Refusal::Clap(error) => panic!("{args:?}: not JSON: {error}"),
        }
    }

    fn text_error(args: &[&str]) -> String {
        match refusal(args) {
            Refusal::Clap(error) => {
                assert_eq!(error.exit_code(), 2, "{error}");
                error.render().to_string()
            }
            Refusal::Json(error) => panic!("{args:?}: JSON: {error}"),
        }
    }

    #[test]
    fn a_usage_error_under_json_is_one_object_in_the_error_shape() {
        let error = json_error(&["--json", "purchase", "--ref", "e1", "--product", "PULSA10"]);
        assert_eq!(
            error,
            serde_json::json!({"error": {
                "message": "the following required arguments were not provided:\n  --account <ACCOUNT>",
                "exit_code": 2,
                "code": "USAGE",
            }}),
        );
        // --json anywhere before a bare `--`, after the subcommand too.
        for args in [
            &[
                "purchase",
                "--ref",
                "e1",
                "--product",
                "P",
                "--account",
                "1",
                "--wait",
                "30",
                "--json",
            ][..],
            &["purchase", "--json", "--bogus"],
            &["--json", "qr", "pay", "--ref", "e6", "--amount", "1.5"],
            &["--json", "purchse"],
            &["--json"],
            &["--json", "qr"],
        ] {
            let error = json_error(args);
            let message = error["error"]["message"].as_str().expect("a message");
            assert!(!message.is_empty(), "{args:?}: {error}");
            assert!(!message.starts_with("error:"), "{args:?}: {error}");
            assert!(!message.contains("Usage:"), "{args:?}: {error}");
            assert!(!message.contains("--help"), "{args:?}: {error}");
            assert_eq!(error["error"]["exit_code"], 2, "{args:?}: {error}");
            assert_eq!(error["error"]["code"], "USAGE", "{args:?}: {error}");
        }
        assert!(
            json_error(&["purchase", "--json", "--bogus"])["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("'--bogus'"))
        );
        assert!(json_error(&["--json", "qr"])["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("'loketctl qr' requires a subcommand")));

        // Not after `--`, and help and version are clap's.
        assert!(text_error(&["get", "a", "--", "--json"]).contains("unexpected argument '--json'"));
        for args in [
            &["--json", "--help"][..],
            &["--json", "--version"],
            &["--json", "purchase", "-h"],
        ] {
            match refusal(args) {
                Refusal::Clap(error) => assert_eq!(error.exit_code(), 0, "{args:?}"),
                Refusal::Json(error) => panic!("{args:?}: {error}"),
            }
        }
    }

    #[test]
    fn the_usage_line_is_the_commands_plain_usage_not_the_flags_given() {
        use clap::CommandFactory as _;
        let text = text_error(&[
            "--addr",
            "http://127.0.0.1:1",
            "--api-key",
            "lk_x",
            "purchase",
            "--ref",
            "e1",
            "--product",
            "PULSA10",
            "--wait",
            "5s",
        ]);
        let mut command = Cli::command();
        command.build();
        let plain = command
            .find_subcommand_mut("purchase")
            .expect("purchase")
            .render_usage()
            .to_string();
        assert_eq!(
            plain,
            "Usage: loketctl purchase [OPTIONS] --ref <CLIENT_REF> --product <PRODUCT> --account <ACCOUNT>"
        );
        assert!(text.contains(&plain), "{text}");
        assert!(text.contains("--account <ACCOUNT>"), "{text}");
        for given in ["--addr", "--api-key", "--wait"] {
            assert!(!text.contains(given), "{given}: {text}");
        }

        // Two levels down, past a global flag's value that names a command.
        let text = text_error(&["--addr", "qr", "review", "settle", "--status", "failed"]);
        assert!(
            text.contains("Usage: loketctl review settle [OPTIONS] --seen-event"),
            "{text}"
        );
        // A word that names no command: the top's usage.
        let text = text_error(&["purchse", "--ref", "R"]);
        assert!(
            text.contains("Usage: loketctl [OPTIONS] <COMMAND>"),
            "{text}"
        );
        // A value error has no usage line, and gets none.
        let text = text_error(&[
            "purchase",
            "--ref",
            "R",
            "--product",
            "P",
            "--account",
            "1",
            "--wait",
            "5",
        ]);
        assert!(!text.contains("Usage:"), "{text}");
    }
}
