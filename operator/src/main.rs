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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", earshot_crds::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Check { files } => check(&files),
        Command::Run {
            recorder_image,
            max_retention_days,
            http,
            lease_namespace,
            identity,
            log,
            default_storage,
        } => {
            let filter = tracing_subscriber::EnvFilter::try_new(&log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            let default_storage = match default_storage
                .filter(|s| !s.trim().is_empty() && s.trim() != "{}")
            {
                Some(json) => match serde_json::from_str(&json) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        eprintln!(
                            "earshot-operator: EARSHOT_DEFAULT_STORAGE is not a valid storage spec: {e}"
                        );
                        return ExitCode::FAILURE;
                    }
                },
                None => None,
            };
            let operator = OperatorConfig {
                recorder_image,
                max_retention_days,
                default_storage,
                ..OperatorConfig::default()
            };
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
        } => {
            let mut operator = OperatorConfig {
                max_retention_days,
                ..OperatorConfig::default()
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

/// What the operator refuses that the API server cannot see: a storage
/// prefix outside the policy's namespace (CEL cannot read the namespace).
fn tenant_problem(p: &earshot_crds::RecordingPolicy) -> Option<String> {
    use earshot_operator::reconcile::validate::confined_prefix;
    let ns = p.metadata.namespace.as_deref()?;
    let prefix = p.spec.storage.as_ref()?.prefix.as_deref()?;
    confined_prefix(ns, prefix).err().map(|e| e.to_string())
}

fn check(files: &[PathBuf]) -> ExitCode {
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
                Ok(p) if let Some(problem) = tenant_problem(&p) => {
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
