//! The webhook's serving certificate without manual steps. Self-managed (the default): the
//! leader keeps a CA (10 years) and a serving certificate (1 year, renewed 30 days before it
//! ends, or when the host names change) in one Secret of the operator's namespace, and keeps
//! `caBundle` of its own MutatingWebhookConfiguration equal to that CA; every replica loads
//! the certificate from the Secret. With cert-manager (chart value
//! `webhook.certManager.enabled`) cert-manager writes the Secret and injects `caBundle`; the
//! operator only loads it.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The Secret's keys (those of a `kubernetes.io/tls` Secret, and cert-manager's `ca.crt`).
pub const CERT: &str = "tls.crt";
pub const KEY: &str = "tls.key";
pub const CA: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
/// When the serving certificate ends (RFC 3339) and the names it is for.
const NOT_AFTER: &str = "tuner.vpccni.io/not-after";
const HOSTS: &str = "tuner.vpccni.io/hosts";

const CA_DAYS: i64 = 3650;
const SERVING_DAYS: i64 = 365;
/// Renew the serving certificate this long before it ends.
const RENEW_DAYS: i64 = 30;

/// A serving certificate and its key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {0} has no {1}")]
    Missing(String, &'static str),
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "vpc-cni-tuner webhook CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn validity(params: &mut CertificateParams, now: jiff::Timestamp, days: i64) {
    let day = |t: jiff::Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    params.not_before = day(now - jiff::SignedDuration::from_hours(24));
    params.not_after = day(now + jiff::SignedDuration::from_hours(24 * days));
}

/// A new CA: (certificate PEM, key PEM).
pub fn new_ca(now: jiff::Timestamp) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = ca_params()?;
    validity(&mut params, now, CA_DAYS);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `hosts` (DNS names or IP addresses) signed by the CA whose key is
/// `ca_key_pem`: (certificate PEM, key PEM, when it ends).
pub fn new_serving(
    ca_key_pem: &str,
    hosts: &[String],
    now: jiff::Timestamp,
) -> Result<(String, String, jiff::Timestamp), rcgen::Error> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_default(),
    );
    validity(&mut params, now, SERVING_DAYS);
    let cert = params.signed_by(&key, &issuer)?;
    let ends = now + jiff::SignedDuration::from_hours(24 * SERVING_DAYS);
    Ok((cert.pem(), key.serialize_pem(), ends))
}

/// Whether a serving certificate that ends at `not_after` (or was made for other hosts) is to
/// be renewed now.
pub fn needs_renewal(
    not_after: Option<&str>,
    hosts_then: Option<&str>,
    hosts: &[String],
    now: jiff::Timestamp,
) -> bool {
    let ends = not_after.and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let renew_at = ends.map(|e| e - jiff::SignedDuration::from_hours(24 * RENEW_DAYS));
    renew_at.is_none_or(|at| now >= at) || hosts_then != Some(hosts.join(",").as_str())
}

fn text(secret: &Secret, key: &'static str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// The serving material in a Secret.
pub fn material(secret: &Secret) -> Result<Material, TlsError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let get = |key| text(secret, key).ok_or_else(|| TlsError::Missing(name.clone(), key));
    Ok(Material {
        cert_pem: get(CERT)?,
        key_pem: get(KEY)?,
        ca_pem: text(secret, CA).unwrap_or_default(),
    })
}

/// Reads the Secret (any replica).
pub async fn load(client: &Client, namespace: &str, name: &str) -> Result<Material, TlsError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    material(&secret)
}

/// The leader's step: the Secret exists and holds a serving certificate for `hosts` that is not
/// about to end (created or renewed as needed), and `caBundle` of MutatingWebhookConfiguration
/// `configuration` (when given) is its CA. Returns whether the Secret was written.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    name: &str,
    hosts: &[String],
    configuration: Option<&str>,
) -> Result<bool, TlsError> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let now = jiff::Timestamp::now();
    let existing = secrets.get_opt(name).await?;
    let annotation = |s: &Secret, key: &str| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    let (ca_pem, ca_key_pem, write) = match &existing {
        Some(s) => match (text(s, CA), text(s, CA_KEY)) {
            (Some(ca), Some(key)) => {
                let renew = needs_renewal(
                    annotation(s, NOT_AFTER).as_deref(),
                    annotation(s, HOSTS).as_deref(),
                    hosts,
                    now,
                );
                (ca, key, renew)
            }
            _ => {
                let (ca, key) = new_ca(now)?;
                (ca, key, true)
            }
        },
        None => {
            let (ca, key) = new_ca(now)?;
            (ca, key, true)
        }
    };
    if write {
        let (cert, key, ends) = new_serving(&ca_key_pem, hosts, now)?;
        let data: BTreeMap<String, ByteString> = [
            (CA, ca_pem.clone()),
            (CA_KEY, ca_key_pem),
            (CERT, cert),
            (KEY, key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect();
        let mut secret = existing.clone().unwrap_or_default();
        secret.metadata.name = Some(name.to_owned());
        secret.metadata.namespace = Some(namespace.to_owned());
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(NOT_AFTER.to_owned(), ends.to_string());
        annotations.insert(HOSTS.to_owned(), hosts.join(","));
        secret.type_ = Some("kubernetes.io/tls".to_owned());
        secret.data = Some(data);
        match existing {
            // Replace carries the resourceVersion read: a concurrent writer makes it fail.
            Some(_) => {
                secrets
                    .replace(name, &PostParams::default(), &secret)
                    .await?
            }
            None => secrets.create(&PostParams::default(), &secret).await?,
        };
    }
    if let Some(configuration) = configuration {
        ca_bundle(client, configuration, &ca_pem).await?;
    }
    Ok(write)
}

/// Sets `caBundle` of every webhook of `configuration` that names another CA (a JSON patch of
/// that field alone, guarded by a test of the webhook's name).
pub async fn ca_bundle(client: &Client, configuration: &str, ca_pem: &str) -> Result<(), TlsError> {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let Some(current) = api.get_opt(configuration).await? else {
        return Ok(());
    };
    let wanted = BASE64.encode(ca_pem);
    let mut ops = Vec::new();
    for (i, webhook) in current.webhooks.iter().flatten().enumerate() {
        let have = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| BASE64.encode(&b.0));
        if have.as_deref() != Some(wanted.as_str()) {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": wanted}));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .map_err(|e| TlsError::Missing(format!("{configuration}: {e}"), "caBundle"))?;
    api.patch(
        configuration,
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_certificate_chains_to_its_ca() {
        let now = jiff::Timestamp::now();
        let (ca, ca_key) = new_ca(now).unwrap();
        let hosts = vec!["tuner.ns.svc".to_owned(), "127.0.0.1".to_owned()];
        let (cert, key, ends) = new_serving(&ca_key, &hosts, now).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        // rustls accepts it for both names with the CA as the only root.
        let server = super::super::server::certified_key(&cert, &key).unwrap();
        assert_eq!(server.cert.len(), 1);
        let verified = super::super::server::verify_with(&ca, &cert, "tuner.ns.svc");
        assert!(verified.is_ok(), "{verified:?}");
        assert!(super::super::server::verify_with(&ca, &cert, "other.ns.svc").is_err());
        let other_ca = new_ca(now).unwrap().0;
        assert!(super::super::server::verify_with(&other_ca, &cert, "tuner.ns.svc").is_err());
        assert!(ends > now + jiff::SignedDuration::from_hours(24 * 300));
    }

    #[test]
    fn renewal_comes_before_the_end_or_with_new_names() {
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let hosts = vec!["a.ns.svc".to_owned()];
        assert!(!needs_renewal(
            Some("2027-06-01T00:00:00Z"),
            Some("a.ns.svc"),
            &hosts,
            now
        ));
        assert!(needs_renewal(
            Some("2026-12-20T00:00:00Z"),
            Some("a.ns.svc"),
            &hosts,
            now
        ));
        assert!(needs_renewal(
            Some("2027-06-01T00:00:00Z"),
            Some("b.ns.svc"),
            &hosts,
            now
        ));
        assert!(needs_renewal(None, Some("a.ns.svc"), &hosts, now));
    }
}
