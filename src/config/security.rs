//! Security settings of the MySQL and Kafka connections: the `[mysql] tls*`
//! keys (named after MySQL's `--ssl-mode`) and the `[kafka]` SSL/SASL keys,
//! their validation, and how they map onto mysql_async's `SslOpts` and
//! librdkafka properties.
//!
//! Passwords stay in [`Secret`]s until the moment they are handed to a
//! client library; nothing here formats one into a message.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{resolve_secret, KafkaConfig, MysqlConfig, Secret};

/// `mysql.tls`: whether and how the MySQL connections are encrypted. The
/// names and meanings are those of the MySQL client's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MysqlTls {
    /// Plain TCP.
    #[default]
    Disabled,
    /// TLS when the server offers it, plain TCP otherwise; the certificate is
    /// not checked (protects against eavesdropping, not impersonation).
    Preferred,
    /// TLS or fail; the certificate is not checked.
    Required,
    /// TLS, and the server certificate must be signed by `tls_ca_file`
    /// (or a public CA when unset); the host name is not checked.
    VerifyCa,
    /// As `verify-ca`, and the host in `mysql.url` must match the certificate.
    VerifyIdentity,
}

impl MysqlTls {
    pub fn as_str(self) -> &'static str {
        match self {
            MysqlTls::Disabled => "disabled",
            MysqlTls::Preferred => "preferred",
            MysqlTls::Required => "required",
            MysqlTls::VerifyCa => "verify-ca",
            MysqlTls::VerifyIdentity => "verify-identity",
        }
    }
}

/// `kafka.security_protocol` (librdkafka `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
    fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
    fn is_ssl(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// `kafka.sasl_mechanism` (librdkafka `sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// librdkafka properties the named security keys own: set them with the
/// named keys, not through `kafka.properties`.
const SECURITY_PROPERTIES: [(&str, &str); 8] = [
    ("security.protocol", "kafka.security_protocol"),
    ("sasl.mechanism", "kafka.sasl_mechanism"),
    ("sasl.mechanisms", "kafka.sasl_mechanism"),
    ("sasl.username", "kafka.sasl_username"),
    (
        "sasl.password",
        "kafka.sasl_password or kafka.sasl_password_file",
    ),
    ("ssl.ca.location", "kafka.ssl_ca_file"),
    ("ssl.certificate.location", "kafka.ssl_cert_file"),
    ("ssl.key.location", "kafka.ssl_key_file"),
];

/// Properties that hold secrets: never accepted in `kafka.properties`,
/// whose values show in config dumps.
const SECRET_PROPERTIES: [&str; 3] = ["sasl.password", "ssl.key.password", "ssl.keystore.password"];

pub(super) fn validate_mysql_tls(m: &MysqlConfig, errs: &mut Vec<String>) {
    let verifying = matches!(m.tls, MysqlTls::VerifyCa | MysqlTls::VerifyIdentity);
    if m.tls_ca_file.is_some() && !verifying {
        errs.push(format!(
            "mysql.tls_ca_file is set but mysql.tls = {:?} does not check certificates; set mysql.tls = \"verify-ca\" or \"verify-identity\", or remove tls_ca_file",
            m.tls.as_str()
        ));
    }
    if m.tls_cert_file.is_some() != m.tls_key_file.is_some() {
        errs.push(
            "mysql.tls_cert_file and mysql.tls_key_file go together; set both or neither".into(),
        );
    }
    if m.tls_cert_file.is_some() && m.tls == MysqlTls::Disabled {
        errs.push(
            "mysql.tls_cert_file is set but mysql.tls = \"disabled\"; a client certificate needs TLS: set mysql.tls = \"required\" or stricter"
                .into(),
        );
    }
    for (key, path) in [
        ("mysql.tls_ca_file", &m.tls_ca_file),
        ("mysql.tls_cert_file", &m.tls_cert_file),
        ("mysql.tls_key_file", &m.tls_key_file),
    ] {
        check_readable(key, path, errs);
    }
}

fn check_readable(key: &str, path: &Option<PathBuf>, errs: &mut Vec<String>) {
    if let Some(p) = path {
        if let Err(e) = std::fs::metadata(p) {
            errs.push(format!(
                "{key} = {:?} cannot be read ({e}); give the path of a PEM file",
                p.display().to_string()
            ));
        }
    }
}

pub(super) fn validate_kafka_security(k: &KafkaConfig, errs: &mut Vec<String>) {
    let p = k.security_protocol;
    let sasl_keys_set = k.sasl_mechanism.is_some()
        || k.sasl_username.is_some()
        || k.sasl_password.is_some()
        || k.sasl_password_file.is_some();
    if p.is_sasl() {
        if k.sasl_mechanism.is_none() {
            errs.push(format!(
                "kafka.security_protocol = {:?} needs kafka.sasl_mechanism: \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\"",
                p.as_str()
            ));
        }
        if k.sasl_username.as_deref().unwrap_or("").is_empty() {
            errs.push(format!(
                "kafka.security_protocol = {:?} needs kafka.sasl_username",
                p.as_str()
            ));
        }
        if k.sasl_password.is_none() && k.sasl_password_file.is_none() {
            errs.push(format!(
                "kafka.security_protocol = {:?} needs kafka.sasl_password_file (or kafka.sasl_password, e.g. from BINLOG_BRIDGE_KAFKA_SASL_PASSWORD)",
                p.as_str()
            ));
        }
    } else if sasl_keys_set {
        errs.push(format!(
            "kafka.sasl_* keys are set but kafka.security_protocol = {:?}; use \"sasl_ssl\" (or \"sasl_plaintext\" on a trusted network)",
            p.as_str()
        ));
    }
    if k.sasl_password.is_some() && k.sasl_password_file.is_some() {
        errs.push("kafka.sasl_password and kafka.sasl_password_file are both set; keep one".into());
    }
    let ssl_keys_set =
        k.ssl_ca_file.is_some() || k.ssl_cert_file.is_some() || k.ssl_key_file.is_some();
    if ssl_keys_set && !p.is_ssl() {
        errs.push(format!(
            "kafka.ssl_* files are set but kafka.security_protocol = {:?}; use \"ssl\" or \"sasl_ssl\"",
            p.as_str()
        ));
    }
    if k.ssl_cert_file.is_some() != k.ssl_key_file.is_some() {
        errs.push(
            "kafka.ssl_cert_file and kafka.ssl_key_file go together; set both or neither".into(),
        );
    }
    for (key, path) in [
        ("kafka.ssl_ca_file", &k.ssl_ca_file),
        ("kafka.ssl_cert_file", &k.ssl_cert_file),
        ("kafka.ssl_key_file", &k.ssl_key_file),
    ] {
        check_readable(key, path, errs);
    }
    for key in k.properties.keys() {
        if SECRET_PROPERTIES.contains(&key.as_str()) {
            errs.push(format!(
                "kafka.properties.{key:?} would keep a secret in plain config; use kafka.sasl_password_file (or the BINLOG_BRIDGE_KAFKA_SASL_PASSWORD variable) instead"
            ));
        } else if let Some((_, named)) = SECURITY_PROPERTIES.iter().find(|(p, _)| p == key) {
            errs.push(format!(
                "kafka.properties.{key:?} is set by {named}; use that key instead"
            ));
        }
    }
}

impl MysqlConfig {
    /// mysql_async TLS options for `mysql.tls`, `None` when disabled.
    /// `Preferred` is returned as `Required` options; the caller falls back
    /// to plain TCP when the server has no TLS (see `source::connection::connect`).
    pub fn ssl_opts(&self) -> Option<mysql_async::SslOpts> {
        if self.tls == MysqlTls::Disabled {
            return None;
        }
        let verify = matches!(self.tls, MysqlTls::VerifyCa | MysqlTls::VerifyIdentity);
        let mut o = mysql_async::SslOpts::default()
            .with_danger_accept_invalid_certs(!verify)
            .with_danger_skip_domain_validation(self.tls != MysqlTls::VerifyIdentity);
        if let Some(ca) = &self.tls_ca_file {
            // Only the given CA is trusted, as with the MySQL client's --ssl-ca.
            o = o
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            o = o.with_client_identity(Some(mysql_async::ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        Some(o)
    }
}

impl KafkaConfig {
    /// The librdkafka properties every client (producer, admin, consumer,
    /// `check`) gets after `bootstrap.servers`: the security keys mapped to
    /// their librdkafka names, then `kafka.properties` as given. Reads the
    /// SASL password file; the error names the key, never the password.
    pub fn client_properties(&self) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        let p = self.security_protocol;
        if p != SecurityProtocol::Plaintext {
            out.insert("security.protocol".into(), p.as_str().into());
        }
        if p.is_sasl() {
            if let Some(m) = self.sasl_mechanism {
                out.insert("sasl.mechanism".into(), m.as_str().into());
            }
            if let Some(u) = &self.sasl_username {
                out.insert("sasl.username".into(), u.clone());
            }
            let pw: Option<Secret> = resolve_secret(
                "kafka.sasl_password",
                &self.sasl_password,
                &self.sasl_password_file,
            )?;
            if let Some(pw) = pw {
                out.insert("sasl.password".into(), pw.expose().to_string());
            }
        }
        if p.is_ssl() {
            for (prop, path) in [
                ("ssl.ca.location", &self.ssl_ca_file),
                ("ssl.certificate.location", &self.ssl_cert_file),
                ("ssl.key.location", &self.ssl_key_file),
            ] {
                if let Some(path) = path {
                    out.insert(prop.into(), path.display().to_string());
                }
            }
        }
        for (k, v) in &self.properties {
            out.insert(k.clone(), v.clone());
        }
        Ok(out)
    }
}
