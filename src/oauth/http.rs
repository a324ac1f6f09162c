//! The HTTPS client of the token endpoints: ureq (synchronous, no async runtime) over the same
//! rustls and ring as the SMTP client, trusting the system's roots plus OutboundTlsCaFile. A proxy
//! named by HTTPS_PROXY / ALL_PROXY (and NO_PROXY) is used, as an admin behind one expects.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::Agent;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::net::tls::{self, ClientTls};

/// The longest a token request may take, connection and answer included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read (a token response is a few KB).
const MAX_BODY: u64 = 256 * 1024;

/// A lazily built HTTPS agent: the trust roots are loaded at the first token request.
pub struct Http {
    tls: ClientTls,
    agent: OnceLock<Agent>,
}

impl Http {
    /// An agent trusting what `tls` trusts.
    pub fn new(tls: ClientTls) -> Arc<Http> {
        Arc::new(Http {
            tls,
            agent: OnceLock::new(),
        })
    }

    fn agent(&self) -> &Agent {
        self.agent.get_or_init(|| {
            let roots: Vec<Certificate<'static>> = self
                .tls
                .roots()
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            let tls = TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .unversioned_rustls_crypto_provider(tls::provider())
                .build();
            Agent::config_builder()
                .tls_config(tls)
                .https_only(true)
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(TIMEOUT))
                .user_agent(concat!("mailroot/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        })
    }

    /// POSTs a form; returns the status and the body. The error names the URL and what failed,
    /// never the form.
    pub fn post_form(&self, url: &str, form: &[(&str, String)]) -> Result<(u16, String), String> {
        let mut resp = self
            .agent()
            .post(url)
            .header("Accept", "application/json")
            .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        Ok((status, body))
    }
}
