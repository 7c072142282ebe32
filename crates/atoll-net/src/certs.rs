//! The cluster CA and node certificates.
//!
//! `new_cluster(dir)` makes a cluster: a CA (`ca.pem`, and its secret key
//! `ca.key`), a random cluster id (`cluster-id`), and the first node's key and
//! certificate (`node.key`, `node.pem`) signed by the CA. `join(ca_dir, dir)`
//! issues another node's key and certificate from the CA in `ca_dir`, and copies
//! `ca.pem` and `cluster-id` (never `ca.key`). Node certificates are valid for
//! both ends of mutual TLS and name the DNS name [`NODE_NAME`].

use crate::NetError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::Path;

/// The DNS name every node certificate carries and every client verifies.
pub const NODE_NAME: &str = "atoll-node";

/// The files of a node directory.
pub mod files {
    /// The cluster CA's certificate.
    pub const CA_CERT: &str = "ca.pem";
    /// The cluster CA's secret key (only in the directory that made the cluster).
    pub const CA_KEY: &str = "ca.key";
    /// The cluster id, hex.
    pub const CLUSTER_ID: &str = "cluster-id";
    /// This node's certificate.
    pub const NODE_CERT: &str = "node.pem";
    /// This node's secret key.
    pub const NODE_KEY: &str = "node.key";
}

fn io(path: &Path, e: std::io::Error) -> NetError {
    NetError::certificate_from(path.display().to_string(), e)
}

fn write_secret(path: &Path, contents: &str) -> Result<(), NetError> {
    std::fs::write(path, contents).map_err(|e| io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(path, e))?;
    }
    Ok(())
}

fn rc(e: rcgen::Error) -> NetError {
    NetError::certificate_from("making a certificate", e)
}

fn refuse_existing(dir: &Path, name: &str) -> Result<(), NetError> {
    let p = dir.join(name);
    if p.exists() {
        return Err(NetError::certificate(format!(
            "{} already exists: refusing to overwrite a node's identity",
            p.display()
        )));
    }
    Ok(())
}

fn node_cert(dir: &Path, ca_params_pem: &str, ca_key_pem: &str) -> Result<(), NetError> {
    refuse_existing(dir, files::NODE_KEY)?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(rc)?;
    let ca_params = CertificateParams::from_ca_cert_pem(ca_params_pem).map_err(rc)?;
    let ca = ca_params.self_signed(&ca_key).map_err(rc)?;
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::new(vec![NODE_NAME.to_string()]).map_err(rc)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "atoll node");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(rc)?;
    write_secret(&dir.join(files::NODE_KEY), &key.serialize_pem())?;
    let p = dir.join(files::NODE_CERT);
    std::fs::write(&p, cert.pem()).map_err(|e| io(&p, e))
}

/// Makes a new cluster in `dir`: its CA, cluster id, and the first node's
/// certificate. Returns the cluster id.
pub fn new_cluster(dir: &Path) -> Result<u128, NetError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    refuse_existing(dir, files::CA_KEY)?;
    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "atoll cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = params.self_signed(&ca_key).map_err(rc)?;
    let cluster_id: u128 = rand::random();
    write_secret(&dir.join(files::CA_KEY), &ca_key.serialize_pem())?;
    let p = dir.join(files::CA_CERT);
    std::fs::write(&p, ca.pem()).map_err(|e| io(&p, e))?;
    let p = dir.join(files::CLUSTER_ID);
    std::fs::write(&p, format!("{cluster_id:032x}\n")).map_err(|e| io(&p, e))?;
    node_cert(dir, &ca.pem(), &ca_key.serialize_pem())?;
    Ok(cluster_id)
}

/// Issues a node certificate in `dir` from the CA in `ca_dir`; returns the cluster id.
pub fn join(ca_dir: &Path, dir: &Path) -> Result<u128, NetError> {
    let read = |name: &str| {
        let p = ca_dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| io(&p, e))
    };
    let ca_pem = read(files::CA_CERT)?;
    let ca_key = read(files::CA_KEY)?;
    let cluster = read(files::CLUSTER_ID)?;
    let cluster_id = parse_cluster_id(&cluster)?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    node_cert(dir, &ca_pem, &ca_key)?;
    for (name, contents) in [(files::CA_CERT, &ca_pem), (files::CLUSTER_ID, &cluster)] {
        let p = dir.join(name);
        std::fs::write(&p, contents).map_err(|e| io(&p, e))?;
    }
    Ok(cluster_id)
}

/// Parses a `cluster-id` file's contents.
pub fn parse_cluster_id(s: &str) -> Result<u128, NetError> {
    u128::from_str_radix(s.trim(), 16).map_err(|_| {
        NetError::certificate(format!("cluster id {:?} is not 32 hex digits", s.trim()))
    })
}
