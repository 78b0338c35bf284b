//! CA rotation: generations move prepared -> active -> old -> removed.
//!
//! - *prepared*: published in the bundle but not signing, so every daemon learns the new root
//!   before any certificate it signed can reach them;
//! - *active*: the one generation that signs;
//! - *old*: retired from signing, still published until every certificate it signed can have
//!   expired (retirement + `max_svid_ttl`, or later for recorded long-lived certificates,
//!   never past its own NotAfter), then removed by pruning.
//!
//! Each step is an explicit method, and [`Ca::tick`] applies the configured schedule. The
//! bundle's `spiffe_sequence` grows whenever the set of published roots changes (prepare,
//! prune); activation changes who signs, not what is trusted, so it leaves it alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::error::CaError;
use super::root::CaGeneration;
use super::store::{generation_file_names, GenerationRecord, GenerationState};
use super::{lock, read, util, write, Ca};

/// What one [`Ca::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// Generation prepared (published) by this tick.
    pub prepared: Option<u64>,
    /// Generation that became active.
    pub activated: Option<u64>,
    /// Old generations removed from the bundle.
    pub pruned: Vec<u64>,
}

impl TickOutcome {
    pub fn is_empty(&self) -> bool {
        self.prepared.is_none() && self.activated.is_none() && self.pruned.is_empty()
    }
}

/// When an old generation may leave the bundle.
pub(crate) fn removable_after(rec: &GenerationRecord) -> u64 {
    let base = rec.prune_after_unix.unwrap_or(rec.not_after_unix);
    base.max(rec.long_lived_until_unix.unwrap_or(0)).min(rec.not_after_unix)
}

impl Ca {
    /// Creates the next generation and publishes it in the bundle without letting it sign.
    /// Refused if one is already prepared.
    pub fn prepare_next(&self, now: SystemTime) -> Result<u64, CaError> {
        let now_s = util::unix_secs(now).ok_or(CaError::BadTime(now))?;
        let _g = lock(&self.mutate);
        self.prepare_locked(now_s)
    }

    /// Makes the prepared generation the signing one; the current active one becomes old.
    /// Refused unless the prepared root has been published for `publish_lead`, because
    /// daemons that have not fetched it yet would reject what it signs; `force` overrides
    /// that (for an emergency such as a compromised active key).
    pub fn activate_prepared(&self, now: SystemTime, force: bool) -> Result<u64, CaError> {
        let now_s = util::unix_secs(now).ok_or(CaError::BadTime(now))?;
        let _g = lock(&self.mutate);
        self.activate_locked(now_s, force)
    }

    /// Removes old generations whose certificates can no longer be valid. Returns their ids.
    pub fn prune(&self, now: SystemTime) -> Result<Vec<u64>, CaError> {
        let now_s = util::unix_secs(now).ok_or(CaError::BadTime(now))?;
        let _g = lock(&self.mutate);
        self.prune_locked(now_s)
    }

    /// Applies the rotation schedule at `now`: prune what has run out, prepare the next
    /// generation once the active one has used `prepare_at` of its life, activate it once it
    /// has been published for `publish_lead`. Call it periodically (e.g. every few seconds);
    /// it does nothing when nothing is due.
    ///
    /// If the active root has expired (the control plane was down through the whole
    /// schedule), the next generation is activated at once even without its lead time:
    /// issuing nothing would be worse than issuing certificates some peers trust late.
    pub fn tick(&self, now: SystemTime) -> Result<TickOutcome, CaError> {
        let now_s = util::unix_secs(now).ok_or(CaError::BadTime(now))?;
        let _g = lock(&self.mutate);
        let mut out = TickOutcome { pruned: self.prune_locked(now_s)?, ..TickOutcome::default() };

        let (active, prepared) = {
            let state = read(&self.state);
            (state.manifest.active().cloned(), state.manifest.prepared().cloned())
        };
        let Some(active) = active else {
            return Ok(out);
        };

        if now_s >= active.not_after_unix {
            tracing::warn!(
                generation = active.id,
                "active CA has expired; activating the next generation without waiting for its publish lead"
            );
            if prepared.is_none() {
                out.prepared = Some(self.prepare_locked(now_s)?);
            }
            out.activated = Some(self.activate_locked(now_s, true)?);
            return Ok(out);
        }

        match prepared {
            None => {
                let life = active.not_after_unix.saturating_sub(active.created_unix) as f64;
                let used = now_s.saturating_sub(active.created_unix) as f64;
                if used >= life * self.config.prepare_at {
                    out.prepared = Some(self.prepare_locked(now_s)?);
                }
            }
            Some(p) => {
                if now_s.saturating_sub(p.created_unix) >= self.config.publish_lead.as_secs() {
                    out.activated = Some(self.activate_locked(now_s, false)?);
                }
            }
        }
        Ok(out)
    }

    fn prepare_locked(&self, now_s: u64) -> Result<u64, CaError> {
        let mut manifest = read(&self.state).manifest.clone();
        if let Some(p) = manifest.prepared() {
            return Err(CaError::AlreadyPrepared { generation: p.id });
        }
        let id = manifest.next_generation;
        let (generation, key_pem) = CaGeneration::generate(
            id,
            &self.config.trust_domain,
            now_s,
            self.config.backdate.as_secs(),
            self.config.ca_lifetime,
        )
        .map_err(|source| CaError::Generate { generation: id, source })?;
        let (cert_file, key_file) = generation_file_names(id);
        self.store.write_secret(&key_file, key_pem.as_bytes())?;
        self.store.write_public(&cert_file, generation.cert_pem().as_bytes())?;
        manifest.generations.push(GenerationRecord {
            id,
            state: GenerationState::Prepared,
            cert_file,
            key_file,
            created_unix: now_s,
            not_after_unix: generation.not_after_unix,
            activated_unix: None,
            retired_unix: None,
            prune_after_unix: None,
            long_lived_until_unix: None,
        });
        manifest.next_generation = id + 1;
        manifest.spiffe_sequence += 1;
        self.store.write_manifest(&manifest)?;
        tracing::info!(
            generation = id,
            fingerprint = %generation.fingerprint,
            not_after = generation.not_after_unix,
            spiffe_sequence = manifest.spiffe_sequence,
            "prepared the next CA generation: published in the trust bundle, not signing yet"
        );
        let mut state = write(&self.state);
        state.manifest = manifest;
        state.gens.insert(id, Arc::new(generation));
        Ok(id)
    }

    fn activate_locked(&self, now_s: u64, force: bool) -> Result<u64, CaError> {
        let mut manifest = read(&self.state).manifest.clone();
        let prepared = manifest.prepared().cloned().ok_or(CaError::NothingPrepared)?;
        let published_for = now_s.saturating_sub(prepared.created_unix);
        let required = self.config.publish_lead.as_secs();
        if published_for < required && !force {
            return Err(CaError::NotPublishedLongEnough {
                generation: prepared.id,
                published_for: Duration::from_secs(published_for),
                required: Duration::from_secs(required),
            });
        }
        let max_ttl = self.config.max_svid_ttl;
        let mut retired = None;
        for rec in manifest.generations.iter_mut() {
            if rec.state == GenerationState::Active {
                rec.state = GenerationState::Old;
                rec.retired_unix = Some(now_s);
                rec.prune_after_unix = Some(util::add_secs(now_s, max_ttl).min(rec.not_after_unix));
                retired = Some(rec.id);
            } else if rec.id == prepared.id {
                rec.state = GenerationState::Active;
                rec.activated_unix = Some(now_s);
            }
        }
        self.store.write_manifest(&manifest)?;
        if published_for < required {
            tracing::warn!(
                generation = prepared.id,
                published_for,
                required,
                "CA generation activated before its publish lead (forced)"
            );
        }
        tracing::info!(generation = prepared.id, retired = ?retired, "activated CA generation");
        write(&self.state).manifest = manifest;
        Ok(prepared.id)
    }

    fn prune_locked(&self, now_s: u64) -> Result<Vec<u64>, CaError> {
        let mut manifest = read(&self.state).manifest.clone();
        let gone: Vec<GenerationRecord> = manifest
            .generations
            .iter()
            .filter(|r| r.state == GenerationState::Old && now_s >= removable_after(r))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = gone.iter().map(|r| r.id).collect();
        manifest.generations.retain(|r| !ids.contains(&r.id));
        manifest.spiffe_sequence += 1;
        self.store.write_manifest(&manifest)?;
        tracing::info!(
            generations = ?ids,
            spiffe_sequence = manifest.spiffe_sequence,
            "pruned old CA generations from the trust bundle"
        );
        {
            let mut state = write(&self.state);
            state.manifest = manifest;
            for id in &ids {
                state.gens.remove(id);
            }
        }
        // The manifest no longer names these files, so a failed removal is only litter.
        for rec in &gone {
            for f in [&rec.key_file, &rec.cert_file] {
                if let Err(e) = self.store.remove(f) {
                    tracing::warn!(error = %e, "could not remove a pruned CA file");
                }
            }
        }
        Ok(ids)
    }
}
