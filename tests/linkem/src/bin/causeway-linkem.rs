//! `causeway-linkem`: builds a lab of namespaces joined by emulated WAN links, prints it as one
//! JSON line, applies link changes read from stdin, and cleans up on SIGTERM, SIGINT or EOF.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use causeway_linkem::spec::{LinkSpec, apply_impairment_spec};
use causeway_linkem::{Impairment, NetLab};
use clap::Parser;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Userspace WAN link emulator: a chain of network namespaces on 127.0.0.0/8 addresses.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Namespaces of the chain, in order (repeat or comma-separate): `--ns client,front,back`.
    #[arg(long = "ns", value_delimiter = ',', required = true)]
    namespaces: Vec<String>,

    /// Link impairment: `a:b=SPEC` (both directions) or `a>b=SPEC` (one direction), where SPEC
    /// is `delay=20ms,jitter=1ms,loss=1%,rate=20mbit,queue=150kb`; later flags override.
    #[arg(long = "link")]
    links: Vec<LinkSpec>,

    /// Seed of the loss and jitter RNGs (default: random).
    #[arg(long)]
    seed: Option<u64>,

    /// Ignore stdin: run until SIGTERM or SIGINT only.
    #[arg(long)]
    no_stdin: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("causeway-linkem: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // If whoever started us dies without closing our stdin, we still clean up.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("set the parent-death signal")?;
    let mut builder = NetLab::builder();
    for ns in &args.namespaces {
        builder = builder.namespace(ns.clone());
    }
    let mut settings: BTreeMap<(String, String), Impairment> = BTreeMap::new();
    for spec in &args.links {
        for (from, to) in directions(spec) {
            let current = settings
                .get(&(from.clone(), to.clone()))
                .copied()
                .unwrap_or_default();
            let next = apply_impairment_spec(current, &spec.changes)?;
            settings.insert((from, to), next);
        }
    }
    for ((from, to), impairment) in &settings {
        builder = builder.direction(from, to, *impairment);
    }
    if let Some(seed) = args.seed {
        builder = builder.seed(seed);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    // Catch signals before the namespaces exist, so none can kill us before we clean up.
    let signals = {
        let _runtime = runtime.enter();
        Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        }
    };
    let lab = builder.build().context("build the lab")?;
    print_line(&lab.describe())?;
    let result = runtime.block_on(serve(&lab, signals, !args.no_stdin));
    drop(lab);
    result
}

/// The signals that end the lab.
struct Signals {
    term: Signal,
    int: Signal,
}

/// Waits for a signal or stdin EOF, answering each stdin line with one JSON line.
async fn serve(lab: &NetLab, signals: Signals, read_stdin: bool) -> anyhow::Result<()> {
    let Signals { mut term, mut int } = signals;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            line = lines.next_line(), if read_stdin => match line? {
                None => return Ok(()),
                Some(line) if line.trim().is_empty() => {}
                Some(line) => print_line(&command(lab, line.trim()))?,
            },
        }
    }
}

/// Runs one stdin command: `stats`, or a link spec changing impairments at runtime.
fn command(lab: &NetLab, line: &str) -> serde_json::Value {
    if line == "stats" {
        let stats: Vec<_> = lab
            .describe()
            .links
            .iter()
            .filter_map(|d| {
                let s = lab.stats(&d.from, &d.to).ok()?;
                Some(json!({ "from": d.from, "to": d.to, "stats": s }))
            })
            .collect();
        return json!({ "ok": true, "stats": stats });
    }
    let result = line.parse::<LinkSpec>().and_then(|spec| {
        for (from, to) in directions(&spec) {
            let next = apply_impairment_spec(lab.impairment(&from, &to)?, &spec.changes)?;
            lab.set_impairment(&from, &to, next)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => json!({ "ok": true, "links": lab.describe().links }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

fn directions(spec: &LinkSpec) -> Vec<(String, String)> {
    let l = &spec.link;
    let mut out = vec![(l.from.clone(), l.to.clone())];
    if l.both_directions {
        out.push((l.to.clone(), l.from.clone()));
    }
    out
}

fn print_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
