//! The `mixplane` command.

fn main() -> anyhow::Result<()> {
    println!("mixplane {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
