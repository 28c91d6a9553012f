//! Who a supervised program runs as and what it starts with: `user`, `group`,
//! `supplementary_groups`, `umask`, `env_file`, `pass_env` and `credentials` of `[[process]]`.
//! Names are resolved to ids here, at parse time, so a start and a reload refuse a user that does
//! not exist with the file's line and column.

use super::{ConfigError, Located, SecretSource};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use toml::Spanned;

/// The identity a program's processes (and its health checks and hooks) take before exec.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAs {
    /// The user as written (a name or a number).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// From the user's entry: what `HOME`, `USER`, `LOGNAME` and `SHELL` are set to.
    pub home: String,
    pub name: String,
    pub shell: String,
}

/// What a program starts with besides its identity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Launch {
    pub run_as: Option<RunAs>,
    /// `umask`, e.g. `"077"`. Default 022 (systemd's for services).
    pub umask: Option<u32>,
    /// `env_file`: `KEY=VALUE` lines read at every start (systemd's `EnvironmentFile=`).
    pub env_file: Option<PathBuf>,
    /// `pass_env`: the agent's own variables the program may see, by name. Default none.
    pub pass_env: Vec<String>,
    /// `credentials`: name → where the agent reads it; written into the instance's private
    /// `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`).
    pub credentials: BTreeMap<String, SecretSource>,
}

/// The keys of `[[process]]` this module validates, as read.
pub(super) struct RawLaunch {
    pub user: Option<Spanned<toml::Value>>,
    pub group: Option<Spanned<toml::Value>>,
    pub supplementary_groups: Option<Spanned<Vec<toml::Value>>>,
    pub umask: Option<Spanned<String>>,
    pub env_file: Option<PathBuf>,
    pub pass_env: Vec<String>,
    pub credentials: BTreeMap<String, Spanned<toml::Value>>,
}

pub(super) fn validate(
    raw: RawLaunch,
    field: &dyn Fn(&str) -> String,
    at: &Located,
) -> Result<Launch, ConfigError> {
    let name_or_id = |v: &Spanned<toml::Value>, f: &str| -> Result<String, ConfigError> {
        match v.get_ref() {
            toml::Value::String(s) if !s.is_empty() && !s.contains('\0') => Ok(s.clone()),
            toml::Value::Integer(n) if (0..=i64::from(u32::MAX - 1)).contains(n) => Ok(n.to_string()),
            _ => Err(at.error(Some(v.span()), &format!("{}: a name or a numeric id", field(f)))),
        }
    };
    let mut run_as = match &raw.user {
        None => None,
        Some(u) => Some(
            user(&name_or_id(u, "user")?)
                .map_err(|e| at.error(Some(u.span()), &format!("{}: {e}", field("user"))))?,
        ),
    };
    if let Some(g) = &raw.group {
        let gid = group(&name_or_id(g, "group")?)
            .map_err(|e| at.error(Some(g.span()), &format!("{}: {e}", field("group"))))?;
        let Some(r) = run_as.as_mut() else {
            return Err(at.error(Some(g.span()), &format!("{}: needs `user` too", field("group"))));
        };
        r.gid = gid;
    }
    if let Some(list) = &raw.supplementary_groups {
        let Some(r) = run_as.as_mut() else {
            return Err(
                at.error(Some(list.span()), &format!("{}: needs `user` too", field("supplementary_groups")))
            );
        };
        r.groups = Vec::new();
        for g in list.get_ref() {
            let text = match g {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) if *n >= 0 => n.to_string(),
                _ => {
                    return Err(at.error(
                        Some(list.span()),
                        &format!("{}: names or ids", field("supplementary_groups")),
                    ))
                }
            };
            let gid = group(&text).map_err(|e| {
                at.error(Some(list.span()), &format!("{}: {e}", field("supplementary_groups")))
            })?;
            r.groups.push(gid);
        }
    }
    let umask = match &raw.umask {
        None => None,
        Some(m) => Some(u32::from_str_radix(m.get_ref().trim(), 8).ok().filter(|m| *m <= 0o777).ok_or_else(
            || {
                at.error(
                    Some(m.span()),
                    &format!("{}: an octal mask like \"077\" or \"027\"", field("umask")),
                )
            },
        )?),
    };
    for var in &raw.pass_env {
        if var.is_empty() || var.contains(['=', '\0']) {
            return Err(at.error(None, &format!("{}: `{var}` is not a variable name", field("pass_env"))));
        }
    }
    let mut credentials = BTreeMap::new();
    for (name, source) in raw.credentials {
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name.starts_with('.')
        {
            return Err(at.error(
                Some(source.span()),
                &format!("{}: `{name}` is not a file name (letters, digits, - _ .)", field("credentials")),
            ));
        }
        credentials
            .insert(name.clone(), super::secret_source(source, &field(&format!("credentials.{name}")), at)?);
    }
    Ok(Launch { run_as, umask, env_file: raw.env_file, pass_env: raw.pass_env, credentials })
}

/// A user by name or numeric id, from the system's user database.
fn user(text: &str) -> Result<RunAs, String> {
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = match text.parse::<u32>() {
        // SAFETY: every pointer is valid for the call; the results live in `buf`.
        Ok(uid) => unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) },
        Err(_) => {
            let c = CString::new(text).map_err(|_| "a NUL byte in the name".to_string())?;
            // SAFETY: as above.
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) }
        }
    };
    if rc != 0 || found.is_null() {
        return Err(format!("no user `{text}` on this machine (getent passwd {text})"));
    }
    // SAFETY: getpw*_r filled `pwd` with pointers into `buf`, NUL-terminated.
    let text_of = |p: *const libc::c_char| unsafe {
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Ok(RunAs {
        user: text.to_string(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        groups: Vec::new(),
        home: text_of(pwd.pw_dir),
        name: text_of(pwd.pw_name),
        shell: text_of(pwd.pw_shell),
    })
}

/// A group by name or numeric id.
fn group(text: &str) -> Result<u32, String> {
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 << 10];
    let mut found: *mut libc::group = std::ptr::null_mut();
    let rc = match text.parse::<u32>() {
        // SAFETY: every pointer is valid for the call.
        Ok(gid) => unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) },
        Err(_) => {
            let c = CString::new(text).map_err(|_| "a NUL byte in the name".to_string())?;
            // SAFETY: as above.
            unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) }
        }
    };
    if rc != 0 || found.is_null() {
        return Err(format!("no group `{text}` on this machine (getent group {text})"));
    }
    Ok(grp.gr_gid)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn process(extra: &str) -> Result<Config, String> {
        let text = format!("[[process]]\nname = \"p\"\ncommand = \"true\"\n{extra}");
        Config::parse(&text, Path::new("agent.toml")).map_err(|e| e.0)
    }

    #[test]
    fn users_groups_and_umask_resolve_or_are_refused_with_the_field() {
        let c = process("user = \"nobody\"\numask = \"077\"\n").unwrap();
        let launch = &c.processes[0].launch;
        let run_as = launch.run_as.as_ref().unwrap();
        assert_eq!((run_as.uid, run_as.name.as_str()), (65534, "nobody"));
        assert_eq!(launch.umask, Some(0o077));
        let c = process("user = 0\ngroup = \"root\"\nsupplementary_groups = [0]\n").unwrap();
        assert_eq!(c.processes[0].launch.run_as.as_ref().unwrap().groups, [0]);
        let e = process("user = \"no-such-user-here\"\n").unwrap_err();
        assert!(e.starts_with("agent.toml:4:8: process[p].user: no user `no-such-user-here`"), "{e}");
        let e = process("group = \"root\"\n").unwrap_err();
        assert!(e.contains("needs `user` too"), "{e}");
        let e = process("umask = \"999\"\n").unwrap_err();
        assert!(e.contains("process[p].umask: an octal mask"), "{e}");
    }

    #[test]
    fn a_credential_written_into_the_file_is_refused_without_being_echoed() {
        let e = process("credentials = { db = \"hunter2-literal\" }\n").unwrap_err();
        assert!(e.contains("process[p].credentials.db: a secret's value does not belong"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let c =
            process("credentials = { db = { file = \"/etc/db.pass\" } }\npass_env = [\"LANG\"]\n").unwrap();
        assert_eq!(c.processes[0].launch.credentials.len(), 1);
        let e = process("credentials = { \"../x\" = { file = \"/x\" } }\n").unwrap_err();
        assert!(e.contains("is not a file name"), "{e}");
    }
}
