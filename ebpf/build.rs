//! Compiles the C eBPF programs in `bpf/` with clang into `OUT_DIR`.
//!
//! The programs are C because Rust eBPF (aya-ebpf) needs a nightly toolchain
//! with rust-src; Debian's clang and libbpf headers are enough for C.
//!
//! `WEIR_SKIP_EBPF=1` writes empty stub objects instead, so `cargo check` and
//! `cargo clippy` work on machines without clang; loading a stub fails with
//! `LoadError::StubObject`. `WEIR_CLANG` overrides the compiler (default
//! `clang-19`).

use std::{
    env, fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Objects built from `bpf/<name>.bpf.c` into `OUT_DIR/<name>.bpf.o`.
const OBJECTS: &[&str] = &["flow", "floor"];
const DEFAULT_CLANG: &str = "clang-19";
const LIBBPF_HELPERS: &str = "/usr/include/bpf/bpf_helpers.h";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("cargo did not set OUT_DIR")?);
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").context("cargo did not set CARGO_MANIFEST_DIR")?,
    );
    let bpf_dir = manifest_dir.join("bpf");

    println!("cargo:rerun-if-env-changed=WEIR_SKIP_EBPF");
    println!("cargo:rerun-if-env-changed=WEIR_CLANG");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    for entry in fs::read_dir(&bpf_dir).with_context(|| format!("reading {}", bpf_dir.display()))? {
        println!("cargo:rerun-if-changed={}", entry?.path().display());
    }

    if env::var_os("WEIR_SKIP_EBPF").is_some_and(|v| v == "1") {
        for name in OBJECTS {
            let object = out_dir.join(format!("{name}.bpf.o"));
            fs::write(&object, []).with_context(|| format!("writing stub {}", object.display()))?;
        }
        return Ok(());
    }

    let clang = env::var("WEIR_CLANG").unwrap_or_else(|_| DEFAULT_CLANG.to_owned());
    check_toolchain(&clang)?;
    let (arch_define, multiarch) = target_arch()?;
    for name in OBJECTS {
        compile(
            &clang,
            arch_define,
            multiarch,
            &bpf_dir.join(format!("{name}.bpf.c")),
            &out_dir.join(format!("{name}.bpf.o")),
        )?;
    }
    Ok(())
}

fn check_toolchain(clang: &str) -> anyhow::Result<()> {
    const HINT: &str = "install the Debian packages clang-19 and libbpf-dev, or set \
                        WEIR_SKIP_EBPF=1 to build empty stub objects (they cannot be loaded)";
    match Command::new(clang).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => bail!("`{clang} --version` failed with {}: {HINT}", out.status),
        Err(e) if e.kind() == ErrorKind::NotFound => bail!("{clang} not found: {HINT}"),
        Err(e) => return Err(e).with_context(|| format!("running {clang}")),
    }
    if !Path::new(LIBBPF_HELPERS).exists() {
        bail!("{LIBBPF_HELPERS} not found: {HINT}");
    }
    Ok(())
}

/// The `__TARGET_ARCH_*` define libbpf's headers expect, and the Debian
/// multiarch include directory that holds `asm/types.h` for the host.
fn target_arch() -> anyhow::Result<(&'static str, &'static str)> {
    let arch =
        env::var("CARGO_CFG_TARGET_ARCH").context("cargo did not set CARGO_CFG_TARGET_ARCH")?;
    Ok(match arch.as_str() {
        "x86_64" => ("-D__TARGET_ARCH_x86", "/usr/include/x86_64-linux-gnu"),
        "aarch64" => ("-D__TARGET_ARCH_arm64", "/usr/include/aarch64-linux-gnu"),
        other => bail!("no eBPF build configuration for target arch {other}"),
    })
}

fn compile(
    clang: &str,
    arch_define: &str,
    multiarch: &str,
    source: &Path,
    object: &Path,
) -> anyhow::Result<()> {
    let output = Command::new(clang)
        .args([
            "-target",
            "bpfel",
            arch_define,
            "-g",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output()
        .with_context(|| format!("running {clang}"))?;
    if !output.status.success() {
        bail!(
            "{clang} failed on {} ({}):\n{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // clang warnings are errors (-Werror); anything else it says is worth seeing.
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("cargo:warning={line}");
    }
    Ok(())
}
