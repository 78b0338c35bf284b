//! Kubernetes pod labels for a process: the pod UID comes from the process's cgroup path (the
//! kubelet names pod cgroups after it), the labels from a [`PodLabelsProvider`] (for instance
//! one fed by the kubelet or API server; none is built in yet).

use std::collections::BTreeMap;

/// Prefix of every label a [`PodLabelsProvider`] contributes.
pub const K8S_PREFIX: &str = "k8s:";

/// Looks up a pod's labels by UID. Implementations must be fast and non-blocking (a local
/// map kept current elsewhere): they are called while a connection waits.
pub trait PodLabelsProvider: Send + Sync + 'static {
    /// Labels of the pod (without the `k8s:` prefix, which the caller adds), or `None` when
    /// the pod is unknown.
    fn labels(&self, pod_uid: &str) -> Option<BTreeMap<String, String>>;
}

/// The default: no Kubernetes integration, so no `k8s:` labels.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPodLabels;

impl PodLabelsProvider for NoPodLabels {
    fn labels(&self, _pod_uid: &str) -> Option<BTreeMap<String, String>> {
        None
    }
}

/// Extracts the pod UID from the contents of `/proc/<pid>/cgroup`. Handles both kubelet
/// cgroup drivers:
///
/// - cgroupfs: `.../kubepods/burstable/pod1b3d7c2e-0a4f-4f3e-9c1d-2b7a6e5f4d3c/<container>`
/// - systemd:  `.../kubepods-burstable-pod1b3d7c2e_0a4f_4f3e_9c1d_2b7a6e5f4d3c.slice/...`
///
/// Returns the canonical dashed, lowercase form.
pub fn pod_uid_from_cgroup(contents: &str) -> Option<String> {
    contents.lines().find_map(|line| {
        // `hierarchy-id:controllers:path`; the path may itself contain ':' in theory.
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').find_map(pod_uid_in_component)
    })
}

fn pod_uid_in_component(component: &str) -> Option<String> {
    let mut rest = component;
    while let Some(i) = rest.find("pod") {
        let cand = &rest[i + 3..];
        if let Some(uid) = cand.get(..36).and_then(parse_uuid) {
            return Some(uid);
        }
        rest = cand;
    }
    None
}

/// A 36-character UUID with `-` or `_` separators, normalised to dashes and lowercase.
fn parse_uuid(s: &str) -> Option<String> {
    let ok = s.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-' || c == '_',
        _ => c.is_ascii_hexdigit(),
    });
    ok.then(|| s.replace('_', "-").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b3d7c2e-0a4f-4f3e-9c1d-2b7a6e5f4d3c";

    #[test]
    fn cgroupfs_and_systemd_drivers() {
        let v1 = format!(
            "12:memory:/kubepods/burstable/pod{UID}/0123abcd\n1:name=systemd:/kubepods/burstable/pod{UID}/0123abcd\n"
        );
        assert_eq!(pod_uid_from_cgroup(&v1).as_deref(), Some(UID));
        let sd = UID.replace('-', "_");
        let v2 = format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{sd}.slice/cri-containerd-ab12.scope\n");
        assert_eq!(pod_uid_from_cgroup(&v2).as_deref(), Some(UID));
        let guaranteed = format!("0::/kubepods.slice/kubepods-pod{}.slice/x\n", sd.to_uppercase());
        assert_eq!(pod_uid_from_cgroup(&guaranteed).as_deref(), Some(UID));
    }

    #[test]
    fn non_pods_have_no_uid() {
        assert_eq!(pod_uid_from_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"), None);
        assert_eq!(pod_uid_from_cgroup("0::/podman/pod-short\n"), None);
        assert_eq!(pod_uid_from_cgroup(""), None);
        assert!(NoPodLabels.labels(UID).is_none());
    }
}
