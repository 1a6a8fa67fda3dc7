//! `earshot-console serve|list|get|download`: the web page, and the same
//! listing and downloads for scripts. Storage and filters come from flags
//! or `EARSHOT_CONSOLE_*` environment variables; S3 credentials from
//! `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (read-only is enough).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use earshot_contracts::names::console_env;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::access::Access;
use crate::catalog::{Catalog, Filter, PAGE, Recording, clock, hms};
use crate::metrics::Metrics;
use crate::web::{App, ZipLimits, health_router, router, zip_stream};

/// Earshot's recordings console: list, play and download one policy's
/// recordings, read-only.
#[derive(Debug, Parser)]
#[command(name = "earshot-console", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    storage: StorageArgs,
    /// Log as JSON lines (for the cluster's log pipeline).
    #[arg(long, global = true)]
    log_json: bool,
}

/// Where the recordings are.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// A local directory holding the recordings (the recorder's filesystem storage).
    #[arg(long, global = true, env = console_env::DIR)]
    dir: Option<PathBuf>,
    /// S3 endpoint URL.
    #[arg(long, global = true, env = console_env::ENDPOINT)]
    endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, global = true, env = console_env::BUCKET)]
    bucket: Option<String>,
    /// S3 signing region.
    #[arg(
        long,
        global = true,
        env = console_env::REGION,
        default_value = "us-east-1"
    )]
    region: String,
    /// Virtual-hosted-style S3 addressing (AWS); the default is path style.
    #[arg(long, global = true, env = console_env::VIRTUAL_HOSTED)]
    virtual_hosted: bool,
    /// The policy's key prefix, e.g. `acme/office`: nothing outside it is read.
    #[arg(
        long,
        global = true,
        env = console_env::PREFIX,
        default_value = ""
    )]
    prefix: String,
}

/// Which recordings.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// A policy user on the call (extension).
    #[arg(long)]
    user: Option<String>,
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD.
    #[arg(long)]
    to: Option<String>,
    /// Caller or callee number containing this.
    #[arg(long)]
    number: Option<String>,
    /// An SBC's id of the call containing this (SIPREC: a Session-ID, a UCID, ...).
    #[arg(long)]
    src_id: Option<String>,
    /// Complete or truncated recordings only.
    #[arg(long, value_enum, default_value_t = Status::All)]
    status: Status,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum Status {
    #[default]
    All,
    Complete,
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the web page.
    Serve {
        /// Address of the page. The default (loopback) is reached with
        /// `kubectl port-forward`, so Kubernetes RBAC is the access control.
        #[arg(long, env = console_env::LISTEN, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address for /healthz and /metrics only (the pod network).
        #[arg(long, env = console_env::HEALTH_LISTEN)]
        health_listen: Option<SocketAddr>,
        /// The header in which an authenticating proxy names the signed-in
        /// user (for the audit log). Trusted only from `--trusted-proxy`;
        /// no header is trusted by default.
        #[arg(long, env = console_env::IDENTITY_HEADER)]
        identity_header: Option<String>,
        /// Where the authenticating proxy connects from (CIDRs,
        /// comma-separated). When set, nobody else may connect.
        #[arg(long, env = console_env::TRUSTED_PROXIES, value_delimiter = ',')]
        trusted_proxy: Vec<String>,
        /// With `--trusted-proxy`: admit loopback connections too
        /// (`kubectl port-forward`; a sidecar proxy in the pod would bring
        /// in everyone it admits), anonymously. Refused by default.
        #[arg(
            long,
            env = "EARSHOT_CONSOLE_ALLOW_LOOPBACK",
            value_parser = clap::builder::BoolishValueParser::new()
        )]
        allow_loopback: bool,
        /// Host names the page answers to besides localhost and loopback
        /// addresses (comma-separated); any other `Host` is refused.
        #[arg(long, env = console_env::ALLOWED_HOSTS, value_delimiter = ',')]
        allowed_host: Vec<String>,
        /// Most recordings in one ZIP.
        #[arg(long, default_value_t = ZipLimits::default().recordings)]
        zip_max_recordings: usize,
        /// Most MiB of MP3 in one ZIP.
        #[arg(long, default_value_t = ZipLimits::default().bytes >> 20)]
        zip_max_mib: u64,
    },
    /// List recordings, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Page (from 0), 50 recordings each.
        #[arg(long, default_value_t = 0)]
        page: usize,
        /// Every match instead of one page.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Write one recording's MP3 (or sidecar) to a file or stdout.
    Get {
        /// The recording's id (`YYYY/MM/DD/<stamp>_<hash>`, as `list` shows).
        id: String,
        /// Where to write (`-` for stdout); default `<stamp>_<hash>.mp3`.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The JSON sidecar instead of the MP3.
        #[arg(long)]
        sidecar: bool,
    },
    /// Download every matching recording (MP3 and sidecar) into a directory
    /// (resumable: files already there with the right SHA-256 are skipped)
    /// or into one ZIP.
    Download {
        #[command(flatten)]
        filter: FilterArgs,
        /// Directory to download into (`<dir>/<YYYY-MM-DD>/<stamp>_<hash>.mp3`).
        #[arg(long, conflicts_with = "zip", required_unless_present = "zip")]
        into: Option<PathBuf>,
        /// ZIP file to write.
        #[arg(long)]
        zip: Option<PathBuf>,
    },
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<Filter> {
        Filter {
            user: self.user.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            number: self.number.clone(),
            src_id: self.src_id.clone(),
            complete: match self.status {
                Status::All => None,
                Status::Complete => Some(true),
                Status::Truncated => Some(false),
            },
        }
        .checked()
        .map_err(anyhow::Error::msg)
    }
}

impl StorageArgs {
    fn catalog(&self) -> anyhow::Result<Catalog> {
        use earshot_contracts::config::{FilesystemConfig, S3Config, StorageConfig};
        let cfg = match (&self.dir, &self.endpoint, &self.bucket) {
            (Some(dir), None, _) => {
                if !dir.is_dir() {
                    bail!("--dir {}: no such directory", dir.display());
                }
                StorageConfig {
                    filesystem: Some(FilesystemConfig {
                        path: dir.clone(),
                        retention_days: None,
                    }),
                    s3: None,
                    prefix: self.prefix.clone(),
                }
            }
            (None, Some(endpoint), Some(bucket)) => StorageConfig {
                filesystem: None,
                s3: Some(S3Config {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    region: self.region.clone(),
                    path_style: !self.virtual_hosted,
                }),
                prefix: self.prefix.clone(),
            },
            (None, Some(_), None) => bail!("--endpoint needs --bucket"),
            (Some(_), Some(_), _) => bail!("give --dir or --endpoint, not both"),
            (None, None, _) => bail!(
                "where are the recordings? give --dir DIR, or --endpoint URL --bucket NAME (with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), and --prefix"
            ),
        };
        let opened = earshot_contracts::store::open(&cfg)?;
        Ok(Catalog::new(opened.store, opened.prefix))
    }

    /// The page title: the policy's prefix (`namespace/policy` by default).
    fn describe(&self) -> String {
        match self.prefix.trim_matches('/') {
            "" => "all recordings".to_owned(),
            p => p.to_owned(),
        }
    }
}

impl Cli {
    /// Whether logs are JSON lines.
    pub fn log_json(&self) -> bool {
        self.log_json
    }
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let catalog = Arc::new(cli.storage.catalog()?);
    match cli.command {
        Command::Serve {
            listen,
            health_listen,
            identity_header,
            trusted_proxy,
            allow_loopback,
            allowed_host,
            zip_max_recordings,
            zip_max_mib,
        } => {
            let access = Access::new(
                identity_header.as_deref(),
                &trusted_proxy,
                &allowed_host,
                allow_loopback,
            )
            .map_err(|e| anyhow::anyhow!("access settings: {e}"))?;
            let app = Arc::new(App {
                catalog,
                metrics: Arc::new(Metrics::default()),
                title: cli.storage.describe(),
                access: Arc::new(access),
                zip_limits: ZipLimits {
                    recordings: zip_max_recordings,
                    bytes: zip_max_mib.saturating_mul(1 << 20),
                },
            });
            let page = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            if let Some(h) = health_listen {
                let health = tokio::net::TcpListener::bind(h)
                    .await
                    .with_context(|| format!("cannot listen on {h}"))?;
                let r = health_router(app.clone());
                tokio::spawn(async move { axum::serve(health, r).await });
            }
            tracing::info!(%listen, "console serving (read-only)");
            axum::serve(
                page,
                router(app).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(())
        }
        Command::List {
            filter,
            page,
            all,
            output,
        } => {
            let filter = filter.filter()?;
            let (recordings, more) = if all {
                (catalog.all(&filter).await?, false)
            } else {
                let p = catalog.page(&filter, page, PAGE).await?;
                (p.recordings, p.more)
            };
            let mut out = std::io::stdout().lock();
            match output {
                Output::Json => {
                    let rows: Vec<serde_json::Value> = futures::stream::iter(&recordings)
                        .map(|r| {
                            let catalog = &catalog;
                            async move {
                                let sidecar = catalog.sidecar(&r.id).await?;
                                let mut v = serde_json::to_value(sidecar)?;
                                v["id"] = serde_json::json!(r.id);
                                Ok::<_, anyhow::Error>(v)
                            }
                        })
                        .buffered(32)
                        .try_collect()
                        .await?;
                    serde_json::to_writer_pretty(&mut out, &rows)?;
                    writeln!(out)?;
                }
                Output::Table => {
                    writeln!(
                        out,
                        "{:<20} {:<20} {:>8}  {:<19} {:<8} {:<8}  {:<16} {:<13} ID",
                        "CALLER",
                        "CALLEE",
                        "DURATION",
                        "START",
                        "ANSWER",
                        "END",
                        "RECORDED",
                        "CODEC"
                    )?;
                    for r in &recordings {
                        writeln!(out, "{}", table_row(r))?;
                    }
                    if more {
                        writeln!(out, "(more: --page {})", page + 1)?;
                    }
                }
            }
            Ok(())
        }
        Command::Get {
            id,
            output,
            sidecar,
        } => {
            let r = catalog.get(&id).await?;
            let ext = if sidecar { "json" } else { "mp3" };
            let target =
                output.unwrap_or_else(|| PathBuf::from(format!("{}.{ext}", r.file_stem())));
            if sidecar {
                let json = catalog.sidecar_bytes(&id).await?;
                if target == Path::new("-") {
                    std::io::stdout().write_all(&json)?;
                } else {
                    std::fs::write(&target, json)?;
                }
                return Ok(());
            }
            if target == Path::new("-") {
                let mut body = catalog.mp3(&id, None).await?.into_stream();
                let mut out = std::io::stdout().lock();
                while let Some(c) = body.next().await {
                    out.write_all(&c?)?;
                }
                out.flush()?;
            } else {
                fetch_verified(&catalog, &r, &target).await?;
                eprintln!("{}", target.display());
            }
            Ok(())
        }
        Command::Download { filter, into, zip } => {
            let filter = filter.filter()?;
            let recordings = catalog.all(&filter).await?;
            if let Some(zip) = zip {
                let tmp = part(&zip);
                let mut file = tokio::fs::File::create(&tmp)
                    .await
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                let n = recordings.len();
                let mut body = Box::pin(zip_stream(
                    catalog,
                    Arc::new(Metrics::default()),
                    recordings,
                ));
                while let Some(c) = body.next().await {
                    file.write_all(&c?).await?;
                }
                file.sync_all().await?;
                std::fs::rename(&tmp, &zip)?;
                println!("{n} recordings in {}", zip.display());
                return Ok(());
            }
            let dir = into.expect("clap requires --into or --zip");
            let (mut fetched, mut present, mut failed) = (0, 0, 0);
            for r in &recordings {
                let day = dir.join(r.day());
                std::fs::create_dir_all(&day)
                    .with_context(|| format!("cannot create {}", day.display()))?;
                let mp3 = day.join(format!("{}.mp3", r.file_stem()));
                let json = day.join(format!("{}.json", r.file_stem()));
                if sha256_of(&mp3).is_some_and(|s| s == r.sha256()) && json.exists() {
                    present += 1;
                    continue;
                }
                let result = async {
                    fetch_verified(&catalog, r, &mp3).await?;
                    write_atomically(&json, &catalog.sidecar_bytes(&r.id).await?)
                }
                .await;
                match result {
                    Ok(()) => fetched += 1,
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: {e:#}", r.id);
                    }
                }
            }
            println!(
                "{fetched} downloaded, {present} already present, {failed} failed, into {}",
                dir.display()
            );
            if failed > 0 {
                bail!("{failed} recordings not downloaded; run the same command again to resume");
            }
            Ok(())
        }
    }
}

fn table_row(r: &Recording) -> String {
    format!(
        "{:<20} {:<20} {:>8}  {:<19} {:<8} {:<8}  {:<16} {:<13} {}{}",
        r.caller(),
        r.callee(),
        hms(r.duration()),
        r.started().get(..19).unwrap_or("-").replace('T', " "),
        clock(r.answered()),
        clock(r.ended()),
        r.recorded_text(),
        r.codecs(),
        r.id,
        if r.complete() { "" } else { " (truncated)" }
    )
}

fn part(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

fn sha256_of(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(hex::encode(h.finalize()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = part(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Streams a recording's MP3 into `target` through a `.part` file, checks
/// its SHA-256 against the sidecar, then renames it into place.
async fn fetch_verified(catalog: &Catalog, r: &Recording, target: &Path) -> anyhow::Result<()> {
    let tmp = part(target);
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut hash = Sha256::new();
    let mut body = catalog.mp3(&r.id, None).await?.into_stream();
    while let Some(c) = body.next().await {
        let c = c?;
        hash.update(&c);
        file.write_all(&c).await?;
    }
    file.sync_all().await?;
    drop(file);
    let got = hex::encode(hash.finalize());
    if got != r.sha256() {
        let _ = std::fs::remove_file(&tmp);
        bail!("SHA-256 {got} does not match the sidecar's {}", r.sha256());
    }
    std::fs::rename(&tmp, target).with_context(|| format!("cannot write {}", target.display()))?;
    Ok(())
}
