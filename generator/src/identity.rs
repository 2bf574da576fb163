//! Workload identity: which workload a pod belongs to.
//!
//! A pod's workload is its top owner. Only the pod itself is at hand (the
//! agent does not watch ReplicaSets or Jobs), so the owner chain is inferred
//! from the names controllers give: a ReplicaSet named `<deployment>-<hash>`
//! whose hash is the pod's `pod-template-hash` label belongs to that
//! Deployment, and a Job named `<cronjob>-<minutes>` (the scheduled time in
//! minutes since the epoch, as the CronJob controller names them) belongs to
//! that CronJob.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::core::v1::Pod;

use crate::model::{PodMeta, WorkloadKind, WorkloadRef};

/// Labels that change with every rollout: never part of a workload's
/// identity or of a selector.
pub const PER_ROLLOUT_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
];

/// The workload of a pod, from its controller owner reference and labels.
#[must_use]
pub fn workload_of(
    namespace: &str,
    pod_name: &str,
    labels: &BTreeMap<String, String>,
    owner: Option<(&str, &str)>,
) -> WorkloadRef {
    let (kind, name) = match owner {
        Some(("ReplicaSet", rs)) => match labels
            .get("pod-template-hash")
            .and_then(|hash| rs.strip_suffix(hash.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
        {
            Some(deployment) if !deployment.is_empty() => (WorkloadKind::Deployment, deployment),
            _ => (WorkloadKind::ReplicaSet, rs),
        },
        Some(("StatefulSet", name)) => (WorkloadKind::StatefulSet, name),
        Some(("DaemonSet", name)) => (WorkloadKind::DaemonSet, name),
        Some(("Job", job)) => match cronjob_of_job(job) {
            Some(cron) => (WorkloadKind::CronJob, cron),
            None => (WorkloadKind::Job, job),
        },
        _ => (WorkloadKind::Pod, pod_name),
    };
    WorkloadRef::new(namespace, kind, name)
}

fn cronjob_of_job(job: &str) -> Option<&str> {
    let (cron, minutes) = job.rsplit_once('-')?;
    (minutes.len() >= 8 && minutes.bytes().all(|b| b.is_ascii_digit()) && !cron.is_empty())
        .then_some(cron)
}

/// What the agent keeps of a Pod object, or `None` when it has no name.
/// Pods without IPs are kept (their IPs may come later).
#[must_use]
pub fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let name = pod.metadata.name.as_deref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()));
    let workload = workload_of(namespace, name, &labels, owner);
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(status) = &pod.status {
        let all = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref());
        for ip in all.filter_map(|s| s.parse().ok()) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    Some(PodMeta {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels,
        workload,
        ips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// (owner, labels, expected kind, expected name).
    type Case<'a> = (
        Option<(&'a str, &'a str)>,
        &'a BTreeMap<String, String>,
        WorkloadKind,
        &'a str,
    );

    #[test]
    fn owners_map_to_top_workloads() {
        let hashed = labels(&[("app", "web"), ("pod-template-hash", "7d9f8b6c5")]);
        let cases: &[Case<'_>] = &[
            (
                Some(("ReplicaSet", "web-7d9f8b6c5")),
                &hashed,
                WorkloadKind::Deployment,
                "web",
            ),
            (
                Some(("ReplicaSet", "web-other")),
                &hashed,
                WorkloadKind::ReplicaSet,
                "web-other",
            ),
            (
                Some(("StatefulSet", "db")),
                &hashed,
                WorkloadKind::StatefulSet,
                "db",
            ),
            (
                Some(("DaemonSet", "agent")),
                &hashed,
                WorkloadKind::DaemonSet,
                "agent",
            ),
            (
                Some(("Job", "backup-29012345")),
                &hashed,
                WorkloadKind::CronJob,
                "backup",
            ),
            (
                Some(("Job", "migrate-v2")),
                &hashed,
                WorkloadKind::Job,
                "migrate-v2",
            ),
            (None, &hashed, WorkloadKind::Pod, "pod-x"),
        ];
        for (owner, l, kind, name) in cases {
            let w = workload_of("ns", "pod-x", l, *owner);
            assert_eq!((w.kind, w.name.as_str()), (*kind, *name), "owner {owner:?}");
        }
    }

    #[test]
    fn pod_meta_reads_ips_and_owner_from_json() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-7d9f8b6c5-abcde", "namespace": "shop",
                "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f8b6c5", "uid": "u", "controller": true}]},
            "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
        }))
        .unwrap();
        let meta = pod_meta(&pod).unwrap();
        assert_eq!(meta.workload.to_string(), "shop/web");
        assert_eq!(meta.workload.kind, WorkloadKind::Deployment);
        assert_eq!(meta.ips.len(), 2);
    }
}
