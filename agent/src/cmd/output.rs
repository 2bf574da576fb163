//! What the commands print: the `-o` choice and aligned tables.

use weir_generator::model::Protocol;

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    #[default]
    Table,
    /// For programs: `observe` prints one JSON flow per line, `graph` the
    /// graph as one JSON document.
    Json,
}

/// `weir policy list -o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListOutput {
    /// For people.
    Table,
    /// The agent's JSON.
    Json,
    /// The policies, one YAML stream (`kubectl apply -f` reads it).
    Yaml,
}

/// Rows (the header first) as left-aligned columns two spaces apart, one
/// line each, without trailing blanks.
#[must_use]
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `8080/TCP`, or `ICMPv4` for a protocol without ports.
#[must_use]
pub fn port(protocol: Protocol, port: u16) -> String {
    if protocol.has_ports() {
        format!("{port}/{protocol}")
    } else {
        protocol.to_string()
    }
}

/// `policy` for one, `policies` for any other count.
#[must_use]
pub fn policies_noun(count: usize) -> &'static str {
    if count == 1 { "policy" } else { "policies" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_lines_end_without_blanks() {
        let rows = [
            ["A".to_owned(), "LONG HEADER".to_owned(), String::new()],
            ["wide cell".to_owned(), "x".to_owned(), "last".to_owned()],
        ];
        assert_eq!(
            table(&rows),
            "A          LONG HEADER\nwide cell  x            last\n"
        );
        assert_eq!(port(Protocol::Tcp, 80), "80/TCP");
        assert_eq!(port(Protocol::Icmp, 0), "ICMPv4");
        assert_eq!(policies_noun(1), "policy");
        assert_eq!(policies_noun(0), "policies");
    }
}
