//! Step 1 of the reconcile pipeline, **client required**: the storage
//! credentials from the Secret the policy names, and the announcement
//! prompt's ConfigMap.

use earshot_crds::AnnouncementMode;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use super::Error;
use crate::build::Validated;
use crate::storage::s3::S3Target;

/// The store and the credentials to reach it.
pub async fn storage_target(secrets: &Api<Secret>, v: &Validated) -> Result<S3Target, Error> {
    let keys = &v.storage.credentials_secret;
    let secret = secrets
        .get_opt(&keys.name)
        .await
        .map_err(|source| Error::Kube {
            what: format!("get Secret {}", keys.name),
            source,
        })?;
    let secret = secret.ok_or_else(|| Error::SecretMissing(keys.name.clone()))?;
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::SecretKeyMissing {
                secret: keys.name.clone(),
                key: key.to_owned(),
            })
    };
    Ok(S3Target {
        endpoint: v.storage.endpoint.clone(),
        region: v.storage.region.clone(),
        path_style: v.storage.path_style,
        access_key_id: value(&keys.access_key_id_key)?,
        secret_access_key: value(&keys.secret_access_key_key)?,
    })
}

/// Checks that the prompt of `Prompt` announcements exists, so the recorder
/// pods (which mount it) can start.
pub async fn prompt(configmaps: &Api<ConfigMap>, v: &Validated) -> Result<(), Error> {
    let a = &v.policy.spec.announcement;
    let (AnnouncementMode::Prompt, Some(p)) = (a.mode, &a.prompt) else {
        return Ok(());
    };
    let cm = configmaps
        .get_opt(&p.config_map)
        .await
        .map_err(|source| Error::Kube {
            what: format!("get ConfigMap {}", p.config_map),
            source,
        })?
        .ok_or_else(|| Error::PromptMissing {
            config_map: p.config_map.clone(),
            key: p.key.clone(),
        })?;
    let has = cm
        .binary_data
        .as_ref()
        .is_some_and(|d| d.contains_key(&p.key))
        || cm.data.as_ref().is_some_and(|d| d.contains_key(&p.key));
    if has {
        Ok(())
    } else {
        Err(Error::PromptMissing {
            config_map: p.config_map.clone(),
            key: p.key.clone(),
        })
    }
}

/// When the policy's console is enabled: what is wrong with the read-only
/// key's Secret, if anything. The console pod waits for it (Kubernetes
/// retries); the operator says why in an Event.
pub async fn console_secret(secrets: &Api<Secret>, v: &Validated) -> Result<Option<String>, Error> {
    let Some(c) = v.policy.spec.console.as_ref().filter(|c| c.enabled) else {
        return Ok(None);
    };
    let keys = &c.credentials_secret;
    let secret = secrets
        .get_opt(&keys.name)
        .await
        .map_err(|source| Error::Kube {
            what: format!("get Secret {}", keys.name),
            source,
        })?;
    let Some(secret) = secret else {
        return Ok(Some(format!(
            "Secret {} named in spec.console.credentialsSecret does not exist in the policy's namespace; the console starts once it does",
            keys.name
        )));
    };
    let data = secret.data.unwrap_or_default();
    let missing: Vec<&str> = [&keys.access_key_id_key, &keys.secret_access_key_key]
        .into_iter()
        .filter(|k| !data.contains_key(k.as_str()))
        .map(String::as_str)
        .collect();
    Ok((!missing.is_empty()).then(|| {
        format!(
            "Secret {} has no key {} (spec.console.credentialsSecret)",
            keys.name,
            missing.join(", ")
        )
    }))
}
