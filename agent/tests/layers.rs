//! The agent crate's layering, checked on its source: the commands
//! (`cmd/`) sit on top. Nothing but `cli.rs` (the dispatch) and `cmd/`
//! itself names `cmd`, and the learner (`learn/`) is domain only: no clap,
//! no HTTP client.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a file without its comments (line comments only: the
/// crate has no block comments).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("a readable source file")
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `word` stands in `text` as a whole identifier.
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(ident)
            && !text[at + word.len()..].chars().next().is_some_and(ident)
    })
}

/// The `use` declarations of `code`, each from `use` to its `;`.
fn uses(code: &str) -> impl Iterator<Item = &str> {
    code.split(';').filter_map(|statement| {
        statement
            .match_indices("use ")
            .find(|(at, _)| !statement[..*at].chars().next_back().is_some_and(ident))
            .map(|(at, _)| &statement[at..])
    })
}

/// Files of `src` outside the command layer that name `cmd` in a path or
/// an import.
fn importers_of_cmd(src: &Path) -> Vec<PathBuf> {
    sources(src)
        .into_iter()
        .filter(|path| {
            let relative = path.strip_prefix(src).expect("under src");
            !relative.starts_with("cmd") && relative != Path::new("cli.rs")
        })
        .filter(|path| {
            let code = code(path);
            code.contains("cmd::") || uses(&code).any(|u| names(u, "cmd"))
        })
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn only_the_dispatch_imports_the_commands() {
    let importers = importers_of_cmd(&src());
    assert!(
        importers.is_empty(),
        "modules below the commands import cmd: {importers:?}"
    );
}

#[test]
fn the_learner_has_no_cli_and_no_http() {
    for path in sources(&src().join("learn")) {
        let code = code(&path);
        for word in ["clap", "reqwest"] {
            assert!(!names(&code, word), "{} names {word}", path.display());
        }
    }
}

#[test]
fn the_checks_see_imports_in_every_form() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        std::fs::write(path, text).expect("written");
    };
    write("cli.rs", "use crate::cmd::learn;\n");
    write("cmd/learn.rs", "use crate::learn;\n");
    write(
        "ok.rs",
        "// see cmd::learn\nuse std::process::Command;\nlet cmdline = 1;\n",
    );
    assert!(importers_of_cmd(dir.path()).is_empty());
    write("a.rs", "use crate::{\n    cmd, daemon,\n};\n");
    write("b/mod.rs", "fn f() { crate::cmd::output::table(&[]); }\n");
    write("c.rs", "use super::{cmd::client::endpoint, x};\n");
    write("d.rs", "// because cmd\nfn f() { let _ = refuse (cmd); }\n");
    let mut found: Vec<String> = importers_of_cmd(dir.path())
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    found.sort();
    assert_eq!(found, ["a.rs", "b/mod.rs", "c.rs"]);
    assert!(names("use clap::Args;", "clap") && !names("use clapper;", "clap"));
}
