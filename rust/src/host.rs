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
            let f = libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV;
            if let Err(e) = cvt(libc::mount(null, t.as_ptr(), null, f, null.cast())) {
                libc::umount2(t.as_ptr(), libc::MNT_DETACH);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Detaches the mount at `target` and everything mounted beneath it.
pub fn detach(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    cvt(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) })
}
