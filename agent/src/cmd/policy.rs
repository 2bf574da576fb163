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
use reqwest::Url;
use weir_generator::{datapath::Mode, names};

use super::{
    client::{self, ApiToken, Client, ServerArgs, TokenArgs, endpoint},
    kube,
    output::{ListOutput, Output, policies_noun, table},
};
use crate::{
    api::wire::{Applied, Enforced, Modes},
    learn::{policies, policies_yaml},
};

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
    #[arg(value_parser = client::namespace_arg)]
    pub namespace: String,
    /// observe, audit or enforce.
    pub mode: Mode,
    /// In a cluster: set the Namespace's `weir.dev/mode` label (kubeconfig's
    /// current context) instead of asking an agent; every agent follows it.
    /// Unless --force, --server (an agent or the relay) is asked first
    /// whether the namespace is ready.
    #[arg(long)]
    pub kube: bool,
    /// Through a relay: set the mode even while some nodes' agents are
    /// missing or stale (the relay refuses otherwise, naming them).
    #[arg(long, conflicts_with = "kube")]
    pub allow_partial: bool,
    /// Enforce without the guard: no window in which dropping learned
    /// traffic sets the namespace back to audit. With --kube, the
    /// Namespace is annotated `weir.dev/guard-skip` with the time of the
    /// request, and the agents skip the guard on a flip they see within
    /// five minutes of it.
    #[arg(long)]
    pub no_guard: bool,
    /// Set audit or enforce even though the namespace is not ready (still
    /// learning new edges, or the suggestion does not cover its traffic).
    #[arg(long)]
    pub force: bool,
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
                "enforced {} {} ({} map writes){}",
                applied.applied.len(),
                policies_noun(applied.applied.len()),
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
            let url = endpoint(
                &args.server.server,
                &["api", "policies", "enforced", namespace, name],
            )?;
            let client = Client::new()?;
            client.change(client.delete(&url), &url, &args.token.resolve())?;
            writeln!(out, "deleted {namespace}/{name}")?;
        }
        PolicyCommand::List(args) => {
            let mut url = endpoint(&args.server.server, &["api", "policies", "enforced"])?;
            if args.output == ListOutput::Yaml {
                url.query_pairs_mut().append_pair("format", "yaml");
            }
            let response = Client::new()?.get(&url)?;
            match args.output {
                ListOutput::Yaml | ListOutput::Json => {
                    out.write_all(response.text()?.as_bytes())?;
                    if args.output == ListOutput::Json {
                        writeln!(out)?;
                    }
                }
                ListOutput::Table => {
                    let view: Enforced = client::decode(response, &url, "policies")?;
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
    let body = policies_yaml(&loaded)?;
    // Named by their file here; the agent checks the set as a whole.
    policies::policy_set(loaded)?;
    post_policies(&args.server.server, &args.token.resolve(), body, &[], false)
}

/// `POST /api/policies/enforced` with `body`, replacing every policy of
/// the `replace` namespaces.
///
/// # Errors
/// An unreachable agent, a refused set.
pub fn post_policies(
    server: &Url,
    token: &ApiToken,
    body: String,
    replace: &[String],
    allow_partial: bool,
) -> anyhow::Result<Applied> {
    let mut url = endpoint(server, &["api", "policies", "enforced"])?;
    if !replace.is_empty() {
        url.query_pairs_mut()
            .append_pair("replace", &replace.join(","));
    }
    if allow_partial {
        url.query_pairs_mut().append_pair("allow_partial", "true");
    }
    let client = Client::new()?;
    let response = client.change(client.post_yaml(&url, body), &url, token)?;
    Ok(client::decode(response, &url, "what it applied")?)
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

/// What the guard and automatic promotion say of each namespace, one line
/// each: its open window, its last revert, its next automatic step
/// (`weir mode list`, `weir status`).
#[must_use]
pub fn guard_lines(modes: &Modes) -> String {
    let mut out = String::new();
    for (ns, window) in &modes.guarded {
        let _ = writeln!(
            out,
            "{ns}: guarded until {} ({} of {} learned edges dropped; {} reverts to audit)",
            window.until,
            window.dropped_edges.len(),
            window.learned_edges,
            window.max_drops,
        );
    }
    for (ns, reverted) in &modes.reverted {
        let _ = writeln!(out, "{ns}: {}", reverted.message);
    }
    for (ns, promotion) in &modes.promotion {
        let last = promotion.last.as_ref().map_or_else(String::new, |l| {
            format!(" (last: {} -> {} at {})", l.from, l.to, l.time)
        });
        let _ = writeln!(out, "{ns}: {}{last}", promotion.message);
    }
    out
}

/// The body of `PUT /api/modes/{namespace}` for `args`.
fn mode_body(args: &SetModeArgs) -> serde_json::Value {
    let mut body = serde_json::json!({ "mode": args.mode });
    if !args.force {
        body["require_ready"] = true.into();
    }
    if args.no_guard {
        body["guard"] = false.into();
    }
    body
}

/// Run `weir mode ...`.
///
/// # Errors
/// An unreachable agent, a refused change.
pub fn run_mode(command: &ModeCommand) -> anyhow::Result<ExitCode> {
    if let ModeCommand::Set(args) = command
        && args.kube
    {
        return kube::run_set_mode(
            &args.namespace,
            args.mode,
            (!args.force).then_some(&args.server.server),
            args.no_guard,
        );
    }
    let mut out = io::stdout().lock();
    match command {
        ModeCommand::Set(args) => {
            let mut url = endpoint(&args.server.server, &["api", "modes", &args.namespace])?;
            if args.allow_partial {
                url.query_pairs_mut().append_pair("allow_partial", "true");
            }
            let client = Client::new()?;
            let request = client.put(&url).json(&mode_body(args));
            client.change(request, &url, &args.token.resolve())?;
            writeln!(out, "namespace {} is in {} mode", args.namespace, args.mode)?;
        }
        ModeCommand::List(args) => {
            let url = endpoint(&args.server.server, &["api", "modes"])?;
            let modes: Modes = Client::new()?.get_json(&url, "modes")?;
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
                    out.write_all(guard_lines(&modes).as_bytes())?;
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
        api::{AppState, auth::Token},
        metrics::Metrics,
    };

    /// An agent API (without an enforcer) whose token is `right`, on a
    /// local port; the thread serves until the test process ends.
    fn serve() -> reqwest::Url {
        let metrics = Arc::new(Metrics::new());
        let state = AppState::new(
            Arc::new(Aggregator::new(Options::default(), Arc::clone(&metrics))),
            metrics,
            Arc::default(),
            "node",
        )
        .with_token(Token::new("right", "test").unwrap());
        super::super::testing::serve(state).parse().unwrap()
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
            allow_partial: false,
            no_guard: false,
            force: false,
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
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use crate::api::wire::{GuardWindowJson, RevertedJson};

    #[test]
    fn mode_list_and_status_say_what_the_guard_did() {
        let mut modes = Modes::default();
        modes.guarded.insert(
            "blog".into(),
            GuardWindowJson {
                since: "2026-12-07T03:00:00Z".into(),
                until: "2026-12-07T03:15:00Z".into(),
                max_drops: 2,
                learned_edges: 4,
                dropped_edges: vec!["blog/web -> blog/db TCP/5432".into()],
            },
        );
        modes.reverted.insert(
            "shop".into(),
            RevertedJson {
                message: "reverted to audit at T because enforce dropped 1 learned edge".into(),
                ..RevertedJson::default()
            },
        );
        assert_eq!(
            guard_lines(&modes),
            "blog: guarded until 2026-12-07T03:15:00Z (1 of 4 learned edges dropped; 2 reverts to audit)\n\
             shop: reverted to audit at T because enforce dropped 1 learned edge\n"
        );
    }
    #[test]
    fn mode_list_and_status_say_what_automatic_promotion_does_next() {
        use crate::api::wire::{PromotedJson, PromotionJson};
        use weir_generator::datapath::Mode;
        let mut modes = Modes::default();
        modes.promotion.insert(
            "shop".into(),
            PromotionJson {
                next: Some(Mode::Enforce),
                at: Some("2026-12-08T03:00:00Z".into()),
                message: "automatic promotion: enforce at 2026-12-08T03:00:00Z".into(),
                last: Some(PromotedJson {
                    from: Mode::Observe,
                    to: Mode::Audit,
                    time: "2026-12-07T03:00:00Z".into(),
                }),
                ..PromotionJson::default()
            },
        );
        assert_eq!(
            guard_lines(&modes),
            "shop: automatic promotion: enforce at 2026-12-08T03:00:00Z \
             (last: observe -> audit at 2026-12-07T03:00:00Z)\n"
        );
    }
}
