//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert` in the `database` URL, read as libpq
//! reads them, and the rustls connector they ask for. It owns which checks the server's
//! certificate gets; not the connecting (`postgres`), nor the URL's other settings (the
//! client's own parser, which knows neither of these two: they are taken out before it reads
//! the URL).
//!
//! | `sslmode`                      | TLS                  | the server's certificate            |
//! |--------------------------------|----------------------|-------------------------------------|
//! | `disable`                      | never                |                                     |
//! | `allow`, `prefer`, none given  | when the server offers it and the handshake works (else without: `postgres::connect_preferring_tls`) | not checked |
//! | `require`                      | always               | not checked; with `sslrootcert`, as `verify-ca` (libpq's rule) |
//! | `verify-ca`                    | always               | signed by a CA of `sslrootcert`     |
//! | `verify-full`                  | always               | that, and made out to the host connected to |
//!
//! An unchecked certificate keeps out whoever only listens on the wire, not whoever can stand
//! in for the server: across a network that is not yours, use `verify-full`. `sslrootcert` is
//! a PEM file of CA certificates, or `system`: the system's bundle
//! ([`SYSTEM_CA_BUNDLE`], Debian's `ca-certificates`), which comes with `verify-full` and
//! refuses weaker modes (any public CA vouches for any name it signed; libpq 16 does the
//! same). (libpq's `allow` tries without TLS first; here it is `prefer`, which is stricter
//! and reaches the same servers.) An address without a name (`hostaddr`, no `host`) is the
//! name TLS is given, but not one `verify-full` can check. TLS is rustls with ring: no
//! OpenSSL, so the binary still needs only the C library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::pg_url::{UrlParts, query_params};

/// What `sslrootcert=system` reads.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How a connection checks the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Encrypted, the certificate taken as it comes (`prefer`, `require` without roots).
    Nothing,
    /// Signed by a CA of `sslrootcert`, whatever host it names (`verify-ca`).
    Issuer,
    /// Signed so, and made out to the host (`verify-full`).
    IssuerAndHost,
}

/// The TLS settings of a `database` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    mode: SslMode,
    check: Check,
    roots: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL: the URL for the client's own
/// parser, and what they ask for. The URL is cut as the client cuts it (`UrlParts`: a `?` in
/// the password is the password's). The error is one line, without the URL (it may hold a
/// password).
pub fn read_url(url: &str) -> Result<(String, Tls), String> {
    let parts = UrlParts::of(url);
    let mut mode = None;
    let mut roots = None;
    let mut has_host_param = false;
    let mut hostaddr = None;
    let mut kept = Vec::new();
    for (name, value, param) in query_params(parts.query.unwrap_or("")) {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        match name.as_str() {
            "sslmode" => mode = Some(decode(value)),
            "sslrootcert" => roots = Some(decode(value)),
            _ => {
                has_host_param |= name == "host";
                if name == "hostaddr" {
                    hostaddr = Some(value);
                }
                kept.push(param.to_string());
            }
        }
    }
    // `system`: any public CA vouches, for any name it signed; only the host name check makes
    // that mean "this server" (libpq 16 refuses weaker modes with it, and so do we).
    let system = roots.as_deref() == Some("system");
    let roots = roots.map(|path| match path.as_str() {
        "system" => PathBuf::from(SYSTEM_CA_BUNDLE),
        _ => PathBuf::from(path),
    });
    let default_mode = if system { "verify-full" } else { "prefer" };
    let (mode, check) = match mode.as_deref().unwrap_or(default_mode) {
        _ if system && mode.as_deref().is_some_and(|m| m != "verify-full") => {
            return Err(
                "sslrootcert=system trusts every public CA, for any name it signed: it needs \
                 sslmode=verify-full (the default with it), which checks the host name too"
                    .to_string(),
            );
        }
        "disable" => (SslMode::Disable, Check::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" if roots.is_some() => (SslMode::Require, Check::Issuer),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Issuer),
        "verify-full" => (SslMode::Require, Check::IssuerAndHost),
        other => {
            return Err(format!(
                "sslmode={other}: not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ));
        }
    };
    if check != Check::Nothing && roots.is_none() {
        return Err(
            "sslmode=verify-ca and verify-full check the server's certificate against \
             sslrootcert=<PEM file of CA certificates> (or sslrootcert=system), which is not set"
                .to_string(),
        );
    }
    // TLS wants a name for the server. An address alone (`hostaddr`, no host) gives none:
    // checking the certificate against a name then cannot be done, and the other modes take
    // the address as the name (libpq needs none there).
    let host_in_place = parts.place.split('/').next().is_some_and(|hosts| {
        hosts
            .split(',')
            .any(|h| !h.is_empty() && !h.starts_with(':'))
    });
    if let Some(address) = hostaddr.filter(|_| !host_in_place && !has_host_param) {
        if check == Check::IssuerAndHost {
            return Err(
                "sslmode=verify-full checks the server's certificate against its host name, \
                 and hostaddr= gives only an address: add host=<the name in the certificate>"
                    .to_string(),
            );
        }
        if mode != SslMode::Disable {
            kept.push(format!("host={address}"));
        }
    }
    let query = (!kept.is_empty()).then(|| kept.join("&"));
    Ok((
        parts.join(parts.user, query.as_deref()),
        Tls { mode, check, roots },
    ))
}

impl Tls {
    /// The client's `sslmode` for these settings.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The connector, its CA certificates read from `sslrootcert` (once: every connection of
    /// the process shares it). The error is one line naming the file.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let roots = self.roots.as_deref().map(read_roots).transpose()?;
        let verifier: Arc<dyn ServerCertVerifier> = match (self.check, roots) {
            (Check::Nothing, _) | (_, None) => Arc::new(Unchecked(provider)),
            (check, Some(roots)) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("TLS: {e}"))?;
                if check == Check::IssuerAndHost {
                    webpki
                } else {
                    Arc::new(AnyHost(webpki))
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The CA certificates of a PEM file; at least one.
fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("sslrootcert {shown}: cannot read it: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("sslrootcert {shown}: no CA certificate in it"));
    }
    Ok(roots)
}

/// Takes the server's certificate as it comes, while still checking that the handshake was
/// signed with the key of that certificate (what makes the session's keys the server's, so
/// that a listener cannot read along). No authentication of the server.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls's full check but for the host name (`verify-ca`): a certificate signed by one of
/// the CAs passes whichever host it is made out to.
#[derive(Debug)]
struct AnyHost(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The name is looked at last, once the chain and its dates have passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_and_the_rest_kept() {
        let (url, tls) = read_url(
            "postgres://u:p@db/x?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a",
        )
        .expect("read");
        assert_eq!(
            url,
            "postgres://u:p@db/x?connect_timeout=5&application_name=a"
        );
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.check, Check::IssuerAndHost);
        assert_eq!(tls.roots, Some(PathBuf::from("/etc/ca.pem")));

        let (url, tls) = read_url("postgres://u@db/x").expect("read");
        assert_eq!(url, "postgres://u@db/x");
        assert_eq!((tls.mode, tls.check), (SslMode::Prefer, Check::Nothing));

        let (_, tls) =
            read_url("postgres://u@db/x?sslmode=require&sslrootcert=/etc/ca.pem").expect("read");
        assert_eq!((tls.mode, tls.check), (SslMode::Require, Check::Issuer));

        let (url, tls) = read_url("postgres://u@db/x?sslmode=disable").expect("read");
        assert_eq!(url, "postgres://u@db/x");
        assert_eq!(tls.mode, SslMode::Disable);
    }

    #[test]
    fn a_question_mark_in_the_password_is_the_passwords() {
        // The client ends the user part at the first `@`: `?sslmode=disable` is password.
        let (url, tls) =
            read_url("postgres://u:ab?sslmode=disable@db/x?sslmode=require").expect("read");
        assert_eq!(url, "postgres://u:ab?sslmode=disable@db/x");
        assert_eq!((tls.mode, tls.check), (SslMode::Require, Check::Nothing));
    }

    #[test]
    fn the_system_cas_are_only_taken_with_the_host_name_checked() {
        let (_, tls) = read_url("postgres://u@db/x?sslrootcert=system").expect("read");
        assert_eq!(
            (tls.mode, tls.check),
            (SslMode::Require, Check::IssuerAndHost)
        );
        assert_eq!(tls.roots, Some(PathBuf::from(SYSTEM_CA_BUNDLE)));
        for weaker in ["disable", "prefer", "require", "verify-ca"] {
            let url = format!("postgres://u@db/x?sslmode={weaker}&sslrootcert=system");
            let error = read_url(&url).expect_err(weaker);
            assert!(
                error.contains("needs sslmode=verify-full"),
                "{weaker}: {error}"
            );
        }
    }

    #[test]
    fn an_address_without_a_host_name_is_the_name_unless_the_name_is_checked() {
        let (url, _) = read_url("postgres://u@/x?hostaddr=10.0.0.5&port=5432").expect("read");
        assert_eq!(
            url,
            "postgres://u@/x?hostaddr=10.0.0.5&port=5432&host=10.0.0.5"
        );
        let (url, _) = read_url("postgres://u@db/x?hostaddr=10.0.0.5").expect("read");
        assert_eq!(url, "postgres://u@db/x?hostaddr=10.0.0.5");
        let (url, _) = read_url("postgres://u@/x?hostaddr=10.0.0.5&sslmode=disable").expect("read");
        assert_eq!(url, "postgres://u@/x?hostaddr=10.0.0.5");
        let error =
            read_url("postgres://u@/x?hostaddr=10.0.0.5&sslmode=verify-full&sslrootcert=/ca.pem")
                .expect_err("no name to check");
        assert!(error.contains("add host="), "{error}");
    }

    #[test]
    fn a_mode_that_checks_needs_roots_and_an_unknown_mode_is_named() {
        let error = read_url("postgres://u:secret@db/x?sslmode=verify-ca").expect_err("no roots");
        assert!(error.contains("sslrootcert"), "{error}");
        assert!(!error.contains("secret"), "{error}");
        let error = read_url("postgres://u:secret@db/x?sslmode=strict").expect_err("unknown");
        assert!(error.starts_with("sslmode=strict: not one of"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }
}
