//! [`Capture`]: the daemon's handle on its nftables table.

use std::sync::{Arc, Mutex, MutexGuard};

use super::listing::{self, TableState};
use super::{nft, ruleset, CaptureConfig, CaptureError, CaptureRules};

/// Owns the capture table. Cheap to clone (one shared state); all changes go through one lock,
/// so concurrent updates are applied in order and never interleave inside `nft`.
///
/// Every method here blocks on an `nft` child process (bounded by
/// [`CaptureConfig::command_timeout_ms`]); from async code use the `*_async` variants, which
/// run them on the blocking pool.
///
/// Dropping the last handle does **not** remove the table: Drop must not block, and removing
/// it from a background thread could race with a new [`Capture::install`] of the same table.
/// A table left behind is what crash recovery ([`Capture::reconcile`]) handles on the next
/// start; a clean stop calls [`Capture::remove`] / [`Capture::remove_async`].
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CaptureConfig,
    state: Mutex<State>,
}

struct State {
    rules: CaptureRules,
    installed: bool,
}

/// What [`Capture::reconcile`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reconciled {
    /// No table was there; a fresh one was created.
    Fresh,
    /// A table was left behind (crash, or a previous daemon that was killed); it was replaced.
    ReplacedStale(TableState),
}

/// What [`Capture::resync`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Resynced {
    /// The live table matched the last applied rules.
    Unchanged,
    /// The table was missing or differed (someone ran `nft flush ruleset`, ...) and was rebuilt.
    Repaired(Option<TableState>),
}

impl Capture {
    /// Creates the table from scratch with nothing captured. A stale table of the same name is
    /// deleted in the same transaction (crash recovery), so calling this twice is harmless.
    pub fn install(cfg: CaptureConfig) -> Result<Capture, CaptureError> {
        cfg.validate()?;
        let rules = CaptureRules::default();
        nft::apply(&cfg, &ruleset::replace_table(&cfg, &rules))?;
        tracing::info!(table = %cfg.table, outbound_port = cfg.outbound_port, inbound_port = cfg.inbound_port,
            mark = cfg.mark, "capture table installed");
        Ok(Capture::new(cfg, rules))
    }

    /// Start-up path: reports whether a table from a previous run exists, then replaces it
    /// (or creates one) holding `rules`, in a single transaction so the state is consistent
    /// whatever the previous run left and capture never lapses in between.
    pub fn reconcile(cfg: CaptureConfig, rules: CaptureRules) -> Result<(Capture, Reconciled), CaptureError> {
        cfg.validate()?;
        let previous = listing::list(&cfg)?;
        nft::apply(&cfg, &ruleset::replace_table(&cfg, &rules))?;
        let outcome = match previous {
            Some(st) => {
                tracing::warn!(table = %cfg.table, chains = st.chains.len(), sets = st.sets.len(),
                    "replaced a capture table left by a previous run");
                Reconciled::ReplacedStale(st)
            }
            None => {
                tracing::info!(table = %cfg.table, "capture table created");
                Reconciled::Fresh
            }
        };
        Ok((Capture::new(cfg, rules), outcome))
    }

    fn new(cfg: CaptureConfig, rules: CaptureRules) -> Capture {
        Capture { inner: Arc::new(Inner { cfg, state: Mutex::new(State { rules, installed: true }) }) }
    }

    pub fn config(&self) -> &CaptureConfig {
        &self.inner.cfg
    }

    /// The rules last applied successfully.
    pub fn rules(&self) -> CaptureRules {
        self.lock().rules.clone()
    }

    /// Replaces what is captured: set elements and the small regular chains, atomically. On
    /// error nothing changed and the previous rules stay in force.
    pub fn update(&self, rules: &CaptureRules) -> Result<(), CaptureError> {
        let cfg = &self.inner.cfg;
        let mut st = self.lock();
        if !st.installed {
            return Err(CaptureError::Removed);
        }
        nft::apply(cfg, &ruleset::update(cfg, rules))?;
        st.rules = rules.clone();
        tracing::info!(table = %cfg.table, uids = rules.outbound.uids.len(), gids = rules.outbound.gids.len(),
            cgroups = rules.outbound.cgroups.len(), inbound_ports = rules.inbound_ports.len(), "capture rules updated");
        Ok(())
    }

    /// Reads the live table.
    pub fn list(&self) -> Result<Option<TableState>, CaptureError> {
        listing::list(&self.inner.cfg)
    }

    /// Periodic check: if the live table no longer matches the last applied rules, rebuild it.
    pub fn resync(&self) -> Result<Resynced, CaptureError> {
        let cfg = &self.inner.cfg;
        let st = self.lock();
        if !st.installed {
            return Err(CaptureError::Removed);
        }
        let live = listing::list(cfg)?;
        if live.as_ref().is_some_and(|l| l.matches(cfg, &st.rules)) {
            return Ok(Resynced::Unchanged);
        }
        tracing::warn!(table = %cfg.table, present = live.is_some(), "capture table drifted: rebuilding it");
        nft::apply(cfg, &ruleset::replace_table(cfg, &st.rules))?;
        Ok(Resynced::Repaired(live))
    }

    /// Deletes the table (clean stop). Idempotent; after it, `update` fails with
    /// [`CaptureError::Removed`].
    pub fn remove(&self) -> Result<(), CaptureError> {
        let cfg = &self.inner.cfg;
        let mut st = self.lock();
        nft::apply(cfg, &ruleset::delete(cfg))?;
        if st.installed {
            tracing::info!(table = %cfg.table, "capture table removed");
        }
        st.installed = false;
        Ok(())
    }

    pub async fn install_async(cfg: CaptureConfig) -> Result<Capture, CaptureError> {
        blocking(move || Capture::install(cfg)).await
    }
    pub async fn reconcile_async(
        cfg: CaptureConfig,
        rules: CaptureRules,
    ) -> Result<(Capture, Reconciled), CaptureError> {
        blocking(move || Capture::reconcile(cfg, rules)).await
    }
    pub async fn update_async(&self, rules: CaptureRules) -> Result<(), CaptureError> {
        let me = self.clone();
        blocking(move || me.update(&rules)).await
    }
    pub async fn resync_async(&self) -> Result<Resynced, CaptureError> {
        let me = self.clone();
        blocking(move || me.resync()).await
    }
    pub async fn remove_async(&self) -> Result<(), CaptureError> {
        let me = self.clone();
        blocking(move || me.remove()).await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent (fields are replaced
        // only after nft succeeded), so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let installed = self.state.get_mut().map(|s| s.installed).unwrap_or_else(|p| p.into_inner().installed);
        if installed {
            tracing::warn!(table = %self.cfg.table,
                "capture handle dropped without remove(): the table stays until the next start reconciles it");
        }
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("table", &self.inner.cfg.table).field("netns", &self.inner.cfg.netns).finish()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaptureError> + Send + 'static,
) -> Result<T, CaptureError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CaptureError::Join(e.to_string()))?
}
