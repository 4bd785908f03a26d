//! Where the gateway runs, and which of a container's IPs it should use.
//!
//! When the gateway itself runs in a container, it finds that container (ids from
//! `/proc/self/cgroup` and `/proc/self/mountinfo`, else the hostname Docker sets
//! to the short id) in the container list: its networks decide which backend IP
//! is reachable, and its compose project is the default project filter. On the
//! host there is no own container and every network is a candidate.
//!
//! Choosing is deterministic: a container with several candidate networks and
//! no rule is refused, never picked at random. Pure functions only; no Docker.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::models::{ContainerSummary, EndpointSettings};

use super::labels::{key, LabelError, COMPOSE_PROJECT};

/// The gateway's own container, as the container list shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnContainer {
    /// Full container id.
    pub id: String,
    /// Names of the networks it is attached to.
    pub networks: Vec<String>,
    /// Its `com.docker.compose.project`, if it runs under compose.
    pub project: Option<String>,
}

/// Container ids this process may be running in, most reliable first: cgroup v1
/// paths (`/docker/<id>`, `docker-<id>.scope`) and the bind mounts Docker makes
/// under `/var/lib/docker/containers/<id>/` (also under cgroup v2).
pub(crate) fn own_id_candidates(cgroup: &str, mountinfo: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if is_full_id(id) && !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    };
    for line in cgroup.lines() {
        let path = line.rsplit(':').next().unwrap_or("");
        for part in path.split('/') {
            let part = part.strip_prefix("docker-").unwrap_or(part);
            push(part.strip_suffix(".scope").unwrap_or(part));
        }
    }
    for line in mountinfo.lines() {
        for field in line.split_whitespace() {
            if let Some((_, rest)) = field.split_once("/containers/") {
                push(rest.split('/').next().unwrap_or(""));
            }
        }
    }
    ids
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds the gateway's own container among `containers`: by a candidate id, else
/// by `hostname` when it is a (12+ hex digit) prefix of exactly one container id.
pub(crate) fn find_own(
    containers: &[ContainerSummary],
    candidates: &[String],
    hostname: Option<&str>,
) -> Option<OwnContainer> {
    let id_of = |c: &ContainerSummary| c.id.clone().unwrap_or_default();
    let by_id = candidates
        .iter()
        .find_map(|want| containers.iter().find(|c| id_of(c) == *want));
    let by_host = || {
        let host =
            hostname.filter(|h| h.len() >= 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))?;
        let mut matching = containers.iter().filter(|c| id_of(c).starts_with(host));
        let one = matching.next()?;
        matching.next().is_none().then_some(one)
    };
    let own = by_id.or_else(by_host)?;
    let mut networks: Vec<String> = own
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    Some(OwnContainer {
        id: id_of(own),
        networks,
        project: own
            .labels
            .as_ref()
            .and_then(|l| l.get(COMPOSE_PROJECT).cloned()),
    })
}

/// Where a network rule came from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuleSource {
    /// The container's `<prefix>.network` label.
    Label,
    /// `[discovery.docker].network`.
    Config,
}

/// Picks the network (and IP) to reach a container on.
///
/// Candidates are the networks that give the container an IP, narrowed to those
/// shared with `own_networks` when the gateway runs in a container. Then the
/// rule (label, else config) must name a candidate, matching either the exact
/// network name or compose's `<project>_<name>`; without a rule there must be
/// exactly one candidate.
pub(crate) fn choose(
    networks: &HashMap<String, EndpointSettings>,
    own_networks: Option<&[String]>,
    rule: Option<(&str, RuleSource)>,
    project: Option<&str>,
    prefix: &str,
) -> Result<(String, IpAddr), LabelError> {
    let mut with_ip: Vec<(&String, &str)> = networks
        .iter()
        .filter_map(|(name, ep)| {
            let ip = ep.ip_address.as_deref().filter(|ip| !ip.is_empty())?;
            Some((name, ip))
        })
        .collect();
    with_ip.sort();
    let mut candidates = with_ip.clone();
    if let Some(own) = own_networks {
        candidates.retain(|(name, _)| own.contains(name));
        if candidates.is_empty() && !with_ip.is_empty() {
            return Err(LabelError::NoSharedNetwork {
                gateway: own.to_vec(),
                container: with_ip.iter().map(|(n, _)| n.to_string()).collect(),
            });
        }
    }
    let names = || candidates.iter().map(|(n, _)| n.to_string()).collect();
    let chosen = match rule {
        Some((wanted, from)) => {
            let compose_name = project.map(|p| format!("{p}_{wanted}"));
            let found = candidates
                .iter()
                .find(|(n, _)| *n == wanted || Some(n.as_str()) == compose_name.as_deref());
            match found {
                Some(c) => *c,
                None => {
                    return Err(LabelError::UnknownNetwork {
                        wanted: wanted.to_owned(),
                        from: match from {
                            RuleSource::Label => format!("label {}", key(prefix, "network")),
                            RuleSource::Config => "[discovery.docker].network".to_owned(),
                        },
                        usable: names(),
                    })
                }
            }
        }
        None => match candidates.as_slice() {
            [one] => *one,
            [] => return Err(LabelError::NoNetwork),
            _ => {
                return Err(LabelError::SeveralNetworks {
                    key: key(prefix, "network"),
                    networks: names(),
                })
            }
        },
    };
    let (name, ip) = chosen;
    let ip = ip.parse::<IpAddr>().map_err(|_| LabelError::BadIp {
        network: name.clone(),
        ip: ip.to_owned(),
    })?;
    Ok((name.clone(), ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerSummaryNetworkSettings;

    const ID_A: &str = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
    const ID_B: &str = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";

    fn nets(pairs: &[(&str, &str)]) -> HashMap<String, EndpointSettings> {
        pairs
            .iter()
            .map(|(n, ip)| {
                let ep = EndpointSettings {
                    ip_address: Some(ip.to_string()),
                    ..Default::default()
                };
                (n.to_string(), ep)
            })
            .collect()
    }

    fn summary(id: &str, networks: &[&str], project: Option<&str>) -> ContainerSummary {
        let pairs: Vec<(&str, &str)> = networks.iter().map(|n| (*n, "10.9.0.2")).collect();
        ContainerSummary {
            id: Some(id.to_owned()),
            labels: project.map(|p| [(COMPOSE_PROJECT.to_owned(), p.to_owned())].into()),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(nets(&pairs)),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn own_ids_from_cgroup_v1_and_mountinfo() {
        let cgroup = format!("12:pids:/docker/{ID_A}\n0::/system.slice/docker-{ID_B}.scope\n");
        assert_eq!(own_id_candidates(&cgroup, ""), vec![ID_A, ID_B]);
        let mountinfo = format!(
            "612 590 254:0 /var/lib/docker/containers/{ID_B}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(own_id_candidates("0::/\n", &mountinfo), vec![ID_B]);
        assert!(own_id_candidates("4:memory:/process_api/cd13cfe5\n0::/\n", "").is_empty());
    }

    #[test]
    fn own_container_by_id_else_by_hostname_prefix() {
        let list = [
            summary(ID_A, &["shop_front", "shop_back"], Some("shop")),
            summary(ID_B, &["bridge"], None),
        ];
        let own = find_own(&list, &[ID_A.to_owned()], None).expect("found");
        assert_eq!(own.networks, vec!["shop_back", "shop_front"]);
        assert_eq!(own.project.as_deref(), Some("shop"));
        let own = find_own(&list, &[], Some("bbbbbbbbbbbb")).expect("found");
        assert_eq!(own.id, ID_B);
        assert_eq!(find_own(&list, &[], Some("vm")), None);
        assert_eq!(find_own(&list, &[], Some("cccccccccccc")), None);
    }

    #[test]
    fn the_only_network_is_used() {
        let n = nets(&[("front", "172.20.0.5")]);
        let (name, ip) = choose(&n, None, None, None, "sg").unwrap();
        assert_eq!(
            (name.as_str(), ip.to_string().as_str()),
            ("front", "172.20.0.5")
        );
    }

    #[test]
    fn several_networks_without_a_rule_are_refused_not_guessed() {
        let n = nets(&[("front", "172.20.0.5"), ("back", "172.21.0.5")]);
        let e = choose(&n, None, None, None, "sg").unwrap_err();
        assert!(
            e.to_string().contains("several networks (back, front)"),
            "{e}"
        );
        assert!(e.to_string().contains("sg.network"), "{e}");
        let (name, _) = choose(&n, None, Some(("back", RuleSource::Config)), None, "sg").unwrap();
        assert_eq!(name, "back");
    }

    #[test]
    fn rules_match_compose_prefixed_names_and_unknown_ones_fail() {
        let n = nets(&[("shop_front", "172.20.0.5"), ("shop_back", "172.21.0.5")]);
        let rule = Some(("front", RuleSource::Label));
        let (name, _) = choose(&n, None, rule, Some("shop"), "sg").unwrap();
        assert_eq!(name, "shop_front");
        let e = choose(
            &n,
            None,
            Some(("dmz", RuleSource::Label)),
            Some("shop"),
            "sg",
        );
        let e = e.unwrap_err().to_string();
        assert!(e.contains("\"dmz\" (from label sg.network)"), "{e}");
    }

    #[test]
    fn the_network_shared_with_the_gateway_wins() {
        let n = nets(&[("shop_front", "172.20.0.5"), ("shop_back", "172.21.0.5")]);
        let own = vec!["shop_front".to_owned()];
        let (name, _) = choose(&n, Some(&own), None, None, "sg").unwrap();
        assert_eq!(name, "shop_front");
        let other = vec!["ops".to_owned()];
        let e = choose(&n, Some(&other), None, None, "sg").unwrap_err();
        assert!(e.to_string().starts_with("shares no network"), "{e}");
    }

    #[test]
    fn no_ip_and_bad_ip() {
        let host_mode = nets(&[("host", "")]);
        assert_eq!(
            choose(&host_mode, None, None, None, "sg"),
            Err(LabelError::NoNetwork)
        );
        let bad = nets(&[("front", "not-an-ip")]);
        assert!(matches!(
            choose(&bad, None, None, None, "sg"),
            Err(LabelError::BadIp { .. })
        ));
    }
}
