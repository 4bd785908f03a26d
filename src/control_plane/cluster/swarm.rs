//! The cluster store in the Swarm itself: one label of the gateway's own
//! service, written with the service's version as a compare-and-set.
//!
//! `GET /services/{name}` gives the spec, its labels and `Version.Index`;
//! `POST /services/{id}/update?version=N` with the same spec and one label
//! changed is refused by the manager ("update out of sequence") when the service
//! moved past N, so two replicas writing at once cannot both win. Changing only
//! `Spec.Labels` (the service's labels, not its containers') does not restart
//! its tasks: the orchestrator compares the task template, which is untouched
//! (tests/swarm/replicas.rs checks this on a real swarm). The Swarm's Raft log
//! replicates it like any service update; every manager's API reads it.
//! Worker engines refuse service calls: a replica on a worker needs a manager's
//! engine (`[cluster].engine`).

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::Value;

use super::{ClusterStore, StoreError, Stored};
use crate::control_plane::config::spec::ClusterSpec;
use crate::control_plane::discovery::swarm::engine::{Endpoint, RequestError};

/// The label holding the document.
pub(crate) const LABEL: &str = "sluicegate.cluster.state";
/// Bound on each call to the engine.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Labels of the gateway's own Swarm service.
#[derive(Debug)]
pub(crate) struct SwarmStore {
    engine: Endpoint,
    service: String,
}

impl SwarmStore {
    /// The store of `spec` (its engine, else `$DOCKER_HOST`, else the default socket).
    pub(crate) fn new(spec: &ClusterSpec) -> Result<SwarmStore, RequestError> {
        Ok(SwarmStore {
            engine: Endpoint::docker(spec.engine.as_deref())?,
            service: spec.service.to_string(),
        })
    }

    async fn inspect(&self) -> Result<(String, u64, Value), StoreError> {
        let path = format!("/v1.41/services/{}", self.service);
        let service: Value = self
            .engine
            .get_json(&path, None, TIMEOUT)
            .await
            .map_err(|e| classify(&e))?;
        let id = service
            .get("ID")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Refused(format!("{path}: no ID in the answer")))?
            .to_owned();
        let version = service
            .pointer("/Version/Index")
            .and_then(Value::as_u64)
            .ok_or_else(|| StoreError::Refused(format!("{path}: no Version.Index")))?;
        let spec = service
            .get("Spec")
            .cloned()
            .filter(Value::is_object)
            .ok_or_else(|| StoreError::Refused(format!("{path}: no Spec")))?;
        Ok((id, version, spec))
    }
}

/// Unreachable (retry later) or refused (a setup problem).
fn classify(e: &RequestError) -> StoreError {
    match e {
        RequestError::Status {
            status, message, ..
        } => {
            if message.contains("out of sequence") {
                StoreError::Conflict { expected: 0 }
            } else if status.is_server_error() && !message.contains("not a swarm manager") {
                StoreError::Unreachable(e.to_string())
            } else {
                StoreError::Refused(e.to_string())
            }
        }
        _ => StoreError::Unreachable(e.to_string()),
    }
}

fn label_of(spec: &Value) -> Option<String> {
    spec.pointer("/Labels")
        .and_then(|l| l.get(LABEL))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl ClusterStore for SwarmStore {
    fn read(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        async move {
            let (_, version, spec) = self.inspect().await?;
            Ok(Stored {
                version,
                value: label_of(&spec),
            })
        }
        .boxed()
    }

    fn write(&self, version: u64, value: String) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        async move {
            let (id, now, mut spec) = self.inspect().await?;
            if now != version {
                return Err(StoreError::Conflict { expected: version });
            }
            let labels = spec
                .as_object_mut()
                .ok_or_else(|| StoreError::Refused("service spec is not an object".into()))?
                .entry("Labels")
                .or_insert_with(|| Value::Object(Default::default()));
            if !labels.is_object() {
                *labels = Value::Object(Default::default());
            }
            if let Some(map) = labels.as_object_mut() {
                map.insert(LABEL.to_owned(), Value::String(value.clone()));
            }
            let body = serde_json::to_vec(&spec)
                .map_err(|e| StoreError::Refused(format!("service spec: {e}")))?;
            let path = format!("/v1.41/services/{id}/update?version={version}");
            self.engine
                .post_json(&path, Bytes::from(body), TIMEOUT)
                .await
                .map_err(|e| match classify(&e) {
                    StoreError::Conflict { .. } => StoreError::Conflict { expected: version },
                    other => other,
                })?;
            // The version the write made, confirmed only if the label is still ours.
            match self.inspect().await {
                Ok((_, after, spec)) if label_of(&spec).as_deref() == Some(value.as_str()) => {
                    Ok(Some(after))
                }
                _ => Ok(None),
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!(
            "swarm service {} label {LABEL} via {}",
            self.service, self.engine
        )
    }
}
