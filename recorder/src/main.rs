//! `earshot-recorder`: the media-path call recorder. A PBX sends its calls
//! through it; it relays SIP and RTP unchanged for the parties and records
//! the calls its policy says to record.
#![forbid(unsafe_code)]

use earshot_recorder::{config, runtime};

use std::path::PathBuf;

use clap::Parser;

/// Earshot's call recorder: SIP proxy and RTP relay that records calls per policy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (YAML); reloaded when it changes.
    #[arg(long, short = 'c', env = "EARSHOT_CONFIG")]
    config: PathBuf,
    /// Check the configuration file and exit.
    #[arg(long)]
    check: bool,
    /// Log filter, e.g. `info` or `earshot_recorder=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)?;
    // Logs go to stderr (stdout stays free for `--check`), colored only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if cli.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    // A panic anywhere ends the process: a recorder with one task dead
    // (its SIP listener, its timers) would answer /readyz and relay nothing.
    // Exiting lets Kubernetes restart it, and the spool is recovered at the
    // next start. (docs/runbook.md, "What survives what".)
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), panic = %info, "a task panicked: the recorder exits so it is restarted");
        default_hook(info);
        std::process::exit(70);
    }));
    let config = match config::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("earshot-recorder: {e}");
            std::process::exit(2);
        }
    };
    if cli.check {
        for w in &config.warnings {
            eprintln!("earshot-recorder: warning: {w}");
        }
        println!(
            "{}: ok ({} users, {} peers, {} RTP port pairs)",
            cli.config.display(),
            config.users.len(),
            config.peers.len(),
            config.rtp_ports().len()
        );
        return Ok(());
    }
    // The main thread runs the SIP listeners, HTTP and the config watcher;
    // the media path runs on the shards' own threads (`shards`), encoding
    // on the encoder threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = runtime::bind(cli.config, config).await?;
        server.run().await
    })
}
