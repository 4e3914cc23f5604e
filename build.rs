//! Which external programs the integration tests can use on this machine.
//!
//! Tests that need `redis-server`, Chromium with ChromeDriver, or Node.js start their own
//! processes. When a program is missing, the tests that need it are compiled as
//! `#[ignore = "..."]` through a `missing_*` cfg set here, so that the summary line counts them
//! as ignored instead of passing them silently. Under `CI=true` nothing is ignored: a missing
//! program is a failure there.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(missing_redis, missing_chromium, missing_node)");
    for var in ["CI", "PATH", "CHROMIUM", "CHROMEDRIVER"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    let ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    let needs: [(&str, &[(&str, &str)]); 3] = [
        ("missing_redis", &[("REDIS_SERVER", "redis-server")]),
        (
            "missing_chromium",
            &[("CHROMIUM", "chromium"), ("CHROMEDRIVER", "chromedriver")],
        ),
        ("missing_node", &[("NODE", "node")]),
    ];
    for (cfg, programs) in needs {
        if !ci && programs.iter().any(|(var, name)| find(var, name).is_none()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// The program `name`: the path in `var` if set, else in `/usr/bin` or on the `PATH`.
fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let debian = Path::new("/usr/bin").join(name);
    if debian.is_file() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
