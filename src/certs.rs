//! `concord certs`: a CA, a server certificate, a client certificate and a peer
//! certificate (both uses, for members' mutual TLS on the peer port) for local testing
//! of TLS listeners (mutual TLS included), written as PEM files with rcgen
//! (ring, no OpenSSL). Not for production: the CA key is thrown away, so nothing more
//! can be signed with it, and the certificates are valid for a few years.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use concord_config::CertsArgs;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files written, in the order `concord certs` lists them.
pub const FILES: [&str; 7] = [
    "ca.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
    "peer.pem",
    "peer-key.pem",
];

/// Parameters valid from January 1 of last year for five years, named `cn`.
fn params(sans: Vec<String>, cn: &str) -> Result<CertificateParams> {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let year = 1970 + i32::try_from(days * 400 / 146_097).unwrap_or(0);
    let mut params =
        CertificateParams::new(sans).context("a host is not a valid DNS name or IP")?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 4, 1, 1);
    Ok(params)
}

/// Writes `text` to a new file `dir/name` (never over an existing one), owner-only for
/// keys.
fn write_new(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    let mode = if name.ends_with("-key.pem") {
        0o600
    } else {
        0o644
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Makes the CA and the three certificates and writes [`FILES`] into `args.dir`.
pub fn run(args: &CertsArgs) -> Result<()> {
    if args.hosts.is_empty() {
        bail!("--hosts: at least one host name or address");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    if let Some(existing) = FILES.iter().map(|f| args.dir.join(f)).find(|p| p.exists()) {
        bail!("{} exists; not overwriting", existing.display());
    }
    let mut ca = params(Vec::new(), "concord local CA")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = params(args.hosts.clone(), "concord server")?;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let mut client = params(Vec::new(), "concord client")?;
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    // A member serves its peer port and dials the others with one certificate.
    let mut peer = params(args.hosts.clone(), "concord peer")?;
    peer.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let peer_key = KeyPair::generate()?;
    let peer_cert = peer.signed_by(&peer_key, &issuer)?;

    let texts = [
        ca_cert.pem(),
        server_cert.pem(),
        server_key.serialize_pem(),
        client_cert.pem(),
        client_key.serialize_pem(),
        peer_cert.pem(),
        peer_key.serialize_pem(),
    ];
    for (name, text) in FILES.iter().zip(&texts) {
        write_new(&args.dir, name, text)?;
    }
    Ok(())
}
