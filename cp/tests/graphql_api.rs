//! The GraphQL API through the real TLS listener: authorization by role (admin client
//! certificate, OIDC access tokens for viewer and editor), writes through the REST validation
//! path, depth and cost limits, and that no secret is ever returned.

mod common;

use riptides_cp::oidc::Role;
use riptides_cp::ControlPlane;
use riptides_wire::client::ApiClient;
use riptides_wire::kubeconfig::Kubeconfig;
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-credential-VALUE-4711";

fn client_with_token(cp: &ControlPlane, token: Option<String>) -> ApiClient {
    let text = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    let mut creds = Kubeconfig::parse(&text).unwrap().credentials().unwrap();
    creds.client_cert_pem = None;
    creds.client_key_pem = None;
    creds.bearer_token = token;
    ApiClient::new(creds).unwrap()
}

fn operator(cp: &ControlPlane, name: &str, role: Role) -> ApiClient {
    let token = cp.oidc().issue_access_token(name, Some(&format!("{name}@example.com")), role);
    client_with_token(cp, Some(token))
}

async fn gql_raw(c: &ApiClient, query: &str, variables: Value) -> (u16, Value) {
    let body = json!({"query": query, "variables": variables}).to_string();
    let (code, bytes) = c
        .raw_request(hyper::Method::POST, "/graphql", Some(("application/json", bytes::Bytes::from(body))))
        .await
        .expect("request goes through");
    (code, serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)})))
}

async fn gql(c: &ApiClient, query: &str, variables: Value) -> Value {
    let (code, v) = gql_raw(c, query, variables).await;
    assert_eq!(code, 200, "{v}");
    v
}

fn error_code(v: &Value) -> Option<&str> {
    v["errors"][0]["extensions"]["code"].as_str()
}

const APPLY: &str = "mutation($o: JSON!) { apply(object: $o) { kind name namespace created resourceVersion } }";

fn wi(name: &str) -> Value {
    json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": "riptides-system"},
        "spec": {"workloadID": format!("app/{name}"), "scope": {"daemon": {"id": "node-a"}},
                 "selectors": [{"process:name": name}],
                 "egress": [{"selectors": [{"tier": "backend"}], "connection": {"tls": {"mode": "MUTUAL"}},
                             "allowedSPIFFEIDs": ["spiffe://example.com/app/orders"]}],
                 "ingress": [{"port": 8000, "allowedSPIFFEIDs": ["spiffe://example.com/app/frontend"]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path()).await;
    let admin = common::admin(&cp);
    let viewer = operator(&cp, "vera", Role::Viewer);
    let editor = operator(&cp, "eddie", Role::Editor);

    // Anonymous and forged tokens are refused before GraphQL runs.
    let (code, v) = gql_raw(&client_with_token(&cp, None), "{ me { role } }", json!({})).await;
    assert_eq!(code, 401, "{v}");
    assert_eq!(error_code(&v), Some("UNAUTHENTICATED"), "{v}");
    let (code, v) =
        gql_raw(&client_with_token(&cp, Some("eyJhbGciOiJub25lIn0.e30.".into())), "{ me { role } }", json!({})).await;
    assert_eq!(code, 401, "{v}");

    // Only JSON bodies: a cross-site form post cannot carry a mutation.
    let (code, _) = admin
        .raw_request(
            hyper::Method::POST,
            "/graphql",
            Some((
                "text/plain",
                bytes::Bytes::from(json!({"query": "mutation { revokeJoinToken(name: \"x\") { name } }"}).to_string()),
            )),
        )
        .await
        .unwrap();
    assert_eq!(code, 415);

    let me = gql(&viewer, "{ me { subject role canEdit canAdmin } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({"subject": "vera", "role": "viewer", "canEdit": false, "canAdmin": false}));
    let me = gql(&admin, "{ me { role canAdmin } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({"role": "admin", "canAdmin": true}));

    // A viewer cannot mutate: the apply is refused and nothing is written.
    let v = gql(&viewer, APPLY, json!({"o": wi("web")})).await;
    assert_eq!(error_code(&v), Some("FORBIDDEN"), "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("needs role editor"), "{v}");
    assert!(admin.get(common::rt("workloadidentities"), "riptides-system", "web").await.unwrap_err().is_not_found());
    let v = gql(&viewer, "mutation { delete(kind: \"wi\", name: \"web\") { name } }", json!({})).await;
    assert_eq!(error_code(&v), Some("FORBIDDEN"), "{v}");
    // ... and the same through REST: reads pass, writes are 403.
    assert!(viewer.list(common::rt("workloadidentities"), None).await.is_ok());
    let e = viewer.create(common::rt("workloadidentities"), "riptides-system", &wi("web")).await.unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");

    // An editor applies workload configuration, through the REST validation path.
    let v = gql(&editor, APPLY, json!({"o": wi("web")})).await;
    assert_eq!(v["data"]["apply"]["created"], true, "{v}");
    let mut changed = wi("web");
    changed["spec"]["ingress"][0]["port"] = json!(8001);
    let v = gql(&editor, APPLY, json!({"o": changed})).await;
    assert_eq!(v["data"]["apply"]["created"], false, "{v}");
    let stored = admin.get(common::rt("workloadidentities"), "riptides-system", "web").await.unwrap();
    assert_eq!(stored["spec"]["ingress"][0]["port"], 8001);
    assert_eq!(stored["metadata"]["generation"], 2);
    let mut bad = wi("bad");
    bad["spec"]["egress"][0]["allowedSPIFFEIDs"] = json!(["not-a-spiffe-id"]);
    let v = gql(&editor, APPLY, json!({"o": bad})).await;
    assert_eq!(error_code(&v), Some("Invalid"), "{v}");
    assert!(v["errors"][0]["extensions"]["causes"][0]["field"].as_str().unwrap().contains("allowedSPIFFEIDs"), "{v}");

    // Enrollment is the admin's: an editor may not revoke join tokens or apply verifiers.
    common::create_token(&cp, "tok-1", 600, None).await;
    let revoke = "mutation { revokeJoinToken(name: \"tok-1\") { name } }";
    let v = gql(&editor, revoke, json!({})).await;
    assert_eq!(error_code(&v), Some("FORBIDDEN"), "{v}");
    let verifier = json!({"apiVersion": "auth.riptides.io/v1alpha1", "kind": "Verifier",
        "metadata": {"name": "jt"}, "spec": {"method": "joinToken"}});
    let v = gql(&editor, APPLY, json!({"o": verifier})).await;
    assert_eq!(error_code(&v), Some("FORBIDDEN"), "{v}");
    let v = gql(&admin, revoke, json!({})).await;
    assert_eq!(v["data"]["revokeJoinToken"]["name"], "tok-1", "{v}");
    assert!(admin.get(common::rt("jointokens"), "riptides-system", "tok-1").await.unwrap_err().is_not_found());
    let v = gql(&admin, revoke, json!({})).await;
    assert_eq!(error_code(&v), Some("NotFound"), "{v}");

    let v =
        gql(&editor, "mutation { delete(kind: \"WorkloadIdentity\", name: \"web\") { kind name } }", json!({})).await;
    assert_eq!(v["data"]["delete"], json!({"kind": "WorkloadIdentity", "name": "web"}), "{v}");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_and_cost_limits_refuse_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path()).await;
    let viewer = operator(&cp, "vera", Role::Viewer);

    // Introspection is the one recursive part of the schema.
    let mut deep = String::from("name");
    for _ in 0..12 {
        deep = format!("ofType {{ {deep} }}");
    }
    let v = gql(&viewer, &format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}"), json!({})).await;
    assert_eq!(error_code(&v), Some("DEPTH_LIMIT"), "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("limit of 10 levels"), "{v}");
    assert!(v["data"].is_null(), "{v}");

    // Asking every daemon for its connections many times over costs too much.
    let many: String = (0..25).map(|i| format!("c{i}: connections {{ connections {{ local }} }} ")).collect();
    let v = gql(&viewer, &format!("{{ {many} }}"), json!({})).await;
    assert_eq!(error_code(&v), Some("COST_LIMIT"), "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("exceeds the limit of 2000"), "{v}");

    // A reasonable query passes; a daemon that is not connected is reported, not hidden.
    let v = gql(
        &viewer,
        "{ connections(daemon: \"ghost\") { connections { local } errors { daemon message } } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["connections"]["errors"][0]["daemon"], "ghost", "{v}");
    assert!(v["data"]["connections"]["errors"][0]["message"].as_str().unwrap().contains("not connected"), "{v}");
    cp.shutdown().await;
}

/// Builds a selection of every field reachable from `type_name` that takes no required
/// argument, down to `depth` levels, from the introspection result.
fn selection(types: &Value, type_name: &str, depth: usize) -> Option<String> {
    let t = types.as_array()?.iter().find(|t| t["name"] == type_name)?;
    let fields = t["fields"].as_array()?;
    let mut out = Vec::new();
    for f in fields {
        if f["args"].as_array().is_some_and(|a| a.iter().any(|a| a["type"]["kind"] == "NON_NULL")) {
            continue;
        }
        let mut ty = &f["type"];
        while ty["ofType"].is_object() {
            ty = &ty["ofType"];
        }
        match ty["kind"].as_str() {
            Some("OBJECT") if depth > 0 => {
                if let Some(sub) = selection(types, ty["name"].as_str()?, depth - 1) {
                    out.push(format!("{} {{ {sub} }}", f["name"].as_str()?));
                }
            }
            Some("OBJECT") => {}
            _ => out.push(f["name"].as_str()?.to_owned()),
        }
    }
    (!out.is_empty()).then(|| out.join(" "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_returned() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path()).await;
    let admin = common::admin(&cp);
    let ns = "riptides-system";
    let token = common::create_token(&cp, "enroll-1", 600, Some("node-a")).await;
    let (_, token_secret) = token.split_once('.').unwrap();
    let token_hash = riptides_cp::attest::hash_secret(token_secret);
    let source = json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "CredentialSource",
        "metadata": {"name": "api-key", "namespace": ns,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                        json!({"spec": {"type": "static", "secretValue": SECRET}}).to_string()}},
        "spec": {"type": "static", "secretValue": SECRET}});
    admin.create(common::rt("credentialsources"), ns, &source).await.unwrap();
    // Through GraphQL too: the apply answer carries no secret either.
    let mut second = source.clone();
    second["metadata"]["name"] = json!("api-key-2");
    let v = gql(&admin, APPLY, json!({"o": second})).await;
    assert!(!v.to_string().contains(SECRET), "{v}");
    let binding = json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "CredentialBinding",
        "metadata": {"name": "b", "namespace": ns},
        "spec": {"workloadID": "app/web", "serviceSelectors": [{"tier": "backend"}], "credentialSource": "api-key",
                 "injection": {"header": "Authorization", "format": "Bearer {{credential}}"}}});
    admin.create(common::rt("credentialbindings"), ns, &binding).await.unwrap();
    admin.create(common::rt("workloadidentities"), ns, &wi("web")).await.unwrap();
    let svc = json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "orders", "namespace": ns},
        "spec": {"labels": {"tier": "backend"}, "addresses": [{"address": "10.0.0.5", "port": 8080}]}});
    admin.create(common::rt("services"), ns, &svc).await.unwrap();

    // Every field of every type, as each role sees it.
    let intro = gql(&admin, "{ __schema { types { name kind fields { name args { name type { kind } } type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }", json!({})).await;
    let types = &intro["data"]["__schema"]["types"];
    let roots: Vec<&Value> = types.as_array().unwrap().iter().find(|t| t["name"] == "QueryRoot").unwrap()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let mut seen = 0;
    for role in [Role::Viewer, Role::Editor, Role::Admin] {
        let c = operator(&cp, "someone", role);
        for f in &roots {
            let name = f["name"].as_str().unwrap();
            let mut ty = &f["type"];
            while ty["ofType"].is_object() {
                ty = &ty["ofType"];
            }
            let args = if name == "effectivePolicy" { "(name: \"web\")" } else { "" };
            let sub = match ty["kind"].as_str() {
                Some("OBJECT") => format!(
                    "{{ {} }}",
                    selection(types, ty["name"].as_str().unwrap(), 4).unwrap_or_else(|| panic!("{name}: {ty}"))
                ),
                _ => String::new(),
            };
            let v = gql(&c, &format!("{{ {name}{args} {sub} }}"), json!({})).await;
            let text = v.to_string();
            assert!(!v["data"][name].is_null() && v["errors"].is_null(), "{name}: {text}");
            for forbidden in [SECRET, token_secret, token_hash.as_str(), "tokenHash", "secretValue"] {
                assert!(!text.contains(forbidden), "{name} returned {forbidden:?}: {text}");
            }
            seen += text.len();
        }
    }
    assert!(seen > 1000);
    // The objects are really there, with what may be shown.
    let v = gql(&admin, "{ credentialSources { meta { name } sourceType hasSecret } joinTokens { meta { name } daemonId used expired } }", json!({})).await;
    assert_eq!(
        v["data"]["credentialSources"][0],
        json!({"meta": {"name": "api-key"}, "sourceType": "static", "hasSecret": true}),
        "{v}"
    );
    assert_eq!(
        v["data"]["joinTokens"][0],
        json!({"meta": {"name": "enroll-1"}, "daemonId": "node-a", "used": false, "expired": false}),
        "{v}"
    );
    // The effective policy resolves the egress rule to the Service.
    let v = gql(&admin, "{ effectivePolicy(name: \"web\") { spiffeId destinations { service decision mode allowedSpiffeIds } ingress { port mode enforcement } } }", json!({})).await;
    let p = &v["data"]["effectivePolicy"];
    assert_eq!(p["spiffeId"], "spiffe://example.com/app/web", "{v}");
    assert_eq!(
        p["destinations"][0],
        json!({"service": "riptides-system/orders", "decision": "SECURED", "mode": "MUTUAL",
        "allowedSpiffeIds": ["spiffe://example.com/app/orders"]}),
        "{v}"
    );
    assert_eq!(p["ingress"][0], json!({"port": 8000, "mode": "MUTUAL", "enforcement": "MTLS_REQUIRED"}), "{v}");
    cp.shutdown().await;
}
