//! Records what `/api/v1/build-information` reports about this build: the rustc version and
//! channel, the target and profile, and the git commit when the source is a git checkout.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // "rustc 1.90.0 (1159e78c4 2025-09-14)" or "rustc 1.92.0-nightly (...)"
    let version = run(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let channel = ["nightly", "beta", "dev"]
        .into_iter()
        .find(|c| version.contains(c))
        .unwrap_or("stable");
    let git = |args: &[&str]| run("git", args).unwrap_or_else(|| "unknown".into());
    let vars = [
        ("MIXPLANE_RUSTC_VERSION", version.clone()),
        ("MIXPLANE_RUSTC_CHANNEL", channel.to_string()),
        (
            "MIXPLANE_TARGET",
            std::env::var("TARGET").unwrap_or_default(),
        ),
        (
            "MIXPLANE_PROFILE",
            std::env::var("PROFILE").unwrap_or_default(),
        ),
        ("MIXPLANE_GIT_COMMIT", git(&["rev-parse", "HEAD"])),
        (
            "MIXPLANE_GIT_COMMIT_TIME",
            git(&["log", "-1", "--format=%cI"]),
        ),
        (
            "MIXPLANE_GIT_BRANCH",
            git(&["rev-parse", "--abbrev-ref", "HEAD"]),
        ),
    ];
    for (k, v) in vars {
        println!("cargo:rustc-env={k}={v}");
    }
    // rebuilt when the crate or the checked-out commit changes
    for p in ["src", "build.rs", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={p}");
    }
    let git_paths = run("git", &["rev-parse", "--symbolic-full-name", "HEAD"])
        .into_iter()
        .chain(["HEAD".to_string()])
        .filter_map(|r| {
            run(
                "git",
                &["rev-parse", "--path-format=absolute", "--git-path", &r],
            )
        })
        .filter(|p| std::path::Path::new(p).exists());
    for p in git_paths {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=RUSTC");
}
