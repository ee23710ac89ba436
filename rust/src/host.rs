//! The few mounts made on the host for a sandbox: its scratch filesystem
//! (work dir, /tmp and /dev/shm share one size-limited tmpfs) and read-only
//! paths bound by descriptor, so that what is shown is what was checked and
//! the sandbox uid never has to walk the path itself.

use std::ffi::CString;
use std::io;

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A tmpfs at `target` of at most `size` bytes and `inodes` files, its root
/// owned by `owner` with mode 0700; nothing on it is setuid or a device.
pub fn mount_scratch(target: &str, size: u64, inodes: u64, owner: (u32, u32)) -> io::Result<()> {
    let t = cstr(target)?;
    let data = cstr(&format!(
        "size={size},nr_inodes={inodes},mode=0700,uid={},gid={}",
        owner.0, owner.1
    ))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    cvt(unsafe {
        libc::mount(
            c"janus-scratch".as_ptr(),
            t.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
}

/// Binds what `fd` (an O_PATH descriptor) names onto `target`, read-only and
/// without setuid or devices when `readonly`. Through /proc/self/fd the path
/// is not walked again, so no link swapped in since it was opened is followed.
pub fn bind_fd(fd: i32, target: &str, readonly: bool) -> io::Result<()> {
    let src = cstr(&format!("/proc/self/fd/{fd}"))?;
    let t = cstr(target)?;
    let null: *const libc::c_char = std::ptr::null();
    // SAFETY: NUL-terminated strings that outlive the calls; null data is allowed.
    unsafe {
        cvt(libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            null,
            libc::MS_BIND | libc::MS_REC,
            null.cast(),
        ))?;
        if readonly {
            if let Err(e) = cvt(read_only_tree(&t)) {
                libc::umount2(t.as_ptr(), libc::MNT_DETACH);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Makes the mount at `path` and every mount beneath it read-only, nosuid
/// and nodev (mount_setattr with AT_RECURSIVE): a bind remount reaches the
/// top mount only. Raw syscalls only, so the forked child may call it too;
/// returns the syscall's result.
pub fn read_only_tree(path: &CString) -> libc::c_int {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` a live struct of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as libc::c_int
    }
}

/// Detaches the mount at `target` and everything mounted beneath it.
pub fn detach(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    cvt(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) })
}
