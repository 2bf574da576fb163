//! The agent crate's module rule, checked on its source: the layer table
//! at the top of `src/lib.rs` gives every top-level module a layer, and a
//! module imports only from lower layers, or from its own layer without
//! an import circle. The CLI client (`cmd`) reads the API only through its
//! wire types (`api::wire`). A new module missing from the table, an
//! import upwards or a new circle fails here, naming the file.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// `//! | 2 | `api` | ... |` rows of lib.rs's layer table: module -> layer.
fn layer_table(lib_rs: &str) -> BTreeMap<String, u32> {
    let mut layers = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(layer), Some(module)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        let (Ok(layer), Some(module)) = (
            layer.parse::<u32>(),
            module.strip_prefix('`').and_then(|m| m.strip_suffix('`')),
        ) else {
            continue;
        };
        layers.insert(module.to_owned(), layer);
    }
    layers
}

/// One `crate::`-rooted reference, as a path (`["api", "wire", "Graph"]`).
type Reference = Vec<String>;

/// Collects the top-level modules a file refers to, through `use` trees and
/// paths in code, resolving `super::` against the file's module path.
struct References {
    /// The module the visitor is in: the file's path, plus inline `mod`s.
    here: Vec<String>,
    found: Vec<Reference>,
}

impl References {
    /// A path's leading segments, `crate`/`super`/`self` resolved.
    fn resolve(&mut self, segments: &[String]) {
        let mut at: Vec<String> = match segments.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("super") => self.here.clone(),
            _ => return,
        };
        let mut rest = &segments[1..];
        if segments[0] == "super" {
            at.pop();
            while rest.first().map(String::as_str) == Some("super") {
                at.pop();
                rest = &rest[1..];
            }
        }
        let full: Vec<String> = at.iter().chain(rest).cloned().collect();
        if !full.is_empty() {
            self.found.push(full);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.resolve(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix, item);
                }
            }
        }
    }
}

/// `#[cfg(test)]`: test code may reach across layers for its fixtures.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

impl<'ast> Visit<'ast> for References {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            _ => &[],
        };
        if !test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(&segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.here.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.here.pop();
    }
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// `api/enforce.rs` -> `["api", "enforce"]`, `api/mod.rs` -> `["api"]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts
}

/// The table's entry a module path belongs to: the longest entry that is a
/// prefix of it (`api::wire` before `api`), else its top-level module.
fn node(layers: &BTreeMap<String, u32>, path: &[String]) -> String {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|key| layers.contains_key(key))
        .unwrap_or_else(|| path[0].clone())
}

/// One source file of the crate that is not test-only.
struct Source {
    relative: PathBuf,
    /// Its module path (`["api", "enforce"]`).
    here: Vec<String>,
    text: String,
    syntax: syn::File,
}

/// The crate's files, without those of modules declared `#[cfg(test)]`.
fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut all = Vec::new();
    let mut test_modules: Vec<Vec<String>> = Vec::new();
    for file in files {
        let relative = file.strip_prefix(SRC).expect("under src").to_owned();
        let here = module_path(&relative);
        // lib.rs declares the modules, main.rs is the binary: neither is a layer.
        if here.is_empty() || here == ["main"] || here == ["lib"] {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is readable");
        let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for item in &syntax.items {
            if let syn::Item::Mod(m) = item
                && m.content.is_none()
                && test_only(&m.attrs)
            {
                test_modules.push(here.iter().cloned().chain([m.ident.to_string()]).collect());
            }
        }
        all.push(Source {
            relative,
            here,
            text,
            syntax,
        });
    }
    all.retain(|s| !test_modules.iter().any(|t| s.here.starts_with(t)));
    all
}

/// Node -> nodes it imports, with the file of one such import (test-only
/// items left out).
fn imports(
    layers: &BTreeMap<String, u32>,
    sources: &[Source],
) -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for source in sources {
        let from = node(layers, &source.here);
        let mut refs = References {
            here: source.here.clone(),
            found: Vec::new(),
        };
        refs.visit_file(&source.syntax);
        let edges = graph.entry(from.clone()).or_default();
        for path in refs.found {
            let to = node(layers, &path);
            if to != from {
                edges.entry(to).or_insert_with(|| source.relative.clone());
            }
        }
    }
    graph
}

/// Whether `word` stands in `code` as an identifier, outside `//` comments
/// (derives and attributes included, which syn leaves as tokens).
fn names(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .any(|line| {
            line.match_indices(word).any(|(at, _)| {
                !line[..at].chars().next_back().is_some_and(ident)
                    && !line[at + word.len()..].chars().next().is_some_and(ident)
            })
        })
}

/// The import circles among `modules`: strongly connected components of
/// more than one module (Tarjan's algorithm, recursive: the graph is small).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(v);
        }
    }
    tarjan.found
}

#[test]
fn modules_import_only_downwards_and_without_circles() {
    let lib_rs = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).expect("lib.rs");
    let layers = layer_table(&lib_rs);
    assert!(
        layers.len() > 5,
        "src/lib.rs has no layer table: {layers:?}"
    );
    let sources = sources();
    let graph = imports(&layers, &sources);

    let mut problems = Vec::new();
    for module in graph.keys() {
        if !layers.contains_key(module) {
            problems.push(format!(
                "module `{module}` is not in src/lib.rs's layer table"
            ));
        }
    }
    for (from, to) in &graph {
        let Some(&from_layer) = layers.get(from) else {
            continue;
        };
        for (module, file) in to {
            let Some(&to_layer) = layers.get(module) else {
                continue;
            };
            if to_layer > from_layer {
                problems.push(format!(
                    "{}: `{from}` (layer {from_layer}) imports `{module}` (layer {to_layer}), a higher layer",
                    file.display()
                ));
            }
            if from == "cmd" && module == "api" {
                problems.push(format!(
                    "{}: `cmd` imports the API server; the CLI reads the API through `api::wire` only",
                    file.display()
                ));
            }
        }
    }
    let edges: BTreeMap<String, BTreeSet<String>> = graph
        .iter()
        .map(|(from, to)| (from.clone(), to.keys().cloned().collect()))
        .collect();
    for circle in circles(&edges) {
        let detail: Vec<String> = circle
            .iter()
            .flat_map(|from| {
                graph[from]
                    .iter()
                    .filter(|(to, _)| circle.contains(to))
                    .map(move |(to, file)| format!("{from} -> {to} ({})", file.display()))
            })
            .collect();
        problems.push(format!("import circle: {}", detail.join(", ")));
    }
    // Argument parsing and the HTTP client belong to the commands; the log
    // format is a global flag, so telemetry's enum is clap's; the relay's
    // mTLS client is built where its certificates are read, in tls.
    for source in &sources {
        let module = node(&layers, &source.here);
        let below_commands = layers.get(&module).is_some_and(|&layer| layer < 3);
        for word in ["clap", "reqwest"] {
            if below_commands
                && !(module == "telemetry" && word == "clap")
                && !(module == "tls" && word == "reqwest")
                && names(&source.text, word)
            {
                problems.push(format!(
                    "{}: `{module}` names `{word}`, which only the commands may",
                    source.relative.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the module rule is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_upward_imports_circles_and_super_paths() {
    let table = layer_table(
        "//! | layer | module | what |\n//! |---|---|---|\n//! | 1 | `learn` | x |\n//! | 3 | `cmd` | y |\n",
    );
    assert_eq!(table.get("learn"), Some(&1));
    assert_eq!(table.get("cmd"), Some(&3));

    let file = syn::parse_file(
        "use crate::{cmd::client, api::{wire::Graph, server}};\nmod tests { use super::super::store::Store; fn f() { crate::flow::x(); } }",
    )
    .expect("parses");
    let mut refs = References {
        here: vec!["learn".into(), "policies".into()],
        found: Vec::new(),
    };
    refs.visit_file(&file);
    let mut layers = table;
    layers.insert("api::wire".into(), 0);
    let named: BTreeSet<String> = refs.found.iter().map(|r| node(&layers, r)).collect();
    let expected: BTreeSet<String> = ["cmd", "api", "api::wire", "learn", "flow"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    // `super::super` from learn::policies::tests is `learn`; `api::wire` is
    // its own entry, `api::server` is `api`.
    assert_eq!(named, expected);

    let circle: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        circles(&circle),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );

    assert!(names("#[derive(clap::Args)]", "clap"));
    assert!(!names("use clapper; // clap", "clap"));
}
