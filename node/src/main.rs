fn main() -> anyhow::Result<()> {
    anyhow::bail!("riptides-daemon arrives with the daemon <-> control plane issue")
}
