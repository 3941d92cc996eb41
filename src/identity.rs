//! The node's ed25519 identity key, stored on disk.
//!
//! File format: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), mode 0600. A missing file is created
//! with a fresh key (parent directories with mode 0700). A file that group or others can read or
//! write, or that does not hold an ed25519 PKCS#8 key, is refused: the node never silently replaces
//! or uses a key that may be compromised or damaged.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use p2pnat_proto::PeerId;

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file {path} is accessible by group or others (mode {mode:o}); run `chmod 600 {path}` if it is yours and not leaked")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("identity file {path} is corrupt or not an ed25519 PKCS#8 PEM key: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot read or create identity file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no identity path given and neither XDG_CONFIG_HOME nor HOME is set")]
    NoDefaultPath,
    #[error("cannot draw randomness for a new key: {0}")]
    Random(String),
}

/// An identity: the signing key and the peer ID it gives.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.peer_id())
    }
}

/// `explicit` if given, else `$XDG_CONFIG_HOME/p2pnat/<file>` or `$HOME/.config/p2pnat/<file>`.
pub fn path_or_default(explicit: Option<PathBuf>, file: &str) -> Result<PathBuf, IdentityError> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or(IdentityError::NoDefaultPath)?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("p2pnat").join(file))
}

impl Identity {
    /// A fresh random identity (not stored).
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Identity {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads the key at `path`, creating it if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::InsecurePermissions {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let text = fs::read_to_string(path).map_err(|e| IdentityError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                let key =
                    SigningKey::from_pkcs8_pem(&text).map_err(|e| IdentityError::Corrupt {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                Ok(Identity { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::generate()?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(io)?;
                }
                let pem = identity
                    .key
                    .to_pkcs8_pem(Default::default())
                    .map_err(|e| IdentityError::Random(e.to_string()))?;
                // Write a temporary file, then link it into place: the key appears whole or not at
                // all, and of two processes creating it at once, one wins and the other loads it.
                let mut suffix = [0u8; 8];
                getrandom::getrandom(&mut suffix)
                    .map_err(|e| IdentityError::Random(e.to_string()))?;
                let temporary =
                    path.with_extension(format!("tmp-{:016x}", u64::from_le_bytes(suffix)));
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&temporary)
                    .map_err(io)?;
                let written = file
                    .write_all(pem.as_bytes())
                    .and_then(|()| file.sync_all())
                    .and_then(|()| fs::hard_link(&temporary, path));
                let _ = fs::remove_file(&temporary);
                match written {
                    Ok(()) => Ok(identity),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Identity::load_or_create(path)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn peer_id(&self) -> PeerId {
        PeerId(self.key.verifying_key().to_bytes())
    }

    /// The secret half of the key exchange that authenticates path checks
    /// (`p2pnat_proto::path::auth`).
    pub fn path_secret(&self) -> p2pnat_proto::path::auth::OwnSecret {
        p2pnat_proto::path::auth::OwnSecret::from_seed(&self.key.to_bytes())
    }

    /// The signing key: signs registrations with the rendezvous (`p2pnat_proto::rv`).
    pub fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }

    /// The key as PKCS#8 DER, for the TLS certificate.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.key
            .to_pkcs8_der()
            .expect("an ed25519 key always encodes as PKCS#8")
            .as_bytes()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_with_0600_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/id.key");
        let created = Identity::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Identity::load_or_create(&path).unwrap();
        assert_eq!(created.peer_id(), loaded.peer_id());
    }

    #[test]
    fn concurrent_creation_yields_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Identity::load_or_create(&path).unwrap().peer_id())
            })
            .collect();
        let ids: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{ids:?}");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn refuses_readable_or_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        Identity::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::InsecurePermissions { mode: 0o644, .. })
        ));
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::Corrupt { .. })
        ));
    }
}
