//! Relative paths in a config file name files beside it: every path-like field is
//! resolved against the directory of the file it came from, never against the
//! process's working directory, so `ringway run -c /etc/ringway/ringway.yaml` reads
//! the same files from wherever it is started (and reloads the same way).

use std::path::{Path, PathBuf};

use super::{CertPair, Config};

/// The directory relative paths in the file at `file` are resolved against: its
/// parent, made absolute (from the working directory at load time) so that the paths
/// logged and compared on reload say where the files are.
pub fn base_dir(file: &Path) -> PathBuf {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_owned())
}

/// `path` as seen from `base`: unchanged when absolute. A lone `.` component left by
/// joining (`./data`) is dropped so the result reads as the operator would write it.
fn under(base: &Path, path: &mut PathBuf) {
    if path.is_absolute() || path.as_os_str().is_empty() {
        return;
    }
    let joined: PathBuf = base
        .join(&*path)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    *path = joined;
}

fn pair(base: &Path, p: &mut CertPair) {
    under(base, &mut p.cert);
    under(base, &mut p.key);
}

impl Config {
    /// Resolves every path-like field against `base` (see the module docs): the data
    /// dir, the admin token file and TLS files, every listener's certificates, each
    /// pool's CA bundle and client certificate, the cluster's TLS files and secret file.
    pub fn resolve_paths(&mut self, base: &Path) {
        under(base, &mut self.node.data_dir);
        for listener in &mut self.listeners {
            for cert in listener.tls.iter_mut().flat_map(|t| &mut t.certificates) {
                pair(base, cert);
            }
        }
        if let Some(admin) = &mut self.admin {
            if let Some(token) = &mut admin.token_file {
                under(base, token);
            }
            if let Some(tls) = &mut admin.tls {
                pair(base, tls);
            }
        }
        if let Some(cluster) = &mut self.cluster {
            if let Some(tls) = &mut cluster.tls {
                under(base, &mut tls.ca_file);
                pair(base, &mut tls.identity);
            }
            if let Some(secret) = &mut cluster.secret_file {
                under(base, secret);
            }
        }
        for tls in self.pools.iter_mut().filter_map(|p| p.tls.as_mut()) {
            if let Some(ca) = &mut tls.ca_file {
                under(base, ca);
            }
            if let Some(client) = &mut tls.client_cert {
                pair(base, client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_base_and_absolute_ones_stay() {
        let base = Path::new("/etc/ringway");
        let mut p = PathBuf::from("./data/n1");
        under(base, &mut p);
        assert_eq!(p, Path::new("/etc/ringway/data/n1"));
        let mut p = PathBuf::from("../shared/ca.pem");
        under(base, &mut p);
        assert_eq!(p, Path::new("/etc/ringway/../shared/ca.pem"));
        let mut p = PathBuf::from("/var/lib/ringway");
        under(base, &mut p);
        assert_eq!(p, Path::new("/var/lib/ringway"));
    }

    #[test]
    fn a_bare_file_name_resolves_from_the_working_directory_made_absolute() {
        let base = base_dir(Path::new("ringway.yaml"));
        assert!(base.is_absolute(), "{}", base.display());
        assert_eq!(base, std::env::current_dir().unwrap());
    }
}
