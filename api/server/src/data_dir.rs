//! The data directory itself and its files besides the database: the server secret that codes
//! are derived from, and the admin token. Both are made at first start with mode 0600, in a
//! directory of mode 0700: the log holds invitees' email addresses.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use roster_domain::ServerSecret;

/// Why the data directory or one of its files could not be used; one line each.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make {} private: {source}", path.display())]
    MakePrivate {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A secret given in the environment (or by flag) too short to be one; `variable` names
    /// it as the operator knows it.
    #[error("{variable} must be at least {} characters", SECRET_CHARS_MIN)]
    TooShort { variable: &'static str },
    #[error("{} holds no Roster log (give --data the directory serve wrote)", .0.display())]
    NoLog(PathBuf),
    /// The secret file already in a directory a secret is copied into, holding another one.
    #[error(
        "{} holds another secret already; remove it, or import into an empty directory",
        .0.display()
    )]
    AnotherSecret(PathBuf),
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
}

/// `serve` still reports its failure as a line of text; this lets it pass these on with `?`.
impl From<DataDirError> for String {
    fn from(error: DataDirError) -> String {
        error.to_string()
    }
}

/// The shortest admin token or server secret taken from the environment.
const SECRET_CHARS_MIN: usize = 16;

const SECRET_FILE: &str = "secret.key";
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Reads `name` in `dir`, or writes `make()` there (mode 0600, created exclusively so two
/// processes cannot both write one) and returns it with `true`.
fn read_or_create(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), DataDirError> {
    make_private(dir)?;
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok((text.trim().to_string(), false)),
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(DataDirError::Read { path, source });
        }
        Err(_) => {}
    }
    let value = make();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| DataDirError::Create {
            path: path.clone(),
            source,
        })?;
    // The file's content, then its entry in the directory: a power cut between the two would
    // otherwise make a new secret at the next start, and every code handed out dies with it.
    file.write_all(format!("{value}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|source| DataDirError::Write { path, source })?;
    Ok((value, true))
}

/// 256 bits from the operating system, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

/// The server secret: `ROSTER_SECRET` when given, else `secret.key` in the data directory.
pub fn server_secret(dir: &Path, from_env: Option<&str>) -> Result<ServerSecret, DataDirError> {
    let text = match from_env {
        Some(secret) if secret.len() >= SECRET_CHARS_MIN => secret.to_string(),
        Some(_) => {
            return Err(DataDirError::TooShort {
                variable: "ROSTER_SECRET",
            })
        }
        None => read_or_create(dir, SECRET_FILE, random_hex)?.0,
    };
    Ok(ServerSecret::new(text.into_bytes()))
}

/// The admin token: `ROSTER_ADMIN_TOKEN` when given, else `admin-token` in the data
/// directory; `true` when it was made just now (so it can be shown, once).
pub fn admin_token(dir: &Path, from_env: Option<&str>) -> Result<(String, bool), DataDirError> {
    match from_env {
        Some(token) if token.len() >= SECRET_CHARS_MIN => Ok((token.to_string(), false)),
        Some(_) => Err(DataDirError::TooShort {
            variable: "ROSTER_ADMIN_TOKEN",
        }),
        None => read_or_create(dir, ADMIN_TOKEN_FILE, || format!("ra_{}", random_hex())),
    }
}

/// Whether `dir` holds a Roster log: the files sled writes at its first open. A subcommand that
/// reads the log checks this before opening it, because opening makes an empty one.
pub fn holds_log(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Why a subcommand that reads the log refuses `dir`.
pub fn no_log(dir: &Path) -> DataDirError {
    DataDirError::NoLog(dir.to_path_buf())
}

/// What [`make_private`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// The directory was made now, mode 0700.
    Created,
    /// It was private already.
    Kept,
    /// It let others in, with this mode; it is 0700 now.
    Tightened(u32),
}

/// Makes `dir` (and any missing parent) with mode 0700, or takes group and other permissions
/// away from an existing one: sled's files in it hold invitees' email addresses.
pub fn make_private(dir: &Path) -> Result<Privacy, DataDirError> {
    let cannot = |source| DataDirError::Create {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(metadata) => {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 == 0 {
                return Ok(Privacy::Kept);
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
                |source| DataDirError::MakePrivate {
                    path: dir.to_path_buf(),
                    source,
                },
            )?;
            Ok(Privacy::Tightened(mode))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(cannot)?;
            Ok(Privacy::Created)
        }
        Err(error) => Err(cannot(error)),
    }
}

/// The server secret's file in a data directory.
pub fn secret_path(dir: &Path) -> PathBuf {
    dir.join(SECRET_FILE)
}

/// Copies the server secret of the data directory `from` into `to` (mode 0600, created
/// exclusively, synced with its directory), so the codes of a log moved from `from` to `to`
/// keep working. A secret already in `to` is kept if it is the same, refused otherwise.
pub fn copy_secret(from: &Path, to: &Path) -> Result<(), DataDirError> {
    let secret = read_secret(&secret_path(from))?;
    let target = secret_path(to);
    match std::fs::read(&target) {
        Ok(existing) if existing == secret => return Ok(()),
        Ok(_) => return Err(DataDirError::AnotherSecret(target)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DataDirError::Read {
                path: target,
                source,
            })
        }
    }
    make_private(to)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(|source| DataDirError::Create {
            path: target.clone(),
            source,
        })?;
    file.write_all(&secret)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::File::open(to)?.sync_all())
        .map_err(|source| DataDirError::Write {
            path: target,
            source,
        })
}

/// Checks that [`copy_secret`] from `from` to `to` would succeed, before anything is written.
pub fn check_secret_copy(from: &Path, to: &Path) -> Result<(), DataDirError> {
    let secret = read_secret(&secret_path(from))?;
    match std::fs::read(secret_path(to)) {
        Ok(existing) if existing != secret => Err(DataDirError::AnotherSecret(secret_path(to))),
        _ => Ok(()),
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, DataDirError> {
    let secret = std::fs::read(path).map_err(|source| DataDirError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if secret.trim_ascii().is_empty() {
        return Err(DataDirError::Empty(path.to_path_buf()));
    }
    Ok(secret)
}
