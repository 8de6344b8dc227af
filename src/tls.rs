//! TLS profiles from the config turned into rustls server configurations: the
//! certificate chain and key from PEM files, an optional client CA (then every client
//! must present a certificate it signed: mutual TLS), an optional minimum version.
//! Every failure names the profile and the file. The certificate and key are served
//! through a [`ReloadableCert`], which SIGHUP reloads from the same files for new
//! handshakes; established connections keep the session they negotiated.
//!
//! The peer port's profile serves and dials with the same certificate: members present
//! it to each other, and each checks the other's against the profile's `client_ca`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::{Context, Result, bail};
use concord_config::TlsProfile;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

fn certificates(name: &str, field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("tls.{name}.{field}: cannot read {}", path.display()))?;
    if certs.is_empty() {
        bail!("tls.{name}.{field}: no certificate in {}", path.display());
    }
    Ok(certs)
}

/// A profile's certificate chain and key, read from its files at start and again on
/// [`ReloadableCert::reload`]; every handshake takes the current one.
#[derive(Debug)]
pub struct ReloadableCert {
    name: String,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    fn new(name: &str, profile: &TlsProfile, provider: Arc<CryptoProvider>) -> Result<Self> {
        let current = load_certified_key(name, &profile.cert, &profile.key, &provider)?;
        Ok(ReloadableCert {
            name: name.to_string(),
            cert: profile.cert.clone(),
            key: profile.key.clone(),
            provider,
            current: RwLock::new(current),
        })
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) -> Result<()> {
        let fresh = load_certified_key(&self.name, &self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The peer port dials with the profile's certificate too.
impl ResolvesClientCert for ReloadableCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The chain in `cert` with the key in `key`, checked to belong together.
fn load_certified_key(
    name: &str,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>> {
    let certs = certificates(name, "cert", cert)?;
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls.{name}.key: no private key in {}", key.display()))?;
    let certified = CertifiedKey::from_der(certs, private, provider).with_context(|| {
        format!(
            "tls.{name}: the key {} does not go with the certificate {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn protocol_versions(profile: &TlsProfile) -> &'static [&'static SupportedProtocolVersion] {
    match profile.min_version.as_deref() {
        Some("1.3") => &TLS13_ONLY,
        _ => rustls::ALL_VERSIONS,
    }
}

/// The certificates of the profile's `client_ca` file, as trust anchors.
fn client_ca_roots(name: &str, ca: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(name, "client_ca", ca)? {
        roots
            .add(cert)
            .with_context(|| format!("tls.{name}.client_ca: bad CA in {}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The server configuration of profile `name`, offering `alpn` protocols, and the
/// handle that reloads its certificate.
pub fn server_config(
    name: &str,
    profile: &TlsProfile,
    alpn: &[&[u8]],
) -> Result<(Arc<ServerConfig>, Arc<ReloadableCert>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(ReloadableCert::new(name, profile, provider.clone())?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(protocol_versions(profile))
        .with_context(|| format!("tls.{name}.min_version"))?;
    let builder = match &profile.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(client_ca_roots(name, ca)?, provider)
                    .build()
                    .with_context(|| format!("tls.{name}.client_ca: {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), resolver))
}

/// The peer port's mutual TLS from profile `name` (which has a `client_ca`: the config
/// checks it): the server side requires a member's certificate, the dialing side
/// presents the same certificate and trusts only that CA. One handle reloads both.
pub fn peer_config(
    name: &str,
    profile: &TlsProfile,
) -> Result<(concord_kernel::PeerTls, Arc<ReloadableCert>)> {
    let Some(ca) = &profile.client_ca else {
        bail!("tls.{name}.client_ca: the peer port's profile needs one (mutual TLS)");
    };
    let (server, resolver) = server_config(name, profile, &[])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(profile))
        .with_context(|| format!("tls.{name}.min_version"))?
        .with_root_certificates(client_ca_roots(name, ca)?)
        .with_client_cert_resolver(resolver.clone());
    let tls = concord_kernel::PeerTls {
        server,
        client: Arc::new(client),
    };
    Ok((tls, resolver))
}
