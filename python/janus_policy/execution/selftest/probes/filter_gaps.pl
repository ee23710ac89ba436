# @ARGV: name=number for each syscall this architecture has that perl has no
# wrapper for (personality, modify_ldt, memfd_secret); a missing one is not tried.
use Socket;
my %nr = map { split /=/, $_, 2 } @ARGV;
# What the filter must refuse.
r("socketpair AF_INET", socketpair(my $a, my $b, AF_INET, SOCK_STREAM, 0));
r("socket AF_NETLINK", socket(my $n, 16, SOCK_RAW, 0));
r("socket AF_NETLINK dgram", socket(my $m, 16, SOCK_DGRAM, 0));
r("personality ADDR_NO_RANDOMIZE", syscall($nr{personality}, 0x0040000) != -1)
    if exists $nr{personality};
r("modify_ldt", syscall($nr{modify_ldt}, 0, 0, 0) != -1) if exists $nr{modify_ldt};
r("memfd_secret", syscall($nr{memfd_secret}, 0) != -1) if exists $nr{memfd_secret};
# The harmless forms, which must still work.
r("socketpair AF_UNIX", socketpair(my $c, my $d, AF_UNIX, SOCK_STREAM, 0));
r("personality query", syscall($nr{personality}, 0xffffffff) != -1) if exists $nr{personality};
