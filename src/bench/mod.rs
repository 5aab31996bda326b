//! Load generator and benchmark CLI (`shardtls bench`).

/// Arguments of `shardtls bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenario: handshake, resume, bulk, latency, idle, rotate.
    pub scenario: String,
}

pub fn main(_args: BenchArgs) -> anyhow_like::Result {
    Err("bench is not built yet".into())
}

mod anyhow_like {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
