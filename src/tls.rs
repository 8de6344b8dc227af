//! TLS profiles from the config turned into rustls server configurations: the
//! certificate chain and key from PEM files, an optional client CA (then every client
//! must present a certificate it signed: mutual TLS), an optional minimum version.
//! Every failure names the profile and the file.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use concord_config::TlsProfile;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

fn certificates(name: &str, field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("tls.{name}.{field}: cannot read {}", path.display()))?;
    if certs.is_empty() {
        bail!("tls.{name}.{field}: no certificate in {}", path.display());
    }
    Ok(certs)
}

/// The server configuration of profile `name`, offering `alpn` protocols.
pub fn server_config(
    name: &str,
    profile: &TlsProfile,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(name, "cert", &profile.cert)?;
    let key = PrivateKeyDer::from_pem_file(&profile.key).with_context(|| {
        format!(
            "tls.{name}.key: no private key in {}",
            profile.key.display()
        )
    })?;
    let versions: &[&SupportedProtocolVersion] = match profile.min_version.as_deref() {
        Some("1.3") => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .with_context(|| format!("tls.{name}.min_version"))?;
    let builder = match &profile.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(name, "client_ca", ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("tls.{name}.client_ca: bad CA in {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("tls.{name}.client_ca: {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "tls.{name}: the key {} does not go with the certificate {}",
            profile.key.display(),
            profile.cert.display()
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
