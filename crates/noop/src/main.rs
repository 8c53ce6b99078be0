//! `prewarm-noop`: the process every pull container runs.
//!
//! Target images may have no shell and no binaries at all, so the pull pod's
//! init container (the helper image) runs `prewarm-noop --install /prewarm/noop`
//! to copy this statically linked binary into a shared `emptyDir`; each image
//! container then runs `/prewarm/noop`, which exits 0 at once. Build it static
//! with `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p prewarm-noop`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => ExitCode::SUCCESS,
        [flag, dest] if flag == "--install" => match install(dest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("prewarm-noop: installing to {dest}: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: prewarm-noop [--install DEST]");
            ExitCode::from(2)
        }
    }
}

/// Copies the running executable to `dest` and makes it executable.
fn install(dest: &str) -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    std::fs::copy(me, dest)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
