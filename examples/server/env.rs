//! The demo's settings from the environment: the router's config (`HEARTBEAT_MS`) and its
//! Redis backplane (`REDIS_URL`, and `REDIS_CA` for a `rediss://` server whose certificate a
//! private CA signed). A setting that cannot work is a startup error naming it.

#[cfg(feature = "redis")]
use std::sync::Arc;
use std::time::Duration;

use sse_hub::{Config, EventRouter};

/// The Redis backplane, to close on shutdown.
#[cfg(feature = "redis")]
pub type Backplane = Option<sse_hub::backplane::RedisBackplane>;
/// The Redis backplane, to close on shutdown: never, without the `redis` feature.
#[cfg(not(feature = "redis"))]
pub type Backplane = Option<std::convert::Infallible>;

/// The router: on its own, or, with `REDIS_URL` set, sharing its channels with every server on
/// that Redis (for a `rediss://` URL, over TLS, trusting the CAs in the file `REDIS_CA` if set,
/// or else the default roots).
pub async fn router_from_env() -> Result<(EventRouter, Backplane), String> {
    let ca = std::env::var_os("REDIS_CA").filter(|path| !path.is_empty());
    let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        // Ignoring it would start a lone server where one on a shared Redis was meant.
        if let Some(path) = ca {
            return Err(format!(
                "REDIS_CA is set ({path:?}), but REDIS_URL is not: REDIS_CA is the CA of a \
                 rediss:// REDIS_URL"
            ));
        }
        return Ok((EventRouter::new(config_from_env()?), None));
    };
    #[cfg(feature = "redis")]
    {
        use sse_hub::backplane::{RedisBackplane, RedisConfig};
        let mut settings = RedisConfig::new(url);
        if let Some(path) = ca {
            trust_redis_ca(&mut settings, &path)?;
        }
        let backplane =
            RedisBackplane::new(settings).map_err(|e| format!("cannot use REDIS_URL: {e}"))?;
        if backplane.wait_connected(Duration::from_secs(5)).await {
            tracing::info!("sharing events with every server on the same Redis (REDIS_URL)");
        } else {
            tracing::warn!(
                "Redis (REDIS_URL) is not reachable yet: serving, and connecting in the background"
            );
        }
        Ok((
            EventRouter::with_backplane(config_from_env()?, Arc::new(backplane.clone())),
            Some(backplane),
        ))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (url, ca);
        Err(
            "REDIS_URL is set, but this build has no Redis support: run it with --features redis"
                .to_owned(),
        )
    }
}

/// Trusts the CA certificates in the PEM file at `path` (`REDIS_CA`) instead of the default
/// roots. They are checked here rather than by `RedisBackplane::new`, so that the error names
/// `REDIS_CA` and its file rather than the library's setting.
#[cfg(feature = "redis-tls")]
fn trust_redis_ca(
    settings: &mut sse_hub::backplane::RedisConfig,
    path: &std::ffi::OsStr,
) -> Result<(), String> {
    use sse_hub::backplane::BackplaneError;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read REDIS_CA {path:?}: {e}"))?;
    settings.tls.root_certs = Some(pem);
    settings.validate().map_err(|error| match error {
        BackplaneError::InvalidConfig {
            setting: "tls.root_certs",
            problem,
        } => format!("REDIS_CA {path:?}: {problem} (it must hold PEM CA certificates)"),
        BackplaneError::InvalidConfig { setting: "tls", .. } => {
            "REDIS_CA is set, but REDIS_URL is not a rediss:// URL, which would not use it"
                .to_owned()
        }
        other => format!("cannot use REDIS_URL: {other}"),
    })
}

#[cfg(all(feature = "redis", not(feature = "redis-tls")))]
fn trust_redis_ca(
    _: &mut sse_hub::backplane::RedisConfig,
    path: &std::ffi::OsStr,
) -> Result<(), String> {
    Err(format!(
        "REDIS_CA is set ({path:?}), but this build has no TLS support: run it with --features \
         redis-tls"
    ))
}

/// The router's config: the defaults, with the heartbeat interval from `HEARTBEAT_MS` if set.
pub fn config_from_env() -> Result<Config, String> {
    let mut config = Config::default();
    if let Some(ms) = std::env::var("HEARTBEAT_MS").ok().filter(|v| !v.is_empty()) {
        let ms: u64 = ms.parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
            format!("HEARTBEAT_MS must be a positive number of milliseconds, got {ms:?}")
        })?;
        config.sse.heartbeat_interval = Duration::from_millis(ms);
    }
    Ok(config)
}
