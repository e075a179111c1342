//! `cargo xtask test`: the README's test command. It installs what the tests need and runs
//! the whole suite.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Arguments of `test`.
#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// The target folder: `CARGO_TARGET_DIR` or `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// What the tests need from PyPI; `duckdb-ext-delta` is pinned to its DuckDB version.
const TEST_PACKAGES: &[&str] = &[
    "deltalake>=1.0",
    "pyarrow",
    "moto[server]>=5",
    "duckdb==1.4.4",
    "duckdb-ext-delta==1.4.4.20260205",
];

/// A Python venv with the `deltalake` package (the independent Delta reader of the tests) and
/// moto (its server is the S3-compatible store the tests start on loopback: it honors the
/// conditional puts Delta commits need, which s3s-fs does not under races), and DuckDB with
/// its delta extension from PyPI (DuckDB would otherwise download it at `INSTALL delta`).
pub(crate) fn python_with_deltalake() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("errlake-py");
    let python = venv.join("bin/python");
    let has = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", "import deltalake, pyarrow, moto, duckdb"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has(&python) {
        return Ok(python);
    }
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!(
        "xtask test: creating {} with the deltalake, moto and duckdb packages",
        venv.display()
    );
    let status = Command::new(&base)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .with_context(|| format!("running {base} -m venv"))?;
    if !status.success() {
        bail!("{base} -m venv failed");
    }
    if !pip_install(&python, TEST_PACKAGES)? || !has(&python) {
        bail!("installing the deltalake, moto and duckdb Python packages failed");
    }
    Ok(python)
}

/// Installs `packages` with `python`'s pip; whether it succeeded.
pub(crate) fn pip_install(python: &std::path::Path, packages: &[&str]) -> anyhow::Result<bool> {
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
        ])
        .args(packages)
        .status()
        .context("running pip")?;
    Ok(status.success())
}

pub(crate) fn test(args: TestArgs) -> anyhow::Result<()> {
    let python = python_with_deltalake()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // `cargo run` gave this process the xtask package's variables; build scripts that watch
    // them (ring's watches CARGO_MANIFEST_DIR) would rebuild, and everything above them,
    // each time the suite and a plain `cargo test` take turns.
    let cargo_command = || {
        let mut command = Command::new(&cargo);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || matches!(
                    name.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                )
            {
                command.env_remove(name.as_ref());
            }
        }
        command.current_dir(crate::workspace_root());
        command
    };
    // The release profile, like the runner: the heavy dependencies are compiled once.
    let status = cargo_command()
        .args(["test", "--release", "--workspace"])
        .args(&args.cargo_args)
        .env("ERRLAKE_TEST_PYTHON", &python)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("tests failed");
    }
    // Each library crate's `examples/` program, run as the test it holds (a plain
    // `cargo test` only builds examples). Left out when the caller picked tests.
    if args.cargo_args.is_empty() {
        let status = cargo_command()
            .args(["test", "--release", "--workspace", "--examples"])
            .status()
            .context("running the examples")?;
        if !status.success() {
            bail!("an example failed");
        }
        // The paginators without the network loop: no HTTP client, no Tokio.
        let status = cargo_command()
            .args([
                "test",
                "--release",
                "-p",
                "paginate",
                "--no-default-features",
                "--lib",
                "--examples",
            ])
            .status()
            .context("testing paginate without its fetch feature")?;
        if !status.success() {
            bail!("paginate failed without its fetch feature");
        }
    }
    Ok(())
}
