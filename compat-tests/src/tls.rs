//! What the TLS tests share: certificates made with `openssl` for a test CA (a server
//! certificate for 127.0.0.1 and a client certificate), a Concord process started
//! with TLS profiles from the environment, its output in a log file, killed on drop, and
//! [`ClientPortTls`]: TLS on either backend's etcd client port for a [`crate::Server`]
//! (the server's flags or environment, and the etcd-client options to connect), and
//! [`rustls_client_config`] for the tests' own TLS clients.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::concord_command;

/// A rustls client configuration (ring provider) trusting the `ca.pem` of each of
/// `cas`, presenting the `client.pem` and `client-key.pem` of `client` when given, and
/// offering `alpn` (nothing when empty).
pub fn rustls_client_config(
    cas: &[&Path],
    client: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig> {
    let read = |dir: &Path, name: &str| {
        let path = dir.join(name);
        CertificateDer::from_pem_file(&path)
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(read(ca, "ca.pem")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(dir) => {
            let key = dir.join("client-key.pem");
            let key = PrivateKeyDer::from_pem_file(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            builder.with_client_auth_cert(vec![read(dir, "client.pem")?], key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The `etcdctl` (`--name=file`) and kazoo files of a mutual-TLS client.
pub const MUTUAL: [&str; 3] = ["cacert=ca.pem", "cert=client.pem", "key=client-key.pem"];

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Writes into `dir` a CA (`ca.pem`, `ca-key.pem`), a server certificate for 127.0.0.1
/// (`server.pem`, `server-key.pem`) and a client certificate (`client.pem`,
/// `client-key.pem`), both signed by the CA.
pub fn make_certificates(dir: &Path) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=concord-test-ca",
        ],
    )?;
    // Extensions make X.509 v3 certificates (webpki accepts no others).
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    for name in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        let csr = format!("{name}.csr");
        let out = format!("{name}.pem");
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &out,
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(())
}

/// The environment of a TLS profile `name` with the server certificate of `dir`, the key
/// file `key` (so a test can give it a key that does not match) and, for mutual TLS,
/// `ca.pem` as the client CA.
pub fn profile_env(dir: &Path, name: &str, key: &str, mutual: bool) -> Vec<(String, OsString)> {
    let upper = name.to_uppercase();
    let mut env = vec![
        (
            format!("CONCORD_TLS__{upper}__CERT"),
            dir.join("server.pem").into(),
        ),
        (format!("CONCORD_TLS__{upper}__KEY"), dir.join(key).into()),
    ];
    if mutual {
        env.push((
            format!("CONCORD_TLS__{upper}__CLIENT_CA"),
            dir.join("ca.pem").into(),
        ));
    }
    env
}

/// TLS on a [`crate::Server`]'s etcd client port, with the certificates
/// [`make_certificates`] wrote into `dir`: the server certificate, and with `mutual`
/// the CA as client CA too (every client then presents the client certificate).
#[derive(Debug, Clone)]
pub struct ClientPortTls {
    pub dir: PathBuf,
    pub mutual: bool,
}

impl ClientPortTls {
    /// The name of the Concord TLS profile the etcd port uses.
    const PROFILE: &str = "client_port";

    /// Real etcd's flags (besides its `https://` client URLs).
    pub fn etcd_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--cert-file".into(),
            self.dir.join("server.pem").into(),
            "--key-file".into(),
            self.dir.join("server-key.pem").into(),
        ];
        if self.mutual {
            args.extend([
                "--trusted-ca-file".into(),
                self.dir.join("ca.pem").into(),
                "--client-cert-auth".into(),
            ]);
        }
        args
    }

    /// Concord's environment: the profile, and the etcd adapter naming it.
    pub fn concord_env(&self) -> Vec<(String, OsString)> {
        let mut env = profile_env(&self.dir, Self::PROFILE, "server-key.pem", self.mutual);
        env.push(("CONCORD_ADAPTERS__ETCD__TLS".into(), Self::PROFILE.into()));
        env
    }

    /// The etcd-client options of a client: trust the CA and, with `mutual`, present
    /// the client certificate.
    pub fn client_options(&self) -> Result<TlsOptions> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(read("ca.pem")?));
        if self.mutual {
            options = options.identity(Identity::from_pem(
                read("client.pem")?,
                read("client-key.pem")?,
            ));
        }
        Ok(options)
    }
}

/// A `concord` process, killed when dropped; stdout and stderr go to a log file.
#[derive(Debug)]
pub struct Concord {
    child: Child,
    log: PathBuf,
}

impl Drop for Concord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Concord {
    /// Runs `concord ARGS` with `env` (on top of a clean `CONCORD_*` environment), its
    /// log in `dir/concord-<tag>.log`.
    pub fn start(
        dir: &Path,
        tag: &str,
        args: &[OsString],
        env: &[(String, OsString)],
    ) -> Result<Self> {
        let log = dir.join(format!("concord-{tag}.log"));
        let mut command = concord_command()?;
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let file = std::fs::File::create(&log)?;
        command.stdout(file.try_clone()?).stderr(file);
        Ok(Concord {
            child: command.spawn()?,
            log,
        })
    }

    /// `concord serve` with data in `dir/data-<tag>`, the flags `args` and `env`.
    pub fn serve(
        dir: &Path,
        tag: &str,
        args: &[String],
        env: &[(String, OsString)],
    ) -> Result<Self> {
        let mut all: Vec<OsString> = vec!["serve".into(), "--data-dir".into()];
        all.push(dir.join(format!("data-{tag}")).into());
        all.extend(args.iter().map(OsString::from));
        Self::start(dir, tag, &all, env)
    }

    /// Sends it signal `name` (`HUP`, ...) with kill(1).
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -s {name} failed");
        Ok(())
    }

    /// What it has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `timeout`) for it to exit by itself: for start-ups that must fail.
    pub async fn exit_status(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("concord still running after {timeout:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `ready` (every 200 ms, for at most `timeout`) until it is true.
    pub async fn wait_until<F, Fut>(&self, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        while !ready().await? {
            if Instant::now() > deadline {
                bail!("concord did not become ready:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}
