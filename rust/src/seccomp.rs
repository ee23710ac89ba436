//! The seccomp filter applied to every sandboxed command.
//!
//! A deny-list on top of bwrap's namespaces: the syscalls below are the usual
//! kernel attack surface for escapes (ptrace, io_uring, bpf, keyctl, new mounts,
//! nested user namespaces) and terminal injection. It is written as raw classic
//! BPF so the exact program is visible and testable: `program()` returns the
//! bytes bwrap reads from `--add-seccomp-fd`, and the native path loads the same
//! bytes with `seccomp(2)`.

use libc::{c_long, sock_filter};

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

// Offsets into struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_low(i: u32) -> u32 {
    // Little-endian: the low 32 bits of args[i]. Comparing only these is the
    // masking the kernel itself does for `int` arguments (ioctl cmd, socket domain),
    // so 0x1_0000_5412 cannot slip past a TIOCSTI check.
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// x32 syscalls on x86_64 carry this bit; they reach the same kernel code under
/// other numbers, so the whole range is refused.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;
const CLONE_NEWUSER: u32 = 0x1000_0000;
const PERSONALITY_QUERY: u32 = 0xffff_ffff;
const SOCK_TYPE_MASK: u32 = 0xf;
const SOCK_RAW: u32 = 3;
const SOCK_PACKET: u32 = 10;

/// Syscalls refused with EPERM whatever their arguments.
fn denied_syscalls() -> Vec<c_long> {
    let mut v = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_process_madvise,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_fanotify_init,
        libc::SYS_lookup_dcookie,
        libc::SYS_vhangup,
        // Memory the kernel hides even from itself: not for a sandboxed command.
        libc::SYS_memfd_secret,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend_from_slice(&[
        libc::SYS_modify_ldt,
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_ustat,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
    ]);
    v.sort_unstable();
    v.dedup();
    v
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> sock_filter {
    stmt(BPF_RET_K, RET_ERRNO | (e as u32 & 0xffff))
}

/// Appends "if nr == `nr` then run `block` (which must end in a return)".
fn when_syscall(p: &mut Vec<sock_filter>, nr: c_long, block: Vec<sock_filter>) {
    // A BPF jump reaches at most 255 instructions ahead: a longer block would land elsewhere.
    let skip = u8::try_from(block.len()).expect("a seccomp block longer than a jump reaches");
    p.push(jump(BPF_JEQ_K, nr as u32, 0, skip));
    p.extend(block);
}

/// Socket families always allowed, whatever the socket type: local sockets only.
const LOCAL_FAMILIES: [i32; 1] = [libc::AF_UNIX];
/// Allowed only when the profile shares the network (whatever the type: netlink sockets are
/// SOCK_RAW or SOCK_DGRAM by definition). Netlink talks to the kernel about the network and,
/// for some protocols, the whole host (audit, uevents): it belongs to the network.
const KERNEL_FAMILIES: [i32; 1] = [libc::AF_NETLINK];
/// Allowed only when the profile shares the network, and never raw.
const NET_FAMILIES: [i32; 2] = [libc::AF_INET, libc::AF_INET6];

/// socket(domain, type, _) and socketpair(domain, type, _, _): local families pass, and with
/// the network netlink; then raw and packet sockets get EPERM; IPv4/IPv6 pass only with the
/// network; the rest get EAFNOSUPPORT.
fn socket_block(network: bool) -> Vec<sock_filter> {
    let allow = |b: &mut Vec<sock_filter>, fams: &[i32]| {
        for &fam in fams {
            b.push(jump(BPF_JEQ_K, fam as u32, 0, 1));
            b.push(stmt(BPF_RET_K, RET_ALLOW));
        }
    };
    let mut b = vec![stmt(BPF_LD_W_ABS, off_arg_low(0))];
    allow(&mut b, &LOCAL_FAMILIES);
    if network {
        allow(&mut b, &KERNEL_FAMILIES);
    }
    b.extend([
        stmt(BPF_LD_W_ABS, off_arg_low(1)),
        stmt(BPF_AND_K, SOCK_TYPE_MASK),
        jump(BPF_JEQ_K, SOCK_RAW, 0, 1),
        errno(libc::EPERM),
        jump(BPF_JEQ_K, SOCK_PACKET, 0, 1),
        errno(libc::EPERM),
    ]);
    if network {
        b.push(stmt(BPF_LD_W_ABS, off_arg_low(0)));
        allow(&mut b, &NET_FAMILIES);
    }
    b.push(errno(libc::EAFNOSUPPORT));
    b
}

/// ioctl(fd, cmd, _): no pushing bytes into a terminal's input queue.
fn ioctl_block() -> Vec<sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, off_arg_low(1)),
        jump(BPF_JEQ_K, TIOCSTI, 0, 1),
        errno(libc::EPERM),
        jump(BPF_JEQ_K, TIOCLINUX, 0, 1),
        errno(libc::EPERM),
        stmt(BPF_RET_K, RET_ALLOW),
    ]
}

/// clone(flags, ...): no new user namespaces (x86_64 and aarch64 both pass
/// flags first). clone3 passes them in memory seccomp cannot read, so it gets
/// ENOSYS and the C library falls back to clone.
fn clone_block() -> Vec<sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, off_arg_low(0)),
        jump(BPF_JSET_K, CLONE_NEWUSER, 0, 1),
        errno(libc::EPERM),
        stmt(BPF_RET_K, RET_ALLOW),
    ]
}

/// personality(persona): only the query (0xffffffff) passes; setting a persona can turn off
/// address-space randomisation (ADDR_NO_RANDOMIZE) or change how the kernel reads the program.
fn personality_block() -> Vec<sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, off_arg_low(0)),
        jump(BPF_JEQ_K, PERSONALITY_QUERY, 1, 0),
        errno(libc::EPERM),
        stmt(BPF_RET_K, RET_ALLOW),
    ]
}

/// The whole filter as kernel `sock_filter` instructions.
pub fn filter(network: bool) -> Vec<sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(errno(libc::ENOSYS));
    }
    for nr in denied_syscalls() {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        p.push(errno(libc::EPERM));
    }
    when_syscall(&mut p, libc::SYS_socket, socket_block(network));
    when_syscall(&mut p, libc::SYS_socketpair, socket_block(network));
    when_syscall(&mut p, libc::SYS_personality, personality_block());
    when_syscall(&mut p, libc::SYS_ioctl, ioctl_block());
    when_syscall(&mut p, libc::SYS_clone, clone_block());
    p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(errno(libc::ENOSYS));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p
}

/// The filter serialized as bwrap reads it (an array of `struct sock_filter`).
pub fn program_bytes(network: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for ins in filter(network) {
        out.extend_from_slice(&ins.code.to_ne_bytes());
        out.push(ins.jt);
        out.push(ins.jf);
        out.extend_from_slice(&ins.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_is_well_formed() {
        for network in [false, true] {
            let p = filter(network);
            assert!(p.len() < 4096, "BPF_MAXINSNS");
            assert_eq!(program_bytes(network).len(), p.len() * 8);
            let last = p.last().unwrap();
            assert_eq!((last.code, last.k), (BPF_RET_K, RET_ALLOW));
            // Every jump lands inside the program.
            for (i, ins) in p.iter().enumerate() {
                if ins.code & 0x07 == 0x05 {
                    assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < p.len());
                }
            }
        }
    }
}
