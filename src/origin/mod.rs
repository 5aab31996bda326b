//! Built-in back end (`shardtls backend`): echo, sink and fixed HTTP response,
//! plain or TLS, for tests, demos and benchmarks.

/// Arguments of `shardtls backend`.
#[derive(clap::Args, Debug)]
pub struct OriginArgs {
    /// Address to listen on, e.g. 127.0.0.1:9000.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
}

pub fn main(_args: OriginArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("backend is not built yet".into())
}
