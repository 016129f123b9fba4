//! Everything the binary writes, in one place: a report as JSON or as the table its subcommand
//! draws ([`report`]), an error as one line on stderr and, with `-o json`, a JSON object on stdout
//! ([`error`]), and the pieces tables are made of.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use clap::ValueEnum;
use comfy_table::{presets, ContentArrangement, Table};
use netprobe_probes::{Error, Health};
use serde::Serialize;

use crate::exit::Exit;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `--color`: as ripgrep and dog take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Whether verdicts are coloured: decided once, from `--color`, before anything is written.
static COLOR: OnceLock<bool> = OnceLock::new();

/// Decides colour for the whole run: `auto` colours a terminal unless NO_COLOR is set
/// (no-color.org); `always` and `never` say it outright.
pub fn set_color(choice: ColorChoice) {
    let on = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal(),
    };
    let _ = COLOR.set(on);
}

/// A report: JSON for scripts, or the table `table` draws from it for people.
pub fn report<T: Serialize>(format: Format, value: &T, table: impl FnOnce(&T) -> String) {
    emit(&match format {
        Format::Json => json(value),
        Format::Table => table(value),
    });
}

/// An error that stopped a command: always one line on stderr; with `-o json` also a JSON object
/// on stdout (`{"error": {"kind", "exit_code", "message"}}`), so a script reads its answer where
/// it reads a report's.
pub fn error(format: Format, message: &str, exit: Exit) {
    eprintln!("netprobe: {message}");
    if format == Format::Json {
        error_json(message, exit);
    }
}

/// The JSON object of [`error`] alone (for clap's usage errors, whose words clap prints itself).
pub fn error_json(message: &str, exit: Exit) {
    emit(&json(&ErrorReport { error: ErrorBody { kind: exit.word(), exit_code: exit.code(), message } }));
}

/// [`error`] for a probe's error.
pub fn probe_error(format: Format, err: &Error) -> Exit {
    let exit = Exit::from_error(err);
    error(format, &err.to_string(), exit);
    exit
}

#[derive(Serialize)]
struct ErrorReport<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'static str,
    exit_code: u8,
    message: &'a str,
}

/// Writes `text` to stdout. A closed pipe (`netprobe ... | head`) is not an error worth a panic.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

pub fn json<T: Serialize>(value: &T) -> String {
    // Serialising our own report types cannot fail: they hold no maps with non-string keys.
    let mut text = serde_json::to_string(value).expect("reports serialise");
    text.push('\n');
    text
}

/// Whether [`set_color`] turned colour on (off until it is called).
pub fn color_enabled() -> bool {
    COLOR.get().copied().unwrap_or(false)
}

/// The verdict word, upper case, green when healthy and red when not (on a colour terminal).
pub fn verdict(word: &str, health: Health) -> String {
    let word = word.to_uppercase();
    if !color_enabled() {
        return word;
    }
    let code = if health == Health::Ok { "32" } else { "31" };
    format!("\x1b[1;{code}m{word}\x1b[0m")
}

/// A borderless table with a header row, like kubectl's.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    table
}

/// A from-by-to matrix: the corner's header upper case, the columns (names of things, as node
/// names are) as they are written.
pub fn matrix(corner: &str, columns: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(std::iter::once(corner.to_uppercase()).chain(columns.iter().map(|c| c.to_string())));
    table
}

/// A count with thousands separators, as people read them: 1055488 -> 1,055,488.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_055_488), "1,055,488");
    }

    #[test]
    fn an_error_as_json_names_its_kind_and_code() {
        let body = ErrorReport {
            error: ErrorBody {
                kind: Exit::BadInput.word(),
                exit_code: 2,
                message: "--count: between 1 and 1000",
            },
        };
        assert_eq!(
            json(&body),
            "{\"error\":{\"kind\":\"bad-input\",\"exit_code\":2,\"message\":\"--count: between 1 and 1000\"}}\n"
        );
    }
}
