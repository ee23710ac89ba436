# @ARGV: this architecture's numbers of unshare, clone and mount.
use POSIX ();
my ($unshare, $clone, $mount) = @ARGV;
my ($CLONE_NEWNS, $CLONE_NEWUSER, $SIGCHLD) = (0x0002_0000, 0x1000_0000, 17);
r("unshare(CLONE_NEWUSER)", syscall($unshare, $CLONE_NEWUSER) == 0);
r("unshare(CLONE_NEWNS)", syscall($unshare, $CLONE_NEWNS) == 0);
my $pid = syscall($clone, $CLONE_NEWUSER | $SIGCHLD, 0, 0, 0, 0);
POSIX::_exit(0) if $pid == 0;
r("clone(CLONE_NEWUSER)", $pid > 0); waitpid($pid, 0) if $pid > 0;
my ($src, $dst, $fs) = ("x", "/tmp", "tmpfs");  # syscall() wants writable strings
r("mount(tmpfs)", syscall($mount, $src, $dst, $fs, 0, 0) == 0);
