use Socket;
r("AF_INET/SOCK_RAW/ICMP", socket(my $a, AF_INET, SOCK_RAW, 1));
r("AF_INET6/SOCK_RAW/ICMPV6", socket(my $b, AF_INET6, SOCK_RAW, 58));
r("AF_PACKET/SOCK_RAW", socket(my $c, 17, SOCK_RAW, 0x0300));
r("AF_PACKET/SOCK_DGRAM", socket(my $d, 17, SOCK_DGRAM, 0x0300));
r("AF_INET/SOCK_PACKET", socket(my $e, AF_INET, 10, 0x0300));
