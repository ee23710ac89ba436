# $ARGV[0]: this architecture's number of ptrace.
my $ptrace = $ARGV[0];
my ($PTRACE_TRACEME, $PTRACE_ATTACH) = (0, 16);
r("PTRACE_TRACEME", syscall($ptrace, $PTRACE_TRACEME, 0, 0, 0) == 0);
r("PTRACE_ATTACH to parent", syscall($ptrace, $PTRACE_ATTACH, getppid(), 0, 0) == 0);
