//! Reading the live table back (`nft -j list table inet NAME`), for reconciliation after a
//! crash, drift checks, and tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::ruleset::{self, unmap_sa};
use super::{nft, CaptureConfig, CaptureError, CaptureRules};

/// What the kernel holds for the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    /// Set name -> its elements, as nft's JSON renders them.
    pub sets: BTreeMap<String, Vec<Value>>,
    /// Chain name -> hook and rules.
    pub chains: BTreeMap<String, ChainState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainState {
    /// `Some("output")` etc. for base chains.
    pub hook: Option<String>,
    /// Number of rules.
    pub rules: usize,
}

/// Lists the table; `Ok(None)` when it does not exist.
pub fn list(cfg: &CaptureConfig) -> Result<Option<TableState>, CaptureError> {
    match nft::run(cfg, &["-j", "list", "table", "inet", &cfg.table], None) {
        Ok(out) => parse(&out).map(Some),
        // nft reports a missing table as ENOENT.
        Err(CaptureError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses `nft -j list table` output.
pub fn parse(json: &str) -> Result<TableState, CaptureError> {
    let v: Value = serde_json::from_str(json).map_err(|e| CaptureError::Listing(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| CaptureError::Listing("no \"nftables\" array".into()))?;
    let mut st = TableState::default();
    for item in items {
        if let Some(set) = item.get("set") {
            let name = str_field(set, "name")?;
            let elems = set.get("elem").and_then(Value::as_array).cloned().unwrap_or_default();
            st.sets.insert(name, elems);
        } else if let Some(chain) = item.get("chain") {
            let name = str_field(chain, "name")?;
            let hook = chain.get("hook").and_then(Value::as_str).map(str::to_owned);
            st.chains.entry(name).or_default().hook = hook;
        } else if let Some(rule) = item.get("rule") {
            st.chains.entry(str_field(rule, "chain")?).or_default().rules += 1;
        }
    }
    Ok(st)
}

fn str_field(v: &Value, k: &str) -> Result<String, CaptureError> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CaptureError::Listing(format!("object without {k:?}")))
}

impl TableState {
    /// Elements of a set of plain numbers (uid, gid, port sets).
    pub fn numbers(&self, set: &str) -> BTreeSet<u64> {
        self.sets.get(set).into_iter().flatten().filter_map(Value::as_u64).collect()
    }
    pub fn uids(&self) -> BTreeSet<u32> {
        self.numbers("out_uids").into_iter().filter_map(|n| u32::try_from(n).ok()).collect()
    }
    pub fn gids(&self) -> BTreeSet<u32> {
        self.numbers("out_gids").into_iter().filter_map(|n| u32::try_from(n).ok()).collect()
    }
    pub fn inbound_ports(&self) -> BTreeSet<u16> {
        self.numbers("in_ports").into_iter().filter_map(|n| u16::try_from(n).ok()).collect()
    }
    /// Elements of `out_svc4` and `out_svc6` (`{"concat": ["10.0.0.1", 80]}`).
    pub fn services(&self) -> BTreeSet<SocketAddr> {
        let mut out = BTreeSet::new();
        for set in ["out_svc4", "out_svc6"] {
            for e in self.sets.get(set).into_iter().flatten() {
                let c = e.get("concat").and_then(Value::as_array);
                let ip = c.and_then(|c| c.first()).and_then(Value::as_str).and_then(|s| s.parse::<IpAddr>().ok());
                let port = c.and_then(|c| c.get(1)).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
                if let (Some(ip), Some(port)) = (ip, port) {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
        out
    }

    /// Whether this is what applying `rules` with `cfg` produces: every object present, base
    /// chains on the right hooks, the same rule counts, and the same exact-valued set
    /// elements. Network sets are checked only for presence, since auto-merge may rewrite them.
    pub fn matches(&self, cfg: &CaptureConfig, rules: &CaptureRules) -> bool {
        let sel = &rules.outbound;
        let chain_ok = |name: &str, hook: Option<&str>, n: usize| {
            self.chains.get(name).is_some_and(|c| c.hook.as_deref() == hook && c.rules == n)
        };
        let want_services: BTreeSet<SocketAddr> = match &sel.destinations {
            super::Destinations::All => BTreeSet::new(),
            super::Destinations::Only { services, .. } => services.iter().copied().map(unmap_sa).collect(),
        };
        ruleset::SETS.iter().all(|(s, _)| self.sets.contains_key(*s))
            && chain_ok("output", Some("output"), ruleset::output_rules(cfg, sel).len())
            && chain_ok(ruleset::DEST_CHAIN, None, ruleset::dest_rules(cfg, &sel.destinations).len())
            && chain_ok("prerouting", Some("prerouting"), ruleset::prerouting_rules(cfg).len())
            && self.uids() == sel.uids
            && self.gids() == sel.gids
            && self.inbound_ports() == rules.inbound_ports
            && self.services() == want_services
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_listing() {
        let j = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "t", "handle": 2}},
          {"set": {"family": "inet", "name": "out_uids", "table": "t", "type": "uid", "handle": 4, "elem": [1000, 65534]}},
          {"set": {"family": "inet", "name": "out_svc4", "table": "t", "type": ["ipv4_addr", "inet_service"], "handle": 6,
                   "elem": [{"concat": ["10.99.0.2", 8080]}]}},
          {"chain": {"family": "inet", "table": "t", "name": "output", "handle": 1, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
          {"rule": {"family": "inet", "table": "t", "chain": "output", "handle": 9, "expr": []}}]}"#;
        let st = parse(j).unwrap();
        assert_eq!(st.uids(), [1000, 65534].into());
        assert_eq!(st.services(), ["10.99.0.2:8080".parse().unwrap()].into());
        assert_eq!(st.chains["output"], ChainState { hook: Some("output".into()), rules: 1 });
        assert!(parse("{}").is_err());
    }
}
