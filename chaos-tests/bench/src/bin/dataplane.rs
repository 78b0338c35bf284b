//! `riptides-bench-dataplane`: the userspace dataplane against direct TCP and stunnel4 in the
//! same run (issue 11). `--quick` for CI, `--runs N`, `--out FILE`; see `--help`.

#[path = "../dataplane/mod.rs"]
mod dataplane;

fn main() -> anyhow::Result<()> {
    dataplane::main()
}
