//! Where the database is and how to reach it: the environment of world-postgres 4.3.7
//! (`WORKFLOW_POSTGRES_URL`, `WORKFLOW_POSTGRES_MAX_POOL_SIZE`, `WORKFLOW_POSTGRES_JOB_PREFIX`),
//! the connection pool, TLS through rustls (ring) and the time limits that keep a wrong
//! URL from hanging anything.

use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;

/// world-postgres's default connection string.
pub const DEFAULT_URL: &str = "postgres://world:world@localhost:5432/world";
/// node-postgres's default pool size (world-postgres keeps it).
pub const DEFAULT_POOL_SIZE: usize = 10;
/// How long one connection attempt may take (a wrong host fails within it).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the World needs to connect.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub url: String,
    pub max_pool_size: usize,
    /// graphile-worker task prefix of an official app (`workflow_` by default)
    pub job_prefix: String,
}

impl PgConfig {
    /// From the environment, as world-postgres reads it.
    pub fn from_env() -> Result<PgConfig> {
        let url = std::env::var("WORKFLOW_POSTGRES_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let max_pool_size = match std::env::var("WORKFLOW_POSTGRES_MAX_POOL_SIZE") {
            Ok(s) if !s.is_empty() => s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "WORKFLOW_POSTGRES_MAX_POOL_SIZE must be a positive integer, got \"{s}\""
                    ))
                })?,
            _ => DEFAULT_POOL_SIZE,
        };
        let job_prefix = std::env::var("WORKFLOW_POSTGRES_JOB_PREFIX")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "workflow_".to_string());
        Ok(PgConfig {
            url,
            max_pool_size,
            job_prefix,
        })
    }

    pub fn new(url: &str) -> PgConfig {
        PgConfig {
            url: url.to_string(),
            max_pool_size: DEFAULT_POOL_SIZE,
            job_prefix: "workflow_".to_string(),
        }
    }
}

/// The URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}[redacted]{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// How the URL asks for TLS: its `sslmode` (`None` when it names none), and whether the
/// server certificate must be verified (libpq's `verify-ca`/`verify-full`, which
/// tokio-postgres does not know: they become `require` plus verification here).
struct SslAsked {
    url: String,
    mode: Option<SslMode>,
    verify: bool,
}

fn split_ssl(url: &str) -> SslAsked {
    // a key=value connection string (not a URL) is taken as it is
    if !url.contains("://") {
        let mode = url
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("sslmode="))
            .map(|m| mode_of(m).0);
        return SslAsked {
            url: url.to_string(),
            mode,
            verify: false,
        };
    }
    let Some(q) = url.find('?') else {
        return SslAsked {
            url: url.to_string(),
            mode: None,
            verify: false,
        };
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let mut mode = None;
    let mut verify = false;
    let params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| match p.split_once('=') {
            Some(("sslmode", m)) => {
                let (known, v) = mode_of(m);
                mode = Some(known);
                verify = v;
                Some(match (m, known) {
                    ("verify-ca" | "verify-full" | "no-verify", _) => "sslmode=require".to_string(),
                    // the others as written (an unknown one is named by the parser's error)
                    _ => p.to_string(),
                })
            }
            // libpq file options tokio-postgres does not take (the platform's roots are used)
            Some(("sslrootcert" | "sslcert" | "sslkey", _)) => None,
            _ => Some(p.to_string()),
        })
        .collect();
    let url = if params.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", params.join("&"))
    };
    SslAsked { url, mode, verify }
}

/// A libpq `sslmode` (or node-postgres's `no-verify`): the mode tokio-postgres gets and
/// whether the certificate is verified. An unknown value stays in the URL, for
/// tokio-postgres's parser to name in its error.
fn mode_of(m: &str) -> (SslMode, bool) {
    match m {
        "disable" => (SslMode::Disable, false),
        "require" | "no-verify" => (SslMode::Require, false),
        "verify-ca" | "verify-full" => (SslMode::Require, true),
        _ => (SslMode::Prefer, false),
    }
}

/// TLS when the URL names no `sslmode`: as node-postgres (world-postgres's driver) decides
/// it — by `PGSSLMODE`, else none (libpq would try TLS first; node-postgres does not).
fn default_ssl(pgsslmode: Option<&str>) -> (SslMode, bool) {
    match pgsslmode {
        Some("prefer" | "require" | "verify-ca" | "verify-full") => {
            // node-postgres turns TLS on and verifies the certificate for all four
            (SslMode::Require, true)
        }
        Some("no-verify") => (SslMode::Require, false),
        _ => (SslMode::Disable, false),
    }
}

/// A parsed connection config with UTC sessions and the connect timeout.
pub(crate) fn pg_config(url: &str) -> Result<(tokio_postgres::Config, bool)> {
    pg_config_with(url, std::env::var("PGSSLMODE").ok().as_deref())
}

fn pg_config_with(url: &str, pgsslmode: Option<&str>) -> Result<(tokio_postgres::Config, bool)> {
    let asked = split_ssl(url);
    let url = asked.url;
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::InvalidArgument(format!(
            "Invalid WORKFLOW_POSTGRES_URL \"{}\": {e}",
            redact(&url)
        ))
    })?;
    let verify = match asked.mode {
        Some(_) => asked.verify,
        None => {
            let (mode, verify) = default_ssl(pgsslmode);
            cfg.ssl_mode(mode);
            verify
        }
    };
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    // world-postgres stores UTC in `timestamp without time zone`; `now()` defaults must agree
    let opts = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c TimeZone=UTC"),
        _ => "-c TimeZone=UTC".to_string(),
    };
    cfg.options(&opts);
    if cfg.get_application_name().is_none() {
        cfg.application_name("workflow-native");
    }
    Ok((cfg, verify))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// libpq's `sslmode=require`: encrypted, the certificate not checked.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn tls(verify: bool) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let p = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&p))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Plain(format!("TLS setup failed: {e}")))?;
    let config = if verify {
        let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&p))
            .map_err(|e| Error::Plain(format!("TLS setup failed: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(p)))
            .with_no_client_auth()
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The pool. Callers wait for a free connection (no error storm when it is exhausted);
/// creating a connection is bounded by the connect timeout.
pub(crate) fn pool(config: &PgConfig) -> Result<(Pool, tokio_postgres::Config, bool)> {
    let (cfg, verify) = pg_config(&config.url)?;
    let mgr_cfg = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mgr = if cfg.get_ssl_mode() == SslMode::Disable {
        Manager::from_config(cfg.clone(), tokio_postgres::NoTls, mgr_cfg)
    } else {
        Manager::from_config(cfg.clone(), tls(verify)?, mgr_cfg)
    };
    let pool = Pool::builder(mgr)
        .max_size(config.max_pool_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| Error::Plain(format!("Could not create the PostgreSQL pool: {e}")))?;
    Ok((pool, cfg, verify))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_become_require_plus_verification() {
        let a = split_ssl("postgres://a@h/db?sslmode=verify-full&sslrootcert=/x&x=1");
        assert_eq!(a.url, "postgres://a@h/db?sslmode=require&x=1");
        assert_eq!(a.mode, Some(SslMode::Require));
        assert!(a.verify);
        let a = split_ssl("postgres://a@h/db?sslmode=require");
        assert_eq!(a.url, "postgres://a@h/db?sslmode=require");
        assert!(!a.verify);
    }

    fn ssl_of(url: &str, env: Option<&str>) -> (SslMode, bool) {
        let (cfg, verify) = pg_config_with(url, env).unwrap();
        (cfg.get_ssl_mode(), verify)
    }

    #[test]
    fn tls_is_what_node_postgres_would_use() {
        // no sslmode and no PGSSLMODE: no TLS (node-postgres's default; libpq's would be prefer)
        assert_eq!(ssl_of("postgres://a@h/db", None), (SslMode::Disable, false));
        assert_eq!(
            ssl_of("postgres://a@h/db?application_name=x", None),
            (SslMode::Disable, false)
        );
        // the URL's sslmode wins over PGSSLMODE
        assert_eq!(
            ssl_of("postgres://a@h/db?sslmode=prefer", Some("disable")),
            (SslMode::Prefer, false)
        );
        assert_eq!(
            ssl_of("postgres://a@h/db?sslmode=disable", Some("require")),
            (SslMode::Disable, false)
        );
        assert_eq!(
            ssl_of("postgres://a@h/db?sslmode=verify-ca", None),
            (SslMode::Require, true)
        );
        // PGSSLMODE as node-postgres reads it
        assert_eq!(
            ssl_of("postgres://a@h/db", Some("require")),
            (SslMode::Require, true)
        );
        assert_eq!(
            ssl_of("postgres://a@h/db", Some("no-verify")),
            (SslMode::Require, false)
        );
        assert_eq!(
            ssl_of("postgres://a@h/db", Some("disable")),
            (SslMode::Disable, false)
        );
        assert_eq!(
            ssl_of("postgres://a@h/db", Some("bogus")),
            (SslMode::Disable, false)
        );
        // a key=value string
        assert_eq!(
            ssl_of("host=h dbname=db sslmode=require", None),
            (SslMode::Require, false)
        );
        assert_eq!(ssl_of("host=h dbname=db", None), (SslMode::Disable, false));
    }

    #[test]
    fn an_unknown_sslmode_is_a_typed_error() {
        let e = pg_config_with("postgres://a@h/db?sslmode=bogus", None).unwrap_err();
        assert_eq!(e.name(), "TypeError");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@host:5432/db"),
            "postgres://[redacted]@host:5432/db"
        );
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        let e = pg_config("postgres://h:notaport/db").unwrap_err();
        assert_eq!(e.name(), "TypeError");
        assert!(e.to_string().contains("WORKFLOW_POSTGRES_URL"));
    }
}
