//! `riptides-bench-controlplane`: see `src/controlplane/mod.rs`.

#[path = "../controlplane/mod.rs"]
mod controlplane;

fn main() -> std::process::ExitCode {
    controlplane::main()
}
