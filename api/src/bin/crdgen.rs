//! Prints Causeway's CRDs as YAML, or with `--write` rewrites the checked-in copies under
//! `crds/` and `charts/causeway/crds/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [--write [--root DIR]]\n\
    \n\
    Without arguments, prints every CRD as a multi-document YAML stream.\n\
    --write      rewrites crds/*.yaml and charts/causeway/crds/*.yaml\n\
    --root DIR   the workspace root to write under (default: this checkout)";

fn main() -> ExitCode {
    let mut write = false;
    let mut root = workspace_root();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--write" => write = true,
            "--root" => match args.next() {
                Some(dir) => root = PathBuf::from(dir),
                None => return usage_error("--root needs a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    if write {
        match causeway_api::crd::write_all(&root) {
            Ok(paths) => {
                for path in paths {
                    eprintln!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("crdgen: {err}");
                ExitCode::FAILURE
            }
        }
    } else {
        match causeway_api::crd::render() {
            Ok(rendered) => {
                let documents: Vec<&str> = rendered.iter().map(|crd| crd.yaml.as_str()).collect();
                print!("{}", documents.join("---\n"));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("crdgen: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

/// The checkout this binary was built from: the parent of the `api/` crate.
fn workspace_root() -> PathBuf {
    let api = Path::new(env!("CARGO_MANIFEST_DIR"));
    api.parent().unwrap_or(api).to_path_buf()
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("crdgen: {message}\n{USAGE}");
    ExitCode::from(2)
}
