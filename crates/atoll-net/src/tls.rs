//! Mutual TLS configuration from a node directory.

use crate::certs::{files, parse_cluster_id};
use crate::NetError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// The ALPN protocol id of atoll's transport.
pub const ALPN: &[u8] = b"atoll/1";

/// A node's TLS identity: the cluster CA it trusts, its certificate and key.
#[derive(Debug)]
pub struct Identity {
    /// The cluster id.
    pub cluster_id: u128,
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cluster_id: self.cluster_id,
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, NetError> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|e| NetError::certificate_from(p.display().to_string(), e))
}

fn certs(dir: &Path, name: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let pem = read(dir, name)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(|e| NetError::certificate_from(name.to_string(), e))?;
    if certs.is_empty() {
        return Err(NetError::certificate(format!(
            "{name}: no certificate in the file"
        )));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// Loads the identity from a node directory (see [`crate::certs`]).
    pub fn load(dir: &Path) -> Result<Identity, NetError> {
        let cluster = String::from_utf8_lossy(&read(dir, files::CLUSTER_ID)?).into_owned();
        let key_pem = read(dir, files::NODE_KEY)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| NetError::certificate_from(files::NODE_KEY, e))?
            .ok_or_else(|| {
                NetError::certificate(format!("{}: no private key in the file", files::NODE_KEY))
            })?;
        Ok(Identity {
            cluster_id: parse_cluster_id(&cluster)?,
            ca: certs(dir, files::CA_CERT)?,
            chain: certs(dir, files::NODE_CERT)?,
            key,
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, NetError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .map_err(|e| NetError::certificate_from("CA certificate", e))?;
        }
        Ok(Arc::new(roots))
    }

    /// The server side: TLS 1.3, a client certificate from the cluster CA required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| NetError::certificate_from("TLS configuration", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::certificate_from("TLS configuration", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| NetError::certificate_from("TLS configuration", e))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The client side: TLS 1.3, the server verified against the cluster CA,
    /// this node's certificate presented.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, NetError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::certificate_from("TLS configuration", e))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| NetError::certificate_from("TLS configuration", e))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}
