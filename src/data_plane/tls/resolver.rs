//! Which certificate a TLS handshake gets: the SNI table behind an `ArcSwap`.
//!
//! A [`CertTable`] is built off the handshake path from loaded entries; a
//! [`CertStore`] publishes the current one and answers rustls' `resolve` with one
//! lock-free `load()`. A reload swaps the whole table: handshakes that already
//! picked a certificate keep it (it is an `Arc`), new ones get the new table.
//!
//! Lookup order for the client's SNI (lower-cased): an exact `server_names`
//! entry, then a `*.` wildcard one label deep, then entries without
//! `server_names` whose certificate is valid for the name (in file order), then
//! the default certificate, the first entry. No SNI (clients connecting by IP)
//! gets the default too.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::Loaded;
use crate::control_plane::config::spec::{CertificateSpec, SniName};

/// An immutable SNI → certificate table.
pub struct CertTable {
    /// In file order; never empty (validation requires one entry). `[0]` is the default.
    entries: Vec<Loaded>,
    exact: HashMap<String, usize>,
    /// Keyed by the suffix after the first label, e.g. `.example.com`.
    wildcard: HashMap<String, usize>,
    /// Entries without `server_names`, matched against their certificate's names.
    by_certificate: Vec<usize>,
}

impl fmt::Debug for CertTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertTable")
            .field("entries", &self.entries.len())
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CertTable {
    /// Builds the table; `loaded[i]` belongs to `specs[i]`, and both are non-empty.
    pub fn build(specs: &[CertificateSpec], loaded: Vec<Loaded>) -> CertTable {
        debug_assert_eq!(specs.len(), loaded.len());
        debug_assert!(!loaded.is_empty());
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut by_certificate = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if spec.server_names.is_empty() {
                by_certificate.push(i);
            }
            for name in &spec.server_names {
                // Validation rejected duplicates; keep the first anyway.
                match name {
                    SniName::Exact(n) => exact.entry(n.clone()).or_insert(i),
                    SniName::Wildcard(s) => wildcard.entry(s.clone()).or_insert(i),
                };
            }
        }
        CertTable {
            entries: loaded,
            exact,
            wildcard,
            by_certificate,
        }
    }

    /// The certificate for a client that sent `sni` (already lower-case from
    /// rustls for DNS names; lower-cased again here to be safe).
    pub fn find(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let index = sni.and_then(|name| self.index_for(name)).unwrap_or(0);
        self.entries.get(index).map(|e| &e.key)
    }

    fn index_for(&self, sni: &str) -> Option<usize> {
        let lower;
        let name = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        if let Some(dot) = name.find('.') {
            if let Some(&i) = self.wildcard.get(&name[dot..]) {
                return Some(i);
            }
        }
        if self.by_certificate.is_empty() {
            return None;
        }
        let server_name = ServerName::DnsName(DnsName::try_from(name).ok()?.to_owned());
        self.by_certificate.iter().copied().find(|&i| {
            let Some(der) = self.entries[i].key.cert.first() else {
                return false;
            };
            webpki::EndEntityCert::try_from(der)
                .and_then(|cert| cert.verify_is_valid_for_subject_name(&server_name))
                .is_ok()
        })
    }

    /// The loaded entries, in file order.
    pub fn entries(&self) -> &[Loaded] {
        &self.entries
    }
}

/// The live certificate table of the HTTPS listener.
#[derive(Debug)]
pub struct CertStore {
    specs: Vec<CertificateSpec>,
    table: ArcSwap<CertTable>,
}

impl CertStore {
    /// A store serving `table`, built from `specs`.
    pub fn new(specs: Vec<CertificateSpec>, table: CertTable) -> CertStore {
        CertStore {
            specs,
            table: ArcSwap::from_pointee(table),
        }
    }

    /// The entries as configured.
    pub fn specs(&self) -> &[CertificateSpec] {
        &self.specs
    }

    /// The table handshakes use now.
    pub fn current(&self) -> Arc<CertTable> {
        self.table.load_full()
    }

    /// Publishes `table` for every handshake that starts from now on.
    pub fn publish(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().find(hello.server_name()).cloned()
    }
}
