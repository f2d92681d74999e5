//! `vigil passwd`: manage a Mosquitto-compatible password file, with
//! `mosquitto_passwd`'s flags. Writes atomically (a temporary file in the same
//! directory, synced, then renamed over the old one) with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use vigil_broker::auth::{HashKind, PasswordFileText, PasswordHash};

/// Flags of `vigil passwd` (those of `mosquitto_passwd`).
#[derive(Debug, Args)]
#[command(
    override_usage = "vigil passwd [-H HASH] [-I N] [-c | -D] FILE USER\n       \
                      vigil passwd [-H HASH] [-I N] [-c] -b FILE USER PASSWORD\n       \
                      vigil passwd [-H HASH] [-I N] -U FILE"
)]
pub(crate) struct PasswdArgs {
    /// Create a new password file (an existing one is overwritten).
    #[arg(short = 'c', conflicts_with_all = ["delete", "update"])]
    create: bool,
    /// Batch mode: the password is given on the command line.
    #[arg(short = 'b', conflicts_with_all = ["delete", "update"])]
    batch: bool,
    /// Delete USER from the file.
    #[arg(short = 'D', id = "delete")]
    delete: bool,
    /// Hash every plain-text password of a `user:password` file in place.
    #[arg(short = 'U', id = "update", conflicts_with = "delete")]
    update: bool,
    /// Hash to write: argon2id (Mosquitto 2.1's default), sha512-pbkdf2
    /// (what Mosquitto 2.0 reads; 101 iterations), sha512 (1.6 and earlier),
    /// scram-sha-256 / scram-sha-512 (MQTT 5 SCRAM logins, and plain ones;
    /// 4096 iterations; vigil only).
    #[arg(short = 'H', value_enum, default_value = "argon2id")]
    hash: HashArg,
    /// Iterations: PBKDF2 rounds for sha512-pbkdf2 and scram-*, time cost for argon2id.
    #[arg(short = 'I', value_name = "N")]
    iterations: Option<u32>,
    /// The password file.
    file: PathBuf,
    /// The user to add, change or delete.
    user: Option<String>,
    /// The password (with -b only).
    password: Option<String>,
}

/// `-H` values, named as `mosquitto_passwd` names them.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum HashArg {
    /// `$argon2id$...` (PHC).
    Argon2id,
    /// `$7$iterations$salt$hash`.
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
    /// `$6$salt$hash`.
    Sha512,
    /// `$scram-sha-256$i=N$salt$StoredKey$ServerKey` (MQTT 5 SCRAM-SHA-256).
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// `$scram-sha-512$...` (MQTT 5 SCRAM-SHA-512).
    #[value(name = "scram-sha-512")]
    ScramSha512,
}

impl From<HashArg> for HashKind {
    fn from(h: HashArg) -> HashKind {
        match h {
            HashArg::Argon2id => HashKind::Argon2id,
            HashArg::Sha512Pbkdf2 => HashKind::Sha512Pbkdf2,
            HashArg::Sha512 => HashKind::Sha512,
            HashArg::ScramSha256 => HashKind::ScramSha256,
            HashArg::ScramSha512 => HashKind::ScramSha512,
        }
    }
}

/// Runs `vigil passwd`.
pub(crate) fn run(args: PasswdArgs) -> anyhow::Result<std::process::ExitCode> {
    let kind = HashKind::from(args.hash);
    let hash = |password: &[u8]| -> anyhow::Result<PasswordHash> {
        PasswordHash::generate(kind, password, args.iterations).map_err(anyhow::Error::from)
    };
    if args.update {
        if args.user.is_some() {
            bail!("-U takes only the file: vigil passwd -U FILE");
        }
        let mut text = read(&args.file)?;
        let n = text
            .hash_plain_text(|pw| PasswordHash::generate(kind, pw, args.iterations))
            .context("cannot hash a password")?;
        write_atomically(&args.file, &text.render())?;
        eprintln!("{n} password(s) hashed in {}", args.file.display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let Some(user) = args.user.as_deref() else {
        bail!("a user name is needed: vigil passwd FILE USER (see --help)");
    };
    check_user(user)?;
    if args.password.is_some() && !args.batch {
        bail!("a password on the command line needs -b (batch mode)");
    }
    let mut text = if args.create {
        PasswordFileText::default()
    } else {
        read(&args.file)?
    };
    if args.delete {
        if !text.delete(user) {
            bail!("user {user:?} is not in {}", args.file.display());
        }
    } else {
        let password = match (&args.password, args.batch) {
            (Some(p), _) => p.clone(),
            (None, true) => bail!("-b needs the password: vigil passwd -b FILE USER PASSWORD"),
            (None, false) => prompt_twice()?,
        };
        text.set(user, &hash(password.as_bytes())?);
    }
    write_atomically(&args.file, &text.render())?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn check_user(user: &str) -> anyhow::Result<()> {
    if user.is_empty() || user.contains(':') || user.contains(['\n', '\r']) {
        bail!("invalid user name {user:?}: it must be non-empty and hold no ':' or line break");
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<PasswordFileText> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read password file {} (use -c to create it)",
            path.display()
        )
    })?;
    Ok(PasswordFileText::new(&text))
}

/// Asks for the password twice, without echo, as `mosquitto_passwd` does.
fn prompt_twice() -> anyhow::Result<String> {
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let second =
        rpassword::prompt_password("Reenter password: ").context("cannot read the password")?;
    if first != second {
        bail!("passwords do not match");
    }
    Ok(first)
}

/// Writes `text` to a temporary file beside `path` (mode 0600), syncs it
/// and renames it over `path`: a crash leaves the old file or the new one,
/// never half of one, and the hashes are never readable by others.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write password file {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_with_colons_or_newlines_are_refused() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("a b").is_ok());
        for bad in ["", "a:b", "a\nb"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
    }
}
