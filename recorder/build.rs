//! Compiles the kernel fast path's eBPF program (`bpf/fastpath.bpf.c`) with
//! clang, for `runtime::fastpath` to embed. Without clang (or the libbpf
//! headers) the recorder still builds: it then has no fast path, says so at
//! start, and refuses `kernelFastPath: Required`. `scripts/test-deps.sh`
//! installs both, and a test checks that the object was built.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/fastpath.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=EARSHOT_CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("fastpath.bpf.o");
    let clang = std::env::var("EARSHOT_CLANG").unwrap_or_else(|_| "clang".into());
    // Debian keeps asm/ under the multiarch directory.
    let multiarch = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let built = Command::new(&clang)
        .args([
            "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", &multiarch, "-c", src, "-o",
        ])
        .arg(&out)
        .status();
    match built {
        Ok(s) if s.success() => println!("cargo:rustc-cfg=fastpath_built"),
        Ok(s) => {
            println!(
                "cargo:warning=the eBPF fast path did not compile ({s}): this build relays in userspace only"
            );
            std::fs::write(&out, []).expect("write empty object");
        }
        Err(e) => {
            println!("cargo:warning=no clang ({e}): this build relays in userspace only");
            std::fs::write(&out, []).expect("write empty object");
        }
    }
    println!("cargo:rustc-check-cfg=cfg(fastpath_built)");
}
