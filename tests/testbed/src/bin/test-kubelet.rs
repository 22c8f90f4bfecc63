//! `test-kubelet`: the test bed's kubelet as a standalone command, for running pods as local
//! processes against any API server (the harness runs the same code in-process).

use std::path::PathBuf;

use causeway_testbed::kubelet::container::ImageMap;
use causeway_testbed::kubelet::node::NodeSpec;
use causeway_testbed::kubelet::{self, Journal, KubeletConfig};
use causeway_testbed::{Error, Result};
use clap::Parser;

/// Registers nodes and runs the pods bound to them as local processes on loopback addresses.
#[derive(Debug, Parser)]
#[command(name = "test-kubelet", version)]
struct Args {
    /// The kubeconfig to reach the API server with (needs rights to bind pods, write pod
    /// status, register nodes and request service-account tokens).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// A node to register, as NAME=REGION/ZONE@ADDRESS with a loopback ADDRESS (127.X.Y.1);
    /// repeat for more nodes.
    #[arg(long = "node", value_parser = NodeSpec::parse, default_value = "test-node=local/local-a@127.64.1.1")]
    nodes: Vec<NodeSpec>,
    /// The binary that images whose name contains "causeway" run.
    #[arg(long, env = "CAUSEWAY_BIN", default_value_os_t = default_causeway_bin())]
    causeway_bin: PathBuf,
    /// Where pod dirs (kubeconfig, logs) are made.
    #[arg(long, default_value_os_t = std::env::temp_dir().join(format!("causeway-test-kubelet-{}", std::process::id())))]
    dir: PathBuf,
}

fn default_causeway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/causeway")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("test-kubelet: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.dir).map_err(|source| Error::Io {
        what: format!("creating {}", args.dir.display()),
        source,
    })?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let ca_cert = args.dir.join("ca.crt");
    let pem: String = config
        .root_cert
        .iter()
        .flatten()
        .map(|der| pem_block(der))
        .collect();
    std::fs::write(&ca_cert, pem).map_err(|source| Error::Io {
        what: format!("writing {}", ca_cert.display()),
        source,
    })?;
    let client = kube::Client::try_from(config)?;
    let journal = Journal::open(&args.dir.join("test-kubelet.log"), true)?;
    kubelet::register_nodes(&client, &args.nodes, &journal).await?;
    let config = KubeletConfig {
        nodes: args.nodes,
        images: ImageMap::new(args.causeway_bin),
        dir: args.dir,
        server,
        ca_cert,
        journal,
    };
    tokio::select! {
        result = kubelet::run(client, config) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// A DER certificate as a PEM block.
fn pem_block(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in der.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
