//! The certificates `https://` needs, read and checked before etcd is asked anything: the CA
//! that signed etcd's certificate, and our own certificate with its key. They become both the
//! gRPC channel's TLS options (kept as PEM) and the rustls configuration of the pre-flight
//! handshake (`preflight`), so that both trust and present the same.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::common_name::common_name;
use super::secrets::read_private;
use super::Settings;
use crate::error::Failure;
use crate::trust;

/// `--cacert` and our identity, read once: as PEM for the gRPC channel, and as the rustls
/// configuration of the pre-flight handshake.
#[derive(Clone)]
pub(super) struct Tls {
    pub(super) cacert: PathBuf,
    pub(super) ca_pem: Vec<u8>,
    pub(super) identity: Option<ClientIdentity>,
    /// The same roots and identity, for the handshake tried before connecting.
    pub(super) config: Arc<ClientConfig>,
}

/// `--cert` and `--key`, checked to go together.
#[derive(Clone)]
pub(super) struct ClientIdentity {
    pub(super) cert: PathBuf,
    key: PathBuf,
    pub(super) cert_pem: Vec<u8>,
    pub(super) key_pem: Vec<u8>,
    /// The certificate's subject CN: with client-certificate authentication, the etcd user.
    pub(super) common_name: Option<String>,
}

impl Tls {
    pub(super) fn read(settings: &Settings, first: &str) -> Result<Tls> {
        let Some(cacert) = &settings.cacert else {
            return Err(Failure::input(format!(
                "--etcd {first}: https:// needs --cacert FILE, the CA certificate that signed \
                 etcd's server certificate"
            ))
            .into());
        };
        let ca_pem = read_public(cacert, "--cacert")?;
        let ca = certificates(&ca_pem, cacert, "--cacert")?;
        let mut roots = RootCertStore::empty();
        for certificate in ca {
            roots.add(certificate).map_err(|e| {
                Failure::input(format!(
                    "--cacert {}: not a usable CA certificate: {e}",
                    cacert.display()
                ))
            })?;
        }
        let identity = match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => Some(ClientIdentity::read(cert, key)?),
            (Some(cert), None) => {
                return Err(Failure::input(format!(
                    "--cert {} without --key: the certificate's private key is needed too",
                    cert.display()
                ))
                .into())
            }
            (None, Some(key)) => {
                return Err(Failure::input(format!(
                    "--key {} without --cert: the key's certificate is needed too",
                    key.display()
                ))
                .into())
            }
            (None, None) => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| unreachable!("ring supports TLS 1.2 and 1.3: {e}"))
            .with_root_certificates(roots);
        let mut config = match &identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain()?, identity.private_key()?)
                .map_err(|e| {
                    Failure::input(format!(
                        "--cert {} and --key {}: {e}",
                        identity.cert.display(),
                        identity.key.display()
                    ))
                })?,
            None => builder.with_no_client_auth(),
        };
        // What the gRPC channel asks for, so that the server answers the same way.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            cacert: cacert.clone(),
            ca_pem,
            identity,
            config: Arc::new(config),
        })
    }
}

impl ClientIdentity {
    fn read(cert: &Path, key: &Path) -> Result<ClientIdentity> {
        let cert_pem = read_public(cert, "--cert")?;
        let key_pem = read_private(key, "--key")?;
        let chain = certificates(&cert_pem, cert, "--cert")?;
        let common_name = common_name(&chain[0]);
        let identity = ClientIdentity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            cert_pem,
            key_pem,
            common_name,
        };
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, identity.private_key()?, &provider).map_err(
            |e| {
                Failure::input(format!(
                    "--key {} does not go with --cert {}: {e}",
                    key.display(),
                    cert.display()
                ))
            },
        )?;
        Ok(identity)
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>> {
        certificates(&self.cert_pem, &self.cert, "--cert")
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| {
            Failure::input(format!(
                "--key {}: no PEM private key in it ({e})",
                self.key.display()
            ))
            .into()
        })
    }
}

/// Every PEM certificate in `pem`; none is an error naming `flag` and the file.
pub(super) fn certificates(
    pem: &[u8],
    path: &Path,
    flag: &str,
) -> Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::input(format!("{flag} {}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(Failure::input(format!(
            "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ))
        .into());
    }
    Ok(certificates)
}

/// A certificate: anyone may read it, but only root (or we) may change it — a CA file someone
/// else could replace would let them stand in for etcd.
fn read_public(path: &Path, flag: &str) -> Result<Vec<u8>> {
    trust::refuse_replaceable(path, &format!("{flag} file"))?;
    std::fs::read(path)
        .map_err(|e| Failure::input(format!("cannot read {flag} {}: {e}", path.display())).into())
}
