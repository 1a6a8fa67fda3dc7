//! Step 4 of the reconcile pipeline, **client required**: server-side apply
//! of every built object with one field manager; a PodDisruptionBudget no
//! longer wanted is removed, and so is the Deployment that ran recorders
//! before they were a StatefulSet.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;
use crate::build::{
    Validated, build_configmap, build_console_deployment, build_console_networkpolicy,
    build_console_service, build_pdb, build_service, build_servicemonitor, build_statefulset,
    console_name, object_name, servicemonitor_resource,
};
use crate::config::FIELD_MANAGER;

async fn apply<K>(api: &Api<K>, name: &str, obj: &K, kind: &str) -> Result<K, Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Kube {
        what: format!("apply {kind} {name}"),
        source,
    })
}

/// Applies the policy's objects; returns the StatefulSet as the API server
/// has it. The ServiceMonitor only when the cluster has the Prometheus
/// Operator's CRD.
pub async fn apply_all(
    client: &Client,
    v: &Validated,
    service_monitor: bool,
) -> Result<StatefulSet, Error> {
    let ns = v.namespace.as_str();
    let name = object_name(&v.name);
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &name,
        &build_configmap(v),
        "ConfigMap",
    )
    .await?;
    let recorders = apply(
        &Api::<StatefulSet>::namespaced(client.clone(), ns),
        &name,
        &build_statefulset(v),
        "StatefulSet",
    )
    .await?;
    // Recorders before 0.2 were a Deployment of the same name, with their
    // spool on an emptyDir: SIGTERM lets them drain and upload, then they go.
    apply_or_delete::<Deployment>(
        &Api::namespaced(client.clone(), ns),
        &name,
        None,
        "Deployment",
    )
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let service = build_service(v);
    match apply(&services, &name, &service, "Service").await {
        // A Service's clusterIP never changes: between Pod network (a
        // virtual IP) and Host network (headless) it is made again.
        Err(Error::Kube {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 422 && status.message.contains("clusterIP") => {
            services
                .delete(&name, &DeleteParams::default())
                .await
                .map_err(|source| Error::Kube {
                    what: format!("delete Service {name} to change its clusterIP"),
                    source,
                })?;
            apply(&services, &name, &service, "Service").await?;
        }
        other => {
            other?;
        }
    }
    if service_monitor {
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &servicemonitor_resource());
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&build_servicemonitor(v)),
        )
        .await
        .map_err(|source| Error::Kube {
            what: format!("apply ServiceMonitor {name}"),
            source,
        })?;
    }
    apply_or_delete(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        &name,
        build_pdb(v),
        "PodDisruptionBudget",
    )
    .await?;
    let console = console_name(&v.name);
    apply_or_delete(
        &Api::<Deployment>::namespaced(client.clone(), ns),
        &console,
        build_console_deployment(v),
        "Deployment",
    )
    .await?;
    apply_or_delete(
        &Api::<Service>::namespaced(client.clone(), ns),
        &console,
        build_console_service(v),
        "Service",
    )
    .await?;
    apply_or_delete(
        &Api::<NetworkPolicy>::namespaced(client.clone(), ns),
        &console,
        build_console_networkpolicy(v),
        "NetworkPolicy",
    )
    .await?;
    Ok(recorders)
}

/// Applies an object the policy wants, or removes one it no longer wants.
async fn apply_or_delete<K>(
    api: &Api<K>,
    name: &str,
    obj: Option<K>,
    kind: &str,
) -> Result<(), Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match obj {
        Some(obj) => apply(api, name, &obj, kind).await.map(|_| ()),
        None => match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(Error::Kube {
                what: format!("delete {kind} {name}"),
                source,
            }),
        },
    }
}
