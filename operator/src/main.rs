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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", earshot_crds::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Check { files } => check(&files),
    }
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
