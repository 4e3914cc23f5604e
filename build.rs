//! Which external programs the integration tests can use on this machine.
//!
//! Tests that need `redis-server`, Chromium with ChromeDriver, Node.js or HAProxy start their own
//! processes. When a program is missing, the tests that need it are compiled as
//! `#[ignore = "..."]` through a `missing_*` cfg set here, so that the summary line counts them
//! as ignored instead of passing them silently. Under `CI=true` nothing is ignored: a missing
//! program is a failure there.

use std::path::{Path, PathBuf};

fn main() {
    println!(
        "cargo::rustc-check-cfg=cfg(missing_redis, missing_chromium, missing_node, missing_haproxy)"
    );
    for var in [
        "CI",
        "PATH",
        "REDIS_SERVER",
        "NODE",
        "CHROMIUM",
        "CHROMEDRIVER",
        "HAPROXY",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    let ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    let needs: [(&str, &[(&str, &str)]); 4] = [
        ("missing_redis", &[("REDIS_SERVER", "redis-server")]),
        (
            "missing_chromium",
            &[("CHROMIUM", "chromium"), ("CHROMEDRIVER", "chromedriver")],
        ),
        ("missing_node", &[("NODE", "node")]),
        ("missing_haproxy", &[("HAPROXY", "haproxy")]),
    ];
    for (cfg, programs) in needs {
        if !ci && programs.iter().any(|(var, name)| find(var, name).is_none()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// The program `name`: the path in `var` if set, else in `/usr/bin` or `/usr/sbin` (where
/// Debian puts `haproxy`, often not on a user's `PATH`), else on the `PATH`.
fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let debian = ["/usr/bin", "/usr/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file());
    if debian.is_some() {
        return debian;
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
