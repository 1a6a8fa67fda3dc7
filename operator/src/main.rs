//! `earshot-operator`: turns RecordingPolicies into recorders.
//!
//! `check` admits policy files exactly as the API server would (the CRD's own
//! schema and CEL rules), so GitOps pipelines refuse a bad policy before it
//! reaches a cluster.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use earshot_crds::validate::PolicyValidator;
use earshot_operator::config::OperatorConfig;
use earshot_operator::render::render;

/// Earshot's Kubernetes operator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check RecordingPolicy files against the CRD's schema and CEL rules.
    Check {
        /// Policy files (YAML, one or more documents each).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// The platform's allowed object stores, as JSON (as `run` takes
        /// them): a policy naming another endpoint is refused here too.
        #[arg(long, env = "EARSHOT_STORAGE_ENDPOINTS")]
        storage_endpoints: Option<String>,
        /// The platform's default storage, as JSON (as `run` takes it): its
        /// endpoint is allowed too.
        #[arg(long, env = "EARSHOT_DEFAULT_STORAGE")]
        default_storage: Option<String>,
        /// Accept any endpoint (as `run` does with this setting).
        #[arg(long, env = "EARSHOT_ALLOW_ANY_STORAGE_ENDPOINT", value_parser = clap::builder::BoolishValueParser::new())]
        allow_any_storage_endpoint: bool,
    },
    /// Print the RecordingPolicy CRD (as shipped in the Helm chart).
    Crd,
    /// Run the controller (in a cluster, or against KUBECONFIG).
    Run {
        /// Recorder image the Deployments run.
        #[arg(long, env = "EARSHOT_RECORDER_IMAGE")]
        recorder_image: String,
        /// Largest retention the platform allows, in days.
        #[arg(long, env = "EARSHOT_MAX_RETENTION_DAYS", default_value_t = 365)]
        max_retention_days: i32,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "EARSHOT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
        http: std::net::SocketAddr,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "earshot-system")]
        lease_namespace: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "POD_NAME", default_value = "earshot-operator")]
        identity: String,
        /// Log filter.
        #[arg(long, env = "RUST_LOG", default_value = "info")]
        log: String,
        /// Storage for policies without spec.storage, as JSON in the shape of
        /// spec.storage (the credentials Secret must exist in each tenant namespace).
        #[arg(long, env = "EARSHOT_DEFAULT_STORAGE")]
        default_storage: Option<String>,
        /// The object stores policies may use, as JSON: a list of
        /// `{"url": ..., "lifecycleCredentialsDir": ...}` (Helm
        /// `storageEndpoints`). Besides these only the default storage's
        /// endpoint is allowed; lifecycle rules are set only on stores with
        /// a `lifecycleCredentialsDir` (the operator's own key).
        #[arg(long, env = "EARSHOT_STORAGE_ENDPOINTS")]
        storage_endpoints: Option<String>,
        /// Accept any endpoint a policy names (Helm
        /// `allowAnyStorageEndpoint`): single-tenant clusters only.
        #[arg(long, env = "EARSHOT_ALLOW_ANY_STORAGE_ENDPOINT", value_parser = clap::builder::BoolishValueParser::new())]
        allow_any_storage_endpoint: bool,
        /// The authenticating proxy of exposed consoles, as JSON (Helm
        /// `console.proxy`). Unset: `spec.console.expose` is refused.
        #[arg(long, env = "EARSHOT_CONSOLE_PROXY")]
        console_proxy: Option<String>,
    },
    /// Print the objects a policy file produces (ConfigMap, Deployment,
    /// Service, PodDisruptionBudget), without a cluster.
    Render {
        /// The policy file.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Recorder image the Deployment runs.
        #[arg(long, env = "EARSHOT_RECORDER_IMAGE")]
        recorder_image: Option<String>,
        /// Largest retention the platform allows, in days.
        #[arg(long, env = "EARSHOT_MAX_RETENTION_DAYS", default_value_t = 365)]
        max_retention_days: i32,
        /// The platform's console proxy, as JSON (as `run` takes it).
        #[arg(long, env = "EARSHOT_CONSOLE_PROXY")]
        console_proxy: Option<String>,
        /// The allowed object stores, as JSON (as `run` takes them).
        #[arg(long, env = "EARSHOT_STORAGE_ENDPOINTS")]
        storage_endpoints: Option<String>,
        /// Storage for policies without spec.storage, as JSON (as `run` takes it).
        #[arg(long, env = "EARSHOT_DEFAULT_STORAGE")]
        default_storage: Option<String>,
        /// Accept any endpoint (as `run` does with this setting).
        #[arg(long, env = "EARSHOT_ALLOW_ANY_STORAGE_ENDPOINT", value_parser = clap::builder::BoolishValueParser::new())]
        allow_any_storage_endpoint: bool,
    },
}

/// A setting given as JSON; blank, `{}`, `[]` and `null` mean unset.
fn json_setting<T: serde::de::DeserializeOwned>(
    name: &str,
    value: Option<String>,
) -> Result<Option<T>, String> {
    match value.as_deref().map(str::trim) {
        None | Some("" | "{}" | "[]" | "null") => Ok(None),
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| format!("{name} is not valid: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", earshot_crds::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Check {
            files,
            storage_endpoints,
            default_storage,
            allow_any_storage_endpoint,
        } => {
            let settings = (|| -> Result<OperatorConfig, String> {
                Ok(OperatorConfig {
                    storage_endpoints: json_setting(
                        "EARSHOT_STORAGE_ENDPOINTS",
                        storage_endpoints,
                    )?
                    .unwrap_or_default(),
                    default_storage: json_setting("EARSHOT_DEFAULT_STORAGE", default_storage)?,
                    allow_any_storage_endpoint,
                    ..OperatorConfig::default()
                })
            })();
            match settings {
                Ok(operator) => check(&files, &operator),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            recorder_image,
            max_retention_days,
            http,
            lease_namespace,
            identity,
            log,
            default_storage,
            storage_endpoints,
            allow_any_storage_endpoint,
            console_proxy,
        } => {
            let filter = tracing_subscriber::EnvFilter::try_new(&log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            let parsed = (|| -> Result<OperatorConfig, String> {
                Ok(OperatorConfig {
                    recorder_image,
                    max_retention_days,
                    default_storage: json_setting("EARSHOT_DEFAULT_STORAGE", default_storage)?,
                    storage_endpoints: json_setting(
                        "EARSHOT_STORAGE_ENDPOINTS",
                        storage_endpoints,
                    )?
                    .unwrap_or_default(),
                    allow_any_storage_endpoint,
                    console_proxy: json_setting("EARSHOT_CONSOLE_PROXY", console_proxy)?,
                    ..OperatorConfig::default()
                })
            })();
            let operator = match parsed {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("earshot-operator: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if operator.storage_endpoints.is_empty()
                && operator.default_storage.is_none()
                && !operator.allow_any_storage_endpoint
            {
                tracing::warn!(
                    "no object store is allowed (EARSHOT_STORAGE_ENDPOINTS, EARSHOT_DEFAULT_STORAGE): every policy is refused with NoStorageEndpointsConfigured"
                );
            }
            if let Some(why) = operator.console_proxy.as_ref().and_then(|p| p.unusable()) {
                tracing::warn!("{why}: spec.console.expose is refused");
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("earshot-operator: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = earshot_operator::run::RunOptions {
                http,
                lease_namespace,
                identity,
            };
            match runtime.block_on(earshot_operator::run::run(operator, opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("earshot-operator: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Render {
            file,
            recorder_image,
            max_retention_days,
            console_proxy,
            storage_endpoints,
            default_storage,
            allow_any_storage_endpoint,
        } => {
            let settings = (|| -> Result<OperatorConfig, String> {
                Ok(OperatorConfig {
                    max_retention_days,
                    console_proxy: json_setting("EARSHOT_CONSOLE_PROXY", console_proxy)?,
                    storage_endpoints: json_setting(
                        "EARSHOT_STORAGE_ENDPOINTS",
                        storage_endpoints,
                    )?
                    .unwrap_or_default(),
                    default_storage: json_setting("EARSHOT_DEFAULT_STORAGE", default_storage)?,
                    allow_any_storage_endpoint,
                    ..OperatorConfig::default()
                })
            })();
            let mut operator = match settings {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("earshot-operator: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(image) = recorder_image {
                operator.recorder_image = image;
            }
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: cannot read: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            match render(&text, &operator) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What the operator refuses that the API server cannot see, in the order
/// the operator checks it: a storage prefix outside the policy's namespace
/// (CEL cannot read the namespace), an endpoint the platform does not allow.
fn tenant_problem(p: &earshot_crds::RecordingPolicy, operator: &OperatorConfig) -> Option<String> {
    use earshot_operator::reconcile::validate::{allowed_endpoint, confined_prefix};
    let storage = p.spec.storage.as_ref()?;
    if let (Some(ns), Some(prefix)) = (p.metadata.namespace.as_deref(), storage.prefix.as_deref())
        && let Err(e) = confined_prefix(ns, prefix)
    {
        return Some(e.to_string());
    }
    allowed_endpoint(operator, &storage.endpoint)
        .err()
        .map(|e| e.to_string())
}

fn check(files: &[PathBuf], operator: &OperatorConfig) -> ExitCode {
    let validator = PolicyValidator::new();
    let mut failed = false;
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", file.display());
                failed = true;
                continue;
            }
        };
        for (i, doc) in text.split("\n---").enumerate() {
            if doc.lines().all(|l| {
                l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---"
            }) {
                continue;
            }
            match validator.parse(doc) {
                Ok(p) if let Some(problem) = tenant_problem(&p, operator) => {
                    eprintln!(
                        "{} [{i}]: policy {} is invalid:\n  - {problem}",
                        file.display(),
                        p.metadata.name.as_deref().unwrap_or("<unnamed>")
                    );
                    failed = true;
                }
                Ok(p) => {
                    let counts = p.spec.user_counts();
                    println!(
                        "{} [{i}]: {}/{} ok: {} users ({} Always, {} OnDemand, {} Never), retention {} days",
                        file.display(),
                        p.metadata.namespace.as_deref().unwrap_or("<namespace>"),
                        p.metadata.name.as_deref().unwrap_or("<unnamed>"),
                        counts.total,
                        counts.always,
                        counts.on_demand,
                        counts.never,
                        p.spec.retention_days
                    );
                }
                Err(e) => {
                    eprintln!("{} [{i}]: {e}", file.display());
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
