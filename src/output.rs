//! Rendering shared by every subcommand: JSON, and tables a tired person reads at a glance.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use comfy_table::{presets, ContentArrangement, Table};
use netprobe_probes::Health;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
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

/// Colour only for a terminal, and never when NO_COLOR is set (no-color.org).
pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
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
}
