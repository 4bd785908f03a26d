//! The few fields of Docker's Swarm API answers that discovery reads.
//!
//! Only what is used is deserialized; every other field is ignored and every
//! field here is optional or defaulted, so engines that add, drop or rename
//! unrelated fields do not break discovery. Field names follow API v1.41
//! (`GET /services`, `/tasks`, `/nodes`, `/events`). Nothing here decides
//! anything (see `build`).

use std::collections::HashMap;

use serde::Deserialize;

/// Labels as Docker sends them (`null` and absent are both empty).
pub(crate) type Labels = HashMap<String, String>;

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One entry of `GET /services`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: ServiceSpec,
}

/// `Service.Spec`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceSpec {
    pub name: String,
    /// Service labels (compose `deploy.labels`).
    #[serde(deserialize_with = "null_default")]
    pub labels: Labels,
    pub task_template: TaskTemplate,
    pub endpoint_spec: Option<EndpointSpec>,
}

/// `Service.Spec.TaskTemplate`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskTemplate {
    pub container_spec: ContainerSpec,
}

/// `…TaskTemplate.ContainerSpec`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSpec {
    /// Container labels (compose top-level `labels`).
    #[serde(deserialize_with = "null_default")]
    pub labels: Labels,
}

/// `Service.Spec.EndpointSpec`: published ports name the target port.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSpec {
    #[serde(deserialize_with = "null_default")]
    pub ports: Vec<PortConfig>,
}

/// One published port.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortConfig {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: Option<String>,
    pub target_port: Option<u32>,
}

/// One entry of `GET /tasks`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Replica number; 0 (absent) for global services.
    pub slot: u64,
    pub status: TaskStatus,
    /// What the orchestrator wants: `running`, or `shutdown`/`remove` once it
    /// decided to stop the task (rolling update, scale-down, node drain).
    pub desired_state: String,
    #[serde(deserialize_with = "null_default")]
    pub networks_attachments: Vec<NetworkAttachment>,
}

/// `Task.Status`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskStatus {
    /// `new` … `starting`, `running`, then `complete`, `shutdown`, `failed`, …
    pub state: String,
}

/// One network a task is attached to, with its addresses (`10.0.1.5/24`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkAttachment {
    pub network: AttachedNetwork,
    #[serde(deserialize_with = "null_default")]
    pub addresses: Vec<String>,
}

/// `NetworkAttachment.Network`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AttachedNetwork {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: NetworkSpec,
}

/// `…Network.Spec`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSpec {
    pub name: String,
    /// True for the routing mesh's `ingress` network (never a backend address).
    pub ingress: bool,
}

/// One entry of `GET /nodes`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub description: NodeDescription,
    pub spec: NodeSpec,
    pub status: NodeStatus,
}

/// `Node.Description`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeDescription {
    pub hostname: String,
}

/// `Node.Spec`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeSpec {
    /// `active`, `pause` or `drain`.
    pub availability: String,
}

/// `Node.Status`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeStatus {
    /// `unknown`, `down`, `ready` or `disconnected`.
    pub state: String,
}

/// Docker's error body: `{"message": "…"}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ApiError {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::discovery::swarm::fixture;

    #[test]
    fn real_answers_parse_into_the_fields_discovery_reads() {
        let services: Vec<Service> = serde_json::from_str(&fixture("services.json")).unwrap();
        let blue = services
            .iter()
            .find(|s| s.spec.name == "shop_blue")
            .expect("shop_blue");
        assert_eq!(blue.spec.labels["sluicegate.pool"], "agent-blue");
        assert_eq!(
            blue.spec.task_template.container_spec.labels["sluicegate.port"],
            "8080"
        );
        let tasks: Vec<Task> = serde_json::from_str(&fixture("tasks.json")).unwrap();
        assert_eq!(tasks.len(), 5);
        let t = tasks
            .iter()
            .find(|t| t.service_id == blue.id)
            .expect("task");
        assert_eq!(
            (t.desired_state.as_str(), t.status.state.as_str()),
            ("running", "running")
        );
        let a = &t.networks_attachments[0];
        assert_eq!(a.network.spec.name, "sgfix");
        assert!(a.addresses[0].starts_with("10.77.9.") && a.addresses[0].ends_with("/24"));
        let nodes: Vec<Node> = serde_json::from_str(&fixture("nodes_drain.json")).unwrap();
        assert_eq!(nodes[0].spec.availability, "drain");
        assert_eq!(nodes[0].status.state, "ready");
        let stopping: Task = serde_json::from_str(&fixture("task_stopping.json")).unwrap();
        assert_eq!(stopping.desired_state, "remove");
        assert_eq!(stopping.status.state, "running");
        let e: ApiError = serde_json::from_str(&fixture("error_not_manager.json")).unwrap();
        assert!(e.message.contains("not a swarm manager"), "{}", e.message);
    }

    #[test]
    fn nulls_and_missing_fields_are_empty_not_errors() {
        let t: Task = serde_json::from_str(
            r#"{"ID":"t","NetworksAttachments":null,"Status":{"State":"running","New":1}}"#,
        )
        .unwrap();
        assert!(t.networks_attachments.is_empty());
        let s: Service = serde_json::from_str(r#"{"ID":"s","Spec":{"Labels":null}}"#).unwrap();
        assert!(s.spec.labels.is_empty());
    }
}
