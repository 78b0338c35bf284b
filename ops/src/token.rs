//! `riptides token create|list|revoke`: join tokens for enrolling daemons.
//!
//! A token is `<id>.<secret>`. The id (12 random lowercase alphanumerics) names the JoinToken
//! object; the secret (32 random bytes, lowercase hex) is never sent to the control plane: the
//! object stores `spec.tokenHash = "sha256:" + hex(sha256(<secret as the ASCII text after the
//! dot>))`. The whole token is printed once on stdout and nowhere else.

use anyhow::{anyhow, bail, Context as _, Result};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use riptides_wire::resource::duration::GoDuration;
use riptides_wire::resource::{by_name, ResourceType, AUTH_GROUP, VERSION};
use serde_json::{json, Value};

use crate::output::{self, OutputFormat};
use crate::{timefmt, Target};

const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub const ID_LEN: usize = 12;
pub const SECRET_BYTES: usize = 32;

fn join_tokens() -> &'static ResourceType {
    by_name("jointoken").expect("JoinToken is a known kind")
}

/// A fresh token: `(id, secret)`.
pub fn generate() -> Result<(String, String)> {
    let rng = SystemRandom::new();
    let mut id = String::with_capacity(ID_LEN);
    let mut buf = [0u8; 32];
    while id.len() < ID_LEN {
        rng.fill(&mut buf).map_err(|_| anyhow!("the system random generator failed"))?;
        // Rejection sampling: 252 = 7 * 36, so every character is equally likely.
        for b in buf.iter().filter(|b| **b < 252) {
            if id.len() < ID_LEN {
                id.push(ID_ALPHABET[(*b % 36) as usize] as char);
            }
        }
    }
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut secret).map_err(|_| anyhow!("the system random generator failed"))?;
    Ok((id, hex(&secret)))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of the secret text.
pub use riptides_wire::resource::auth::token_hash;

/// The JoinToken object for a token.
pub fn token_object(
    id: &str,
    secret: &str,
    namespace: &str,
    expires_at: &str,
    verifier: Option<&str>,
    daemon_id: Option<&str>,
) -> Value {
    let mut spec = json!({ "tokenHash": token_hash(secret), "expiresAt": expires_at });
    if let Some(v) = verifier {
        spec["verifier"] = v.into();
    }
    if let Some(d) = daemon_id {
        spec["daemonID"] = d.into();
    }
    json!({
        "apiVersion": format!("{AUTH_GROUP}/{VERSION}"),
        "kind": "JoinToken",
        "metadata": { "name": id, "namespace": namespace },
        "spec": spec,
    })
}

pub struct CreateArgs<'a> {
    pub ttl: &'a str,
    pub verifier: Option<&'a str>,
    pub daemon_id: Option<&'a str>,
}

pub async fn create(target: &Target, args: CreateArgs<'_>) -> Result<()> {
    let ttl = GoDuration::parse(args.ttl).context("invalid --ttl")?;
    let ttl_text = ttl.to_string();
    let ttl = ttl.as_duration();
    if ttl.as_secs() < 1 {
        bail!("invalid --ttl: must be at least 1s");
    }
    let client = target.client()?;
    let ns = target.namespace.as_str();
    if let Some(name) = args.verifier {
        check_verifier(&client, ns, name, ttl, &ttl_text).await?;
    }
    let (id, secret) = generate()?;
    let expires_at = timefmt::format_rfc3339(timefmt::now_unix() + ttl.as_secs() as i64);
    let object = token_object(&id, &secret, ns, &expires_at, args.verifier, args.daemon_id);
    client.create(join_tokens(), ns, &object).await.context("cannot create the join token")?;
    eprintln!("jointoken/{id} created in namespace {ns}, expires at {expires_at} (single use; shown only once)");
    println!("{id}.{secret}");
    Ok(())
}

/// Early, clear refusals for a verifier that does not exist, is of another method, or caps
/// the TTL below the one asked for. The server checks again.
async fn check_verifier(
    client: &riptides_wire::client::ApiClient,
    ns: &str,
    name: &str,
    ttl: std::time::Duration,
    ttl_text: &str,
) -> Result<()> {
    let rt = by_name("verifier").expect("Verifier is a known kind");
    let v = match client.get(rt, ns, name).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => bail!("verifier {name:?} not found in namespace {ns}"),
        Err(e) => return Err(e).context(format!("cannot read verifier {name:?}")),
    };
    let method = v["spec"]["method"].as_str().unwrap_or_default();
    if method != "joinToken" {
        bail!("verifier {name:?} uses method {method:?}, not joinToken");
    }
    if let Some(max) = v["spec"]["joinToken"]["maxTtl"].as_str().and_then(|m| GoDuration::parse(m).ok()) {
        if ttl > max.as_duration() {
            bail!("--ttl {ttl_text} is longer than verifier {name:?} allows ({max})");
        }
    }
    Ok(())
}

/// `valid`, `expired` or `used` for a stored token.
pub fn token_state(o: &Value, now: i64) -> &'static str {
    if o["status"]["used"].as_bool().unwrap_or(false) {
        "used"
    } else {
        match o["spec"]["expiresAt"].as_str().and_then(timefmt::parse_rfc3339) {
            Some(t) if t > now => "valid",
            Some(_) => "expired",
            None => "invalid",
        }
    }
}

pub async fn list(target: &Target, all_namespaces: bool, output_format: Option<OutputFormat>) -> Result<()> {
    let client = target.client()?;
    let ns = (!all_namespaces).then_some(target.namespace.as_str());
    let list = client.list(join_tokens(), ns).await?;
    match output_format {
        Some(OutputFormat::Yaml) => return output::print_yaml(&serde_json::to_value(&list)?),
        Some(OutputFormat::Json) => return output::print_json(&serde_json::to_value(&list)?),
        Some(OutputFormat::Name) => {
            for o in &list.items {
                println!("{}", output::object_name(join_tokens(), o));
            }
            return Ok(());
        }
        _ => {}
    }
    if list.items.is_empty() {
        eprintln!("No join tokens found{}", ns.map(|n| format!(" in {n} namespace")).unwrap_or_default());
        return Ok(());
    }
    let now = timefmt::now_unix();
    let mut headers = Vec::new();
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.extend(["NAME", "VERIFIER", "DAEMON-ID", "EXPIRES", "STATE", "USED-BY", "AGE"]);
    let str_or_none = |v: &Value| v.as_str().filter(|s| !s.is_empty()).unwrap_or("<none>").to_owned();
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|o| {
            let mut row = Vec::new();
            if all_namespaces {
                row.push(str_or_none(&o["metadata"]["namespace"]));
            }
            let expires = match o["spec"]["expiresAt"].as_str().and_then(timefmt::parse_rfc3339) {
                Some(t) if t > now => format!("in {}", timefmt::human_duration(t - now)),
                Some(t) => format!("{} ago", timefmt::human_duration(now - t)),
                None => "<invalid>".into(),
            };
            row.extend([
                str_or_none(&o["metadata"]["name"]),
                str_or_none(&o["spec"]["verifier"]),
                str_or_none(&o["spec"]["daemonID"]),
                expires,
                token_state(o, now).to_owned(),
                str_or_none(&o["status"]["usedBy"]),
                timefmt::age(o["metadata"]["creationTimestamp"].as_str(), now),
            ]);
            row
        })
        .collect();
    print!("{}", output::table(&headers, &rows));
    Ok(())
}

pub async fn revoke(target: &Target, name: &str) -> Result<()> {
    let client = target.client()?;
    client.delete(join_tokens(), &target.namespace, name).await?;
    println!("jointoken {name:?} revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use riptides_wire::resource::{validate_object, ValidationContext};
    use riptides_wire::TrustDomain;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let (id, secret) = generate().unwrap();
        assert_eq!(id.len(), ID_LEN);
        assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
        assert_eq!(secret.len(), 2 * SECRET_BYTES);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let (id2, secret2) = generate().unwrap();
        assert_ne!((id.clone(), secret.clone()), (id2, secret2));
    }

    #[test]
    fn hash_is_sha256_of_the_secret_text() {
        // sha256("abc")
        assert_eq!(token_hash("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn the_object_validates_and_holds_no_secret() {
        let (id, secret) = generate().unwrap();
        let o = token_object(&id, &secret, "riptides-system", "2030-01-01T00:00:00Z", Some("join"), Some("node-1"));
        let ctx = ValidationContext { trust_domain: TrustDomain::parse("example.com").unwrap() };
        let (rt, _) = validate_object(&o, &ctx).unwrap();
        assert_eq!(rt.kind, "JoinToken");
        assert!(!o.to_string().contains(&secret));
        assert_eq!(o["spec"]["daemonID"], "node-1");
    }

    #[test]
    fn states() {
        let o = json!({"spec": {"expiresAt": "1970-01-01T00:01:40Z"}});
        assert_eq!(token_state(&o, 99), "valid");
        assert_eq!(token_state(&o, 100), "expired");
        assert_eq!(
            token_state(&json!({"spec": {"expiresAt": "1970-01-01T00:01:40Z"}, "status": {"used": true}}), 0),
            "used"
        );
    }
}
