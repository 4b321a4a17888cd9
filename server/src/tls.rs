//! TLS on the client and admin ports (`tally serve --tls-cert --tls-key
//! [--tls-client-ca]`): rustls with the `ring` provider. The peer port stays plain: peers
//! authenticate every message with the cluster secret (HMAC) on their own.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use tally_client::tls::{crypto_provider, load_certificates, load_private_key, load_roots};

/// The server side of TLS, read once at start-up.
pub struct TlsServer {
    /// For client connections: requires a client certificate when `mutual`.
    pub clients: Arc<rustls::ServerConfig>,
    /// For the admin listener: the same certificate, no client certificate asked for, so
    /// that any scraper that trusts the CA can read metrics.
    pub admin: Arc<rustls::ServerConfig>,
    /// Whether client connections must show a certificate signed by `--tls-client-ca`.
    pub mutual: bool,
}

impl TlsServer {
    /// Reads the certificate chain, its key and (for mutual TLS) the CA that signs client
    /// certificates. Every failure names the file and says what is wrong with it.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsServer, String> {
        let chain = load_certificates(cert)?;
        let private_key = load_private_key(key)?;
        let builder = || {
            rustls::ServerConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .map_err(|error| format!("TLS: {error}"))
        };
        let identity_error = |error: rustls::Error| {
            format!("{} and {} are not a usable identity: {error}", cert.display(), key.display())
        };
        let admin = builder()?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), private_key.clone_key())
            .map_err(identity_error)?;
        let clients = match client_ca {
            None => builder()?.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, crypto_provider())
                    .build()
                    .map_err(|error| format!("{}: cannot verify clients with it: {error}", ca.display()))?;
                builder()?.with_client_cert_verifier(verifier)
            }
        }
        .with_single_cert(chain, private_key)
        .map_err(identity_error)?;
        Ok(TlsServer { clients: Arc::new(clients), admin: Arc::new(admin), mutual: client_ca.is_some() })
    }
}
