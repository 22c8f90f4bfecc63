//! `causeway link-certs`: a CA and link certificates on disk, for running the tiers by hand.

/// Writes a fresh CA and a certificate for each tier into `out`.
pub fn write_link_certs(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let authority = causeway_pki::LinkAuthority::generate("causeway link CA")?;
    let write = |name: &str, text: &str, mode: u32| -> Result<(), String> {
        let path = out.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("ca.pem", &authority.ca_pem(), 0o644)?;
    for (role, name) in [
        ("backend", causeway_link::settings::DEFAULT_SERVER_NAME),
        ("frontend", "causeway-frontend"),
    ] {
        let issued = authority.issue_pem(&[name])?;
        write(&format!("{role}.pem"), &issued.cert, 0o644)?;
        write(&format!("{role}.key"), &issued.key, 0o600)?;
    }
    println!(
        "wrote ca.pem, backend.pem/.key, frontend.pem/.key to {}",
        out.display()
    );
    Ok(())
}
