//! Tenant secrets, sealed at rest.
//!
//! Values are encrypted with ChaCha20-Poly1305 under a 32-byte key that never touches the
//! database: from `CORRAL_SECRETS_KEY` (base64) or the config file, or, for the embedded
//! default, a random key created once in the data directory (`secrets.key`, mode 0600).
//! Each value is bound to its tenant and name (associated data), so a sealed value copied
//! to another row does not open. Guests never see values: the host substitutes them into
//! outbound request headers (see `capabilities::http`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use std::path::Path;

/// The environment variable holding the base64 key.
pub const KEY_ENV: &str = "CORRAL_SECRETS_KEY";
/// Largest secret value.
pub const MAX_VALUE: usize = 16 << 10;
const PREFIX: &str = "v1:";

/// Checks a secret name: 1-128 of `A-Z a-z 0-9 _ - .`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "`{name}` is not a secret name (1-128 letters, digits, `_`, `-` or `.`)"
        ));
    }
    Ok(())
}

/// Encrypts and decrypts secret values.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer from a base64-encoded 32-byte key.
    pub fn from_base64(key: &str) -> Result<Sealer, String> {
        let bytes = B64
            .decode(key.trim())
            .map_err(|_| "the secrets key is not valid base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!(
                "the secrets key must be 32 bytes (base64 of them); it is {}",
                bytes.len()
            ));
        }
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// The key from `CORRAL_SECRETS_KEY`, if set.
    pub fn from_env() -> Result<Option<Sealer>, String> {
        match std::env::var(KEY_ENV) {
            Ok(key) if !key.trim().is_empty() => Sealer::from_base64(&key)
                .map(Some)
                .map_err(|e| format!("{KEY_ENV}: {e}")),
            _ => Ok(None),
        }
    }

    /// The key in `path`, created (random, owner-only) if it does not exist.
    pub fn from_key_file(path: &Path) -> Result<Sealer, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Sealer::from_base64(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let text = B64.encode(key);
                write_private(path, text.as_bytes())
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                Sealer::from_base64(&text)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Seals `value` for `tenant`'s secret `name`.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> Result<String, String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated(tenant, name);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| "cannot encrypt the secret".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// Opens a sealed value; `None` if it was not sealed for this tenant and name with
    /// this key.
    pub fn open(&self, tenant: &str, name: &str, sealed: &str) -> Option<String> {
        let bytes = B64.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        let (nonce, ciphertext) = bytes.split_at_checked(12)?;
        let aad = associated(tenant, name);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn associated(tenant: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant.len() + name.len() + 1);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Writes a new file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_tenant_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::from_key_file(&dir.path().join("secrets.key")).unwrap();
        let again = Sealer::from_key_file(&dir.path().join("secrets.key")).unwrap();
        let sealed = sealer.seal("ten_a", "TOKEN", "s3cr3t-value").unwrap();
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(
            again.open("ten_a", "TOKEN", &sealed).unwrap(),
            "s3cr3t-value"
        );
        assert!(sealer.open("ten_b", "TOKEN", &sealed).is_none());
        assert!(sealer.open("ten_a", "OTHER", &sealed).is_none());
        let other = Sealer::from_base64(&B64.encode([7u8; 32])).unwrap();
        assert!(other.open("ten_a", "TOKEN", &sealed).is_none());
        assert!(Sealer::from_base64("short").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("GITHUB_TOKEN").is_ok());
        assert!(check_name("a.b-c").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("${x}").is_err());
    }
}
