//! The config file watcher: a changed file (or prompt) is loaded, checked
//! and applied to new calls; a bad one is refused and the old config kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;

use super::{Shared, lock};

/// Watches the config file and the files it names every 2 s.
pub(super) async fn watch_config(
    shared: Arc<Shared>,
    path: PathBuf,
    mut files: Vec<PathBuf>,
    running: earshot_contracts::config::RecorderConfig,
) {
    // The config file and the files it names (the prompt): a change to any
    // of them reloads everything.
    let stamp = |files: &[PathBuf]| {
        files
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().ok(), m.len()))
            })
            .collect::<Vec<_>>()
    };
    files.insert(0, path.clone());
    let mut last = stamp(&files);
    // The addresses the recorder tells peers, as it started: they change
    // only with a restart (an external one may be added live).
    let faces = |c: &Config| (c.advertised, c.external);
    let mut running_faces = Config::load(&path).ok().map(|c| faces(&c));
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = stamp(&files);
        if now == last {
            continue;
        }
        let result = match Config::load(&path) {
            Ok(cfg) => cfg
                .core_config(rand::random())
                .await
                .map_err(|e| e.to_string())
                .map(|core| (cfg, core)),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok((cfg, core)) => {
                files = std::iter::once(path.clone())
                    .chain(cfg.watched_files(&path))
                    .collect();
                last = stamp(&files);
                let untold = shared
                    .tell_shards(
                        || super::Input::Config(Box::new(core.clone())),
                        std::time::Instant::now() + Duration::from_secs(5),
                    )
                    .await;
                if !untold.is_empty() {
                    tracing::error!(
                        shards = ?untold,
                        "config not applied by stalled shards; they keep the previous config"
                    );
                }
                *shared.acl.write().unwrap_or_else(|p| p.into_inner()) = super::acl_of(&cfg);
                if let Some(tls) = &shared.tls {
                    tls.set_next_hops(super::tls_names(&cfg, &core));
                }
                *shared.recording.write().unwrap_or_else(|e| e.into_inner()) =
                    crate::recording::Settings::from_config(&cfg.file.recording);
                lock(&shared.metrics).reload(true);
                for w in &cfg.warnings {
                    tracing::error!("{w}");
                }
                let mut pending = cfg.file.needs_restart(&running);
                match running_faces {
                    Some((adv, None)) if adv == cfg.advertised => {
                        running_faces = Some(faces(&cfg));
                    }
                    Some(f) if f != faces(&cfg) => pending.push("this node's addresses"),
                    _ => {}
                }
                if !pending.is_empty() {
                    tracing::warn!(
                        settings = pending.join(", "),
                        "these config changes take effect at the next restart (a rollout); the rest is applied"
                    );
                }
                tracing::info!(
                    users = cfg.users.len(),
                    peers = cfg.peers.len(),
                    "config reloaded; calls in progress keep their settings"
                );
            }
            Err(e) => {
                last = now;
                lock(&shared.metrics).reload(false);
                tracing::error!(error = %e, "config change rejected; keeping the previous config");
            }
        }
    }
}
