//! The bwrap argument vector for a profile.
//!
//! The options reach bwrap through `--args FD` (NUL-separated), so the mounts
//! and the environment values never show up in `ps`; bwrap takes the command
//! itself only from its real argv, after `--`. bwrap is started with an empty
//! environment.

use crate::profile::{MountOp, Profile};

/// File descriptors as the child lays them out before exec'ing bwrap.
pub const ARGS_FD: i32 = 3;
pub const SECCOMP_FD: i32 = 4;
pub const INFO_FD: i32 = 5;

/// Every option for `profile`, without the command.
pub fn options(profile: &Profile) -> Vec<String> {
    let mut a: Vec<String> = Vec::with_capacity(64);
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["--unshare-all"]);
    if profile.network {
        push(&["--share-net"]);
    }
    push(&[
        "--unshare-user",
        "--disable-userns",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--hostname",
        &profile.hostname,
    ]);
    for (k, v) in &profile.env {
        push(&["--setenv", k, v]);
    }
    for op in profile.mount_ops() {
        match op {
            MountOp::RoBind { src, dst, optional } => {
                let flag = if optional {
                    "--ro-bind-try"
                } else {
                    "--ro-bind"
                };
                push(&[flag, &src, &dst]);
            }
            MountOp::RwBind { src, dst } => push(&["--bind", &src, &dst]),
            MountOp::Symlink { target, link } => push(&["--symlink", &target, &link]),
            MountOp::Tmpfs { dst, size } => push(&[
                "--size",
                &size.to_string(),
                "--perms",
                "1777",
                "--tmpfs",
                &dst,
            ]),
            MountOp::Proc { dst } => push(&["--proc", &dst]),
            MountOp::Dev { dst } => push(&["--dev", &dst]),
            MountOp::RemountRo { dst } => push(&["--remount-ro", &dst]),
        }
    }
    push(&[
        "--chdir",
        &profile.workdir,
        "--add-seccomp-fd",
        &SECCOMP_FD.to_string(),
        "--info-fd",
        &INFO_FD.to_string(),
    ]);
    a
}

/// util-linux prlimit(1), used inside the sandbox to set RLIMIT_NPROC.
pub const PRLIMIT: &str = "/usr/bin/prlimit";

/// Whether the command can be started through prlimit(1): the profile shows
/// the host's /usr, and the host has the program.
pub fn can_prlimit(profile: &Profile) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let usr = (String::from("/usr"), String::from("/usr"));
    (profile.ro_binds.contains(&usr) || profile.ro_binds_try.contains(&usr))
        && std::fs::metadata(PRLIMIT)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// bwrap's real argv: the options by descriptor, then the command.
///
/// With `nproc`, the command is started through prlimit(1) instead of getting
/// RLIMIT_NPROC before bwrap: a user namespace records its creator's
/// RLIMIT_NPROC as the cap on *all* processes of that uid on the host, so a
/// limit set before bwrap would be shared with every other process of the
/// sandbox uid (other sandboxes, the user's own) instead of binding this one.
pub fn command_line(
    bwrap: &str,
    program: &str,
    args: &[String],
    nproc: Option<u64>,
) -> Vec<String> {
    let mut a = vec![
        bwrap.to_string(),
        "--args".into(),
        ARGS_FD.to_string(),
        "--".into(),
    ];
    a.extend(command(program, args, nproc));
    a
}

/// What bwrap runs: the command, through prlimit(1) when `nproc` is given.
pub fn command(program: &str, args: &[String], nproc: Option<u64>) -> Vec<String> {
    let mut a = Vec::with_capacity(args.len() + 4);
    if let Some(n) = nproc {
        a.extend([PRLIMIT.to_string(), format!("--nproc={n}:{n}"), "--".into()]);
    }
    a.push(program.into());
    a.extend(args.iter().cloned());
    a
}

/// NUL-separated, as `--args` reads them.
pub fn encode(argv: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in argv {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    out
}
