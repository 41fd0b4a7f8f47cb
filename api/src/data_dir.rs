//! The files of a data directory besides the database: the server secret that codes are
//! derived from, and the admin token. Both are made at first start with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use roster_domain::ServerSecret;

const SECRET_FILE: &str = "secret.key";
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Reads `name` in `dir`, or writes `make()` there (mode 0600, created exclusively so two
/// processes cannot both write one) and returns it with `true`.
fn read_or_create(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok((text.trim().to_string(), false)),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot read {}: {error}", path.display()));
        }
        Err(_) => {}
    }
    let value = make();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{value}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((value, true))
}

/// 256 bits from the operating system, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

/// The server secret: `ROSTER_SECRET` when given, else `secret.key` in the data directory.
pub fn server_secret(dir: &Path, from_env: Option<&str>) -> Result<ServerSecret, String> {
    let text = match from_env {
        Some(secret) if secret.len() >= 16 => secret.to_string(),
        Some(_) => return Err("ROSTER_SECRET must be at least 16 characters".into()),
        None => read_or_create(dir, SECRET_FILE, random_hex)?.0,
    };
    Ok(ServerSecret::new(text.into_bytes()))
}

/// The admin token: `ROSTER_ADMIN_TOKEN` when given, else `admin-token` in the data
/// directory; `true` when it was made just now (so it can be shown, once).
pub fn admin_token(dir: &Path, from_env: Option<&str>) -> Result<(String, bool), String> {
    match from_env {
        Some(token) if token.len() >= 16 => Ok((token.to_string(), false)),
        Some(_) => Err("ROSTER_ADMIN_TOKEN must be at least 16 characters".into()),
        None => read_or_create(dir, ADMIN_TOKEN_FILE, || format!("ra_{}", random_hex())),
    }
}
