//! TLS to Redis (`rediss://`, `valkeys://`): the certificates a
//! [`RedisConfig`](super::RedisConfig) may carry ([`RedisTls`], cargo feature `redis-tls`), their
//! checks, and the redis client built from them.
//!
//! The TLS itself is the redis crate's (rustls, with the `ring` provider); this file only checks
//! what it will be given, so that a mistake is a typed error from
//! [`RedisConfig::validate`](super::RedisConfig::validate) rather than a connection that fails
//! again and again in the background. Without the feature, a TLS URL is refused here, naming the
//! feature: the redis crate's own error speaks of a feature of the redis crate.

#[cfg(not(feature = "redis-tls"))]
use redis::Client;

use crate::error::BackplaneError;

/// Whether `url` asks for TLS: its scheme is `rediss` or `valkeys` (in any case, as URL schemes
/// are case-insensitive).
pub(crate) fn is_tls_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
    })
}

fn invalid(setting: &'static str, problem: &'static str) -> BackplaneError {
    BackplaneError::InvalidConfig { setting, problem }
}

/// The redis crate's refusal of a URL or of certificates, which [`check`] did not foresee.
fn failed(error: redis::RedisError) -> BackplaneError {
    BackplaneError::Failed(error.to_string())
}

/// Without the `redis-tls` feature: refuses a TLS URL, naming the feature. Compiled (and
/// tested) with the feature too, where nothing calls it.
#[cfg_attr(feature = "redis-tls", allow(dead_code))]
fn refuse_tls(url: &str) -> Result<(), BackplaneError> {
    if is_tls_url(url) {
        return Err(invalid(
            "url",
            "a TLS URL (rediss://) needs sse-hub's `redis-tls` cargo feature",
        ));
    }
    Ok(())
}

#[cfg(not(feature = "redis-tls"))]
pub(crate) fn check(url: &str) -> Result<(), BackplaneError> {
    refuse_tls(url)
}

#[cfg(not(feature = "redis-tls"))]
pub(crate) fn client(url: &str) -> Result<Client, BackplaneError> {
    Client::open(url).map_err(failed)
}

#[cfg(feature = "redis-tls")]
pub use self::with_tls::RedisTls;
#[cfg(feature = "redis-tls")]
pub(crate) use self::with_tls::{check, client};

#[cfg(feature = "redis-tls")]
mod with_tls {
    use std::sync::Arc;

    use redis::{Client, ClientTlsConfig, TlsCertificates};
    use rustls::RootCertStore;
    use rustls::crypto::{CryptoProvider, ring};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::{failed, invalid, is_tls_url};
    use crate::error::BackplaneError;

    /// The certificates of a TLS connection to Redis ([`RedisConfig::tls`](super::super::RedisConfig::tls)),
    /// all PEM. By default none: the server's certificate must chain to the platform's trusted
    /// roots (with the `redis-tls-webpki-roots` feature: to the Mozilla roots compiled in) and
    /// name the URL's host, and the node shows no certificate of its own.
    ///
    /// Only for a `rediss://` URL: [`RedisConfig::validate`](super::super::RedisConfig::validate)
    /// refuses certificates given with a `redis://` one, which would not use them.
    #[derive(Clone, Default, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct RedisTls {
        /// The certificate authorities to trust *instead of* the default roots: one or more
        /// PEM certificates (`-----BEGIN CERTIFICATE-----`), as for a private CA or a managed
        /// service's own.
        pub root_certs: Option<Vec<u8>>,
        /// For mutual TLS: the node's certificate chain, PEM, its own certificate first. Needs
        /// [`client_key`](Self::client_key).
        pub client_cert: Option<Vec<u8>>,
        /// For mutual TLS: the private key of [`client_cert`](Self::client_cert), PEM (PKCS#8,
        /// PKCS#1 or SEC1).
        pub client_key: Option<Vec<u8>>,
    }

    impl std::fmt::Debug for RedisTls {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // The key is a secret, and a config is easily logged.
            let given = |pem: &Option<Vec<u8>>| pem.as_ref().map(|_| "<PEM>");
            f.debug_struct("RedisTls")
                .field("root_certs", &given(&self.root_certs))
                .field("client_cert", &given(&self.client_cert))
                .field("client_key", &given(&self.client_key))
                .finish()
        }
    }

    impl RedisTls {
        fn is_empty(&self) -> bool {
            self.root_certs.is_none() && self.client_cert.is_none() && self.client_key.is_none()
        }
    }

    /// The PEM certificates in `pem`, at least one.
    fn certificates(
        setting: &'static str,
        pem: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, BackplaneError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid(setting, "not valid PEM"))?;
        if certificates.is_empty() {
            return Err(invalid(setting, "holds no PEM certificate"));
        }
        Ok(certificates)
    }

    /// Checks the URL's form and the certificates as the redis crate will read them, and that a
    /// client key matches its certificate (which rustls would otherwise only find at each
    /// connection attempt).
    pub(crate) fn check(url: &str, tls: &RedisTls) -> Result<(), BackplaneError> {
        if !is_tls_url(url) {
            if tls.is_empty() {
                return Ok(());
            }
            return Err(invalid(
                "tls",
                "certificates given for a URL that is not rediss://: they would not be used",
            ));
        }
        if url.contains('#') {
            return Err(invalid(
                "url",
                "has a #fragment: #insecure (no certificate check) is not supported; trust the server's CA with tls.root_certs",
            ));
        }
        let mut roots = RootCertStore::empty();
        if let Some(pem) = &tls.root_certs {
            for certificate in certificates("tls.root_certs", pem)? {
                roots.add(certificate).map_err(|_| {
                    invalid(
                        "tls.root_certs",
                        "holds a certificate that is not a valid CA",
                    )
                })?;
            }
        }
        match (&tls.client_cert, &tls.client_key) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(invalid(
                "tls.client_key",
                "missing: tls.client_cert needs it",
            )),
            (None, Some(_)) => Err(invalid(
                "tls.client_cert",
                "missing: tls.client_key needs it",
            )),
            (Some(cert), Some(key)) => {
                let chain = certificates("tls.client_cert", cert)?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
                    invalid(
                        "tls.client_key",
                        "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    )
                })?;
                rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|_| invalid("tls", "no TLS version available"))?
                    .with_root_certificates(roots)
                    .with_client_auth_cert(chain, key)
                    .map(|_| ())
                    .map_err(|_| {
                        invalid(
                            "tls.client_key",
                            "does not match tls.client_cert, or is of a type rustls cannot sign with",
                        )
                    })
            }
        }
    }

    /// The redis client for `url`, with `tls`'s certificates for a TLS URL ([`check`]ed
    /// before).
    pub(crate) fn client(url: &str, tls: &RedisTls) -> Result<Client, BackplaneError> {
        if !is_tls_url(url) {
            return Client::open(url).map_err(failed);
        }
        // The redis crate builds its rustls configs with the process's default provider, and
        // rustls panics where there is none and its features do not name exactly one (an
        // application whose other crates turn on aws-lc-rs as well, say). An application that
        // chose one keeps it.
        if CryptoProvider::get_default().is_none() {
            // An error means another thread installed one meanwhile: as good.
            let _ = ring::default_provider().install_default();
        }
        if tls.is_empty() {
            return Client::open(url).map_err(failed);
        }
        let client_tls = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            _ => None,
        };
        Client::build_with_tls(
            url,
            TlsCertificates {
                client_tls,
                root_cert: tls.root_certs.clone(),
            },
        )
        .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_schemes_are_recognised_in_any_case() {
        for url in ["rediss://h:1", "REDISS://h", "valkeys://h", "Valkeys://h/0"] {
            assert!(is_tls_url(url), "{url}");
        }
        for url in [
            "redis://h",
            "redis+unix:///tmp/s",
            "unix:///tmp/s",
            "rediss",
            "h:6379",
        ] {
            assert!(!is_tls_url(url), "{url}");
        }
    }

    #[test]
    fn without_the_feature_a_tls_url_is_refused_naming_the_feature() {
        let Err(BackplaneError::InvalidConfig { setting, problem }) = refuse_tls("rediss://h:6380")
        else {
            panic!("a rediss:// URL was accepted without the redis-tls feature");
        };
        assert_eq!(setting, "url");
        assert!(problem.contains("`redis-tls`"), "{problem}");
        assert_eq!(refuse_tls("redis://h:6379"), Ok(()));
    }
}
