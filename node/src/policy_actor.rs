//! The policy actor: holds the current document and revision, applies snapshots and deltas,
//! persists them, and hands them to the connector (dataplane) and the certificate manager.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use riptides_wire::proto::messages::{PolicyDocument, PolicyUpdate, TrustBundleMsg};

use crate::certs::CertMsg;
use crate::policy::{wanted_identities, Applied, PolicyState, WantedIdentity};
use crate::session::SessionMsg;
use crate::Ctx;

/// The dataplane the policy is handed to: [`NoDataplane`], the userspace dataplane
/// ([`crate::userspace::Userspace`]) or the kernel connector ([`crate::kernel::Kernel`]).
pub trait Connector: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn apply(&self, revision: u64, document: &PolicyDocument);
}

/// `--dataplane none`: policy is held (and identities managed) but not enforced.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDataplane;

impl Connector for NoDataplane {
    fn name(&self) -> &'static str {
        "none"
    }
    fn apply(&self, revision: u64, document: &PolicyDocument) {
        tracing::debug!(revision, items = document.items.len(), "dataplane `none`: policy not enforced");
    }
}

pub enum PolicyMsg {
    /// Apply an update from the watch; an error means "ask for a fresh snapshot".
    Apply(PolicyUpdate, RpcReplyPort<Result<(), String>>),
    /// The revision to resume the watch from.
    Revision(RpcReplyPort<Option<u64>>),
    /// The workload identities of the current document.
    Wanted(RpcReplyPort<Vec<WantedIdentity>>),
    /// The bundle received at attestation (used until a policy document brings a newer one).
    Attested(TrustBundleMsg),
}

#[derive(Clone)]
pub struct PolicyActor {
    pub ctx: Arc<Ctx>,
    pub connector: Arc<dyn Connector>,
}

pub struct PolicyActorState {
    policy: PolicyState,
    bundle_sequence: u64,
}

impl PolicyActor {
    fn publish(&self, st: &PolicyActorState, applied: Option<Applied>) {
        let doc = Arc::new(st.policy.document.clone());
        self.ctx.shared.update(|s| {
            s.policy_revision = st.policy.revision;
            s.policy = doc;
            match applied {
                Some(Applied::Snapshot) => s.snapshots += 1,
                Some(Applied::Delta) => s.deltas += 1,
                None => {}
            }
        });
    }
}

impl Actor for PolicyActor {
    type Msg = PolicyMsg;
    type State = PolicyActorState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<PolicyMsg>, _: ()) -> Result<PolicyActorState, ActorProcessingErr> {
        let mut policy = PolicyState::default();
        match self.ctx.data.load_policy() {
            Ok(Some((revision, document))) => {
                tracing::info!(revision, items = document.items.len(), "loaded the last policy from the data dir");
                policy = PolicyState { revision: Some(revision), document };
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the persisted policy is unreadable; waiting for a snapshot")
            }
        }
        let st = PolicyActorState { bundle_sequence: policy.document.bundle.sequence, policy };
        self.publish(&st, None);
        if let Some(rev) = st.policy.revision {
            self.connector.apply(rev, &st.policy.document);
        }
        Ok(st)
    }

    async fn handle(
        &self,
        _: ActorRef<PolicyMsg>,
        msg: PolicyMsg,
        st: &mut PolicyActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PolicyMsg::Revision(reply) => {
                let _ = reply.send(st.policy.revision);
            }
            PolicyMsg::Wanted(reply) => {
                let _ = reply.send(wanted_identities(&st.policy.document));
            }
            PolicyMsg::Attested(bundle) => {
                st.bundle_sequence = st.bundle_sequence.max(bundle.sequence);
            }
            PolicyMsg::Apply(update, reply) => {
                let before = wanted_identities(&st.policy.document);
                let applied = match st.policy.apply(update) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let revision = st.policy.revision.unwrap_or_default();
                if let Err(e) = self.ctx.data.save_policy(revision, &st.policy.document) {
                    tracing::error!(revision, error = %format!("{e:#}"), "cannot persist the policy");
                }
                tracing::info!(revision, kind = ?applied, items = st.policy.document.items.len(), "policy applied");
                self.publish(st, Some(applied));
                let _ = reply.send(Ok(()));
                self.connector.apply(revision, &st.policy.document);
                let bundle = &st.policy.document.bundle;
                if bundle.sequence > st.bundle_sequence && !bundle.roots_der.is_empty() {
                    st.bundle_sequence = bundle.sequence;
                    if let Err(e) = self.ctx.data.save_bundle(bundle) {
                        tracing::error!(error = %format!("{e:#}"), "cannot persist the new trust bundle");
                    }
                    tracing::info!(sequence = bundle.sequence, roots = bundle.roots_der.len(), "trust bundle updated");
                    if let Some(s) = self.ctx.session() {
                        let _ = s.cast(SessionMsg::Bundle(bundle.clone()));
                    }
                }
                let wanted = wanted_identities(&st.policy.document);
                if wanted != before || applied == Applied::Snapshot {
                    if let Some(c) = self.ctx.certs() {
                        let _ = c.cast(CertMsg::Policy(wanted));
                    }
                }
                if let Some(s) = self.ctx.session() {
                    let _ = s.cast(SessionMsg::StatusChanged);
                }
            }
        }
        Ok(())
    }
}
