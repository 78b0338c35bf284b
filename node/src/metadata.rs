//! Host metadata reported at attestation and in status: hostname, OS, kernel, arch; cloud
//! instance metadata and Kubernetes pod context behind traits (no-op where absent).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use riptides_wire::proto::messages::HostInfo;

/// Cloud instance metadata (AWS/GCP/Azure IMDS). Implementations must be quick and fail soft.
pub trait CloudMetadata: Send + Sync + 'static {
    /// Labels such as `cloud.provider`, `cloud.region`, `cloud.instance-id`.
    fn labels(&self) -> Vec<(String, String)>;
}

/// Kubernetes context of the node the daemon runs on (node name, cluster).
pub trait PodContext: Send + Sync + 'static {
    fn labels(&self) -> Vec<(String, String)>;
}

/// Used where no cloud metadata service is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCloud;
impl CloudMetadata for NoCloud {
    fn labels(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Used outside Kubernetes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPod;
impl PodContext for NoPod {
    fn labels(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Reads `/etc/os-release`'s `PRETTY_NAME` (or `NAME VERSION_ID`).
pub fn os_release(text: &str) -> Option<String> {
    let mut pretty = None;
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
        match k.trim() {
            "PRETTY_NAME" => pretty = Some(v),
            "NAME" => name = Some(v),
            "VERSION_ID" => version = Some(v),
            _ => {}
        }
    }
    pretty.or_else(|| match (name, version) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (n, _) => n,
    })
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Collects host metadata now.
pub fn collect(cloud: &dyn CloudMetadata, pod: &dyn PodContext) -> HostInfo {
    let hostname = read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| os_release(&t))
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".to_owned());
    let mut labels = cloud.labels();
    labels.extend(pod.labels());
    labels.push(("process.pid".to_owned(), std::process::id().to_string()));
    labels.sort();
    HostInfo {
        hostname,
        os,
        kernel,
        arch: std::env::consts::ARCH.to_owned(),
        daemon_version: crate::VERSION.to_owned(),
        labels,
    }
}

/// The metadata collector actor: collects at start, answers `Get`.
#[derive(Clone)]
pub struct MetadataActor {
    pub cloud: Arc<dyn CloudMetadata>,
    pub pod: Arc<dyn PodContext>,
}

pub enum MetadataMsg {
    Get(RpcReplyPort<HostInfo>),
}

impl Actor for MetadataActor {
    type Msg = MetadataMsg;
    type State = HostInfo;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<HostInfo, ActorProcessingErr> {
        let info = collect(self.cloud.as_ref(), self.pod.as_ref());
        tracing::debug!(hostname = %info.hostname, os = %info.os, kernel = %info.kernel, arch = %info.arch, "host metadata collected");
        Ok(info)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        info: &mut HostInfo,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MetadataMsg::Get(reply) => {
                let _ = reply.send(info.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_parsing() {
        assert_eq!(
            os_release("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release("NAME=Alpine\nVERSION_ID=3.20\n").as_deref(), Some("Alpine 3.20"));
        assert_eq!(os_release("garbage"), None);
    }

    #[test]
    fn collects_something() {
        let h = collect(&NoCloud, &NoPod);
        assert!(!h.hostname.is_empty());
        assert!(!h.arch.is_empty());
        assert!(h.labels.iter().any(|(k, _)| k == "process.pid"));
    }
}
