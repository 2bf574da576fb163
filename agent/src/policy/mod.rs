//! `weir policy` and `weir mode`: what a running agent enforces.
//!
//! ```sh
//! weir policy apply -f policies/          # add or replace, by namespace/name
//! weir policy list                        # what is enforced
//! weir policy delete shop/frontend
//! weir mode set shop audit                # observe | audit | enforce
//! weir mode list
//! ```
//!
//! Policies are validated here first (errors name the file, the document,
//! the policy and the field), then by the agent against the whole set it
//! would enforce; a refused set changes nothing. `apply` returns once the
//! agent's datapath enforces the new set.
//!
//! Changes need the agent's API token ([`TokenArgs`]): `--token`, else
//! `WEIR_TOKEN`, else the file `--token-file` (the agent writes its token
//! to `<state-dir>/api-token`, `/var/lib/weir/api-token` by default).

use std::{
    fmt::Write as _,
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use weir_generator::{datapath::Mode, names};

use crate::{
    api::wire::{Applied, Enforced, Modes},
    learn::{self, policies},
    observe::{Output, ServerArgs},
};

/// The agent's default token file: `api-token` in its default state
/// directory.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/weir/api-token";

/// How a command that changes state finds the agent's API token.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TokenArgs {
    /// The agent's API token.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (used when --token and WEIR_TOKEN are not
    /// given).
    #[arg(
        long,
        value_name = "FILE",
        env = "WEIR_TOKEN_FILE",
        default_value = DEFAULT_TOKEN_FILE
    )]
    pub token_file: PathBuf,
}

/// A token, or why there is none (said when the agent refuses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiToken {
    /// The token to send.
    Token(String),
    /// None could be found: why.
    Missing(String),
}

impl TokenArgs {
    /// The token to send.
    #[must_use]
    pub fn resolve(&self) -> ApiToken {
        if let Some(token) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return ApiToken::Token(token.to_owned());
        }
        match std::fs::read_to_string(&self.token_file) {
            Ok(text) if !text.trim().is_empty() => ApiToken::Token(text.trim().to_owned()),
            Ok(_) => ApiToken::Missing(format!("{} is empty", self.token_file.display())),
            Err(error) => ApiToken::Missing(format!(
                "no --token or WEIR_TOKEN, and {} cannot be read: {error}",
                self.token_file.display()
            )),
        }
    }
}

impl ApiToken {
    /// `request` with the token, if there is one.
    pub fn authorize(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match self {
            Self::Token(token) => request.bearer_auth(token),
            Self::Missing(_) => request,
        }
    }

    /// Send a request that changes state; a 401 says how to pass the token.
    ///
    /// # Errors
    /// See [`learn::send`]; a refused token names where it came from.
    pub fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
        url: &reqwest::Url,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        learn::send(self.authorize(request), url).map_err(|error| {
            if !learn::is_unauthorized(&error) {
                return error;
            }
            let hint = match self {
                Self::Token(_) => "the token given was refused".to_owned(),
                Self::Missing(why) => why.clone(),
            };
            error.context(format!(
                "the agent refused the change: it needs its API token ({hint}); pass --token, \
                 set WEIR_TOKEN, or point --token-file at the agent's <state-dir>/api-token \
                 (printed in its log at start)"
            ))
        })
    }
}

/// `weir policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Enforce NetworkPolicies from a file or a directory of `*.yaml` files
    /// (added, or replacing those of the same namespace and name).
    Apply(ApplyArgs),
    /// Stop enforcing one policy.
    Delete(DeleteArgs),
    /// The enforced policies.
    List(ListArgs),
}

/// `weir policy apply` arguments.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// A YAML file of NetworkPolicies, or a directory of them (repeat for more).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

/// `weir policy delete` arguments.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// The policy, as `NAMESPACE/NAME`.
    #[arg(value_name = "NAMESPACE/NAME", value_parser = policy_arg)]
    pub policy: PolicyName,
}

/// A policy's namespace and name, as the API server validates them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyName {
    /// A DNS-1123 label.
    pub namespace: String,
    /// A DNS-1123 subdomain.
    pub name: String,
}

/// A namespace argument: a DNS-1123 label, checked before it goes into a
/// URL or a request (`kube-system#oops` is refused, not sent).
///
/// # Errors
/// Why it is not a namespace name.
pub fn namespace_arg(s: &str) -> Result<String, String> {
    names::dns1123_label(s).map(|()| s.to_owned())
}

/// A `NAMESPACE/NAME` argument.
///
/// # Errors
/// Not of that form, or a part the API server would refuse.
pub fn policy_arg(s: &str) -> Result<PolicyName, String> {
    let (namespace, name) = s
        .split_once('/')
        .ok_or_else(|| format!("expected NAMESPACE/NAME, got {s:?}"))?;
    names::dns1123_label(namespace).map_err(|e| format!("namespace: {e}"))?;
    names::dns1123_subdomain(name).map_err(|e| format!("name: {e}"))?;
    Ok(PolicyName {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// `weir policy list` arguments.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Output format: a table, JSON (policies, modes, map occupancy) or the
    /// policies as YAML.
    #[arg(short, long, value_enum, default_value_t = ListOutput::Table)]
    pub output: ListOutput,
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

/// `weir mode` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModeCommand {
    /// Set a namespace's mode: observe (nothing judged), audit (denied
    /// flows pass, reported as AUDIT) or enforce (denied flows dropped).
    Set(SetModeArgs),
    /// Every namespace's mode.
    List(ModeListArgs),
}

/// `weir mode set` arguments.
#[derive(Debug, clap::Args)]
pub struct SetModeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// The namespace.
    #[arg(value_parser = namespace_arg)]
    pub namespace: String,
    /// observe, audit or enforce.
    pub mode: Mode,
    /// In a cluster: set the Namespace's `weir.dev/mode` label (kubeconfig's
    /// current context) instead of asking an agent; every agent follows it.
    #[arg(long)]
    pub kube: bool,
}

/// `weir mode list` arguments.
#[derive(Debug, clap::Args)]
pub struct ModeListArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Run `weir policy ...`.
///
/// # Errors
/// Unreadable or invalid policies, an unreachable agent, a refused change.
pub fn run(command: &PolicyCommand) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match command {
        PolicyCommand::Apply(args) => {
            let applied = apply(args)?;
            writeln!(
                out,
                "enforced {} polic{} ({} map writes){}",
                applied.applied.len(),
                if applied.applied.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                applied.writes,
                if applied.replaced_namespaces.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; replaced every previous policy of {}",
                        applied.replaced_namespaces.join(", ")
                    )
                }
            )?;
            for name in &applied.applied {
                writeln!(out, "  {name}")?;
            }
        }
        PolicyCommand::Delete(args) => {
            let PolicyName { namespace, name } = &args.policy;
            let url = learn::endpoint(
                &args.server.server,
                &["api", "policies", "enforced", namespace, name],
            )?;
            args.token
                .resolve()
                .send(learn::client()?.delete(url.clone()), &url)?;
            writeln!(out, "deleted {namespace}/{name}")?;
        }
        PolicyCommand::List(args) => {
            let mut url = learn::endpoint(&args.server.server, &["api", "policies", "enforced"])?;
            if args.output == ListOutput::Yaml {
                url.query_pairs_mut().append_pair("format", "yaml");
            }
            let response = learn::send(learn::client()?.get(url.clone()), &url)?;
            match args.output {
                ListOutput::Yaml | ListOutput::Json => {
                    out.write_all(response.text()?.as_bytes())?;
                    if args.output == ListOutput::Json {
                        writeln!(out)?;
                    }
                }
                ListOutput::Table => {
                    let view: Enforced = response
                        .json()
                        .with_context(|| format!("{url} did not answer with policies"))?;
                    out.write_all(policy_table(&view).as_bytes())?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Send the policies of `args.files` to the agent.
///
/// # Errors
/// See [`run`].
pub fn apply(args: &ApplyArgs) -> anyhow::Result<Applied> {
    let mut loaded = Vec::new();
    for path in &args.files {
        if path.is_dir() {
            loaded.extend(policies::load_dir(path)?);
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            loaded.extend(policies::parse(&path.display().to_string(), &text)?);
        }
    }
    if loaded.is_empty() {
        bail!("no NetworkPolicy in {:?}", args.files);
    }
    let body = learn::policies_yaml(&loaded)?;
    // Named by their file here; the agent checks the set as a whole.
    policies::policy_set(loaded)?;
    post_policies(&args.server.server, &args.token.resolve(), body, &[])
}

/// `POST /api/policies/enforced` with `body`, replacing every policy of
/// the `replace` namespaces.
///
/// # Errors
/// An unreachable agent, a refused set.
pub fn post_policies(
    server: &reqwest::Url,
    token: &ApiToken,
    body: String,
    replace: &[String],
) -> anyhow::Result<Applied> {
    let mut url = learn::endpoint(server, &["api", "policies", "enforced"])?;
    if !replace.is_empty() {
        url.query_pairs_mut()
            .append_pair("replace", &replace.join(","));
    }
    let request = learn::client()?
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/yaml")
        .body(body);
    token
        .send(request, &url)?
        .json()
        .with_context(|| format!("{url} did not answer with what it applied"))
}

/// The enforced policies for people.
#[must_use]
pub fn policy_table(view: &Enforced) -> String {
    let modes = view.modes();
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "NAME".to_owned(),
        "MODE".to_owned(),
        "POLICY TYPES".to_owned(),
        "INGRESS RULES".to_owned(),
        "EGRESS RULES".to_owned(),
    ]];
    for p in &view.policies {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        rows.push([
            ns.clone(),
            p.metadata.name.clone().unwrap_or_default(),
            modes.of(&ns).to_string(),
            spec.policy_types.unwrap_or_default().join(","),
            spec.ingress.map_or(0, |r| r.len()).to_string(),
            spec.egress.map_or(0, |r| r.len()).to_string(),
        ]);
    }
    let mut out = table(&rows);
    let maps: Vec<String> = view
        .entries
        .iter()
        .map(|(map, n)| {
            let limit = view
                .limits
                .get(map)
                .map_or_else(String::new, |l| format!("/{l}"));
            format!("{map} {n}{limit}")
        })
        .collect();
    let _ = writeln!(out, "maps: {}", maps.join(", "));
    out
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
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

/// Run `weir mode ...`.
///
/// # Errors
/// An unreachable agent, a refused change.
pub fn run_mode(command: &ModeCommand) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match command {
        ModeCommand::Set(args) if args.kube => {
            crate::resolve::kube::write::block_on(async {
                let client = crate::resolve::kube::write::client().await?;
                crate::resolve::kube::write::set_mode(client, &args.namespace, args.mode).await?;
                Ok(())
            })?;
            writeln!(
                out,
                "namespace {} labelled weir.dev/mode={}",
                args.namespace, args.mode
            )?;
        }
        ModeCommand::Set(args) => {
            let url = learn::endpoint(&args.server.server, &["api", "modes", &args.namespace])?;
            let request = learn::client()?
                .put(url.clone())
                .json(&serde_json::json!({ "mode": args.mode }));
            args.token.resolve().send(request, &url)?;
            writeln!(out, "namespace {} is in {} mode", args.namespace, args.mode)?;
        }
        ModeCommand::List(args) => {
            let url = learn::endpoint(&args.server.server, &["api", "modes"])?;
            let modes: Modes = learn::send(learn::client()?.get(url.clone()), &url)?
                .json()
                .with_context(|| format!("{url} did not answer with modes"))?;
            match args.output {
                Output::Json => {
                    serde_json::to_writer_pretty(&mut out, &modes)?;
                    writeln!(out)?;
                }
                Output::Table => {
                    let mut rows = vec![["NAMESPACE".to_owned(), "MODE".to_owned()]];
                    rows.extend(
                        modes
                            .modes
                            .iter()
                            .map(|(ns, m)| [ns.clone(), m.to_string()]),
                    );
                    rows.push(["(every other)".to_owned(), modes.default_mode.to_string()]);
                    out.write_all(table(&rows).as_bytes())?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        aggregator::{Aggregator, Options},
        api::{self, AppState, auth::Token},
        metrics::Metrics,
    };

    /// An agent API (without an enforcer) whose token is `right`, on a
    /// local port; the thread serves until the test process ends.
    fn serve() -> reqwest::Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Arc::new(Metrics::new());
        let state = AppState::new(
            Arc::new(Aggregator::new(Options::default(), Arc::clone(&metrics))),
            metrics,
            Arc::default(),
            "node",
        )
        .with_token(Token::new("right", "test").unwrap());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, api::app(state)).await.unwrap();
                });
        });
        url.parse().unwrap()
    }

    fn set_mode(server: &reqwest::Url, token: Option<&str>, file: &std::path::Path) -> String {
        let args = SetModeArgs {
            server: ServerArgs {
                server: server.clone(),
            },
            token: TokenArgs {
                token: token.map(str::to_owned),
                token_file: file.to_owned(),
            },
            namespace: "shop".to_owned(),
            mode: Mode::Audit,
            kube: false,
        };
        format!("{:#}", run_mode(&ModeCommand::Set(args)).unwrap_err())
    }

    #[test]
    fn a_refused_change_says_how_to_pass_the_token() {
        let server = serve();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("api-token");

        let error = set_mode(&server, None, &missing);
        assert!(
            error.contains("needs its API token") && error.contains(&missing.display().to_string()),
            "{error}"
        );
        let error = set_mode(&server, Some("wrong"), &missing);
        assert!(error.contains("the token given was refused"), "{error}");

        // The right token, from the file: the change reaches the agent
        // (which has no enforcer here).
        std::fs::write(&missing, "right\n").unwrap();
        let error = set_mode(&server, None, &missing);
        assert!(!error.contains("token"), "{error}");
        assert!(error.contains("enforcement is not available"), "{error}");
        // --token wins over the file.
        let error = set_mode(&server, Some("wrong"), &missing);
        assert!(error.contains("refused"), "{error}");
    }

    #[test]
    fn tokens_come_from_the_flag_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        let args = |token: Option<&str>| TokenArgs {
            token: token.map(str::to_owned),
            token_file: file.clone(),
        };
        assert!(
            matches!(args(None).resolve(), ApiToken::Missing(why) if why.contains("cannot be read"))
        );
        std::fs::write(&file, "  \n").unwrap();
        assert!(matches!(args(None).resolve(), ApiToken::Missing(why) if why.contains("empty")));
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(args(None).resolve(), ApiToken::Token("from-file".into()));
        assert_eq!(
            args(Some(" flag ")).resolve(),
            ApiToken::Token("flag".into())
        );
        assert_eq!(
            args(Some("")).resolve(),
            ApiToken::Token("from-file".into())
        );
    }
}
