use Socket;
$SIG{ALRM} = sub { print "HUNG\n"; exit 3 }; alarm 5;
for (["1.1.1.1:53", AF_INET, sub { pack_sockaddr_in(53, inet_aton("1.1.1.1")) }],
     ["[2606:4700:4700::1111]:53", AF_INET6,
      sub { pack_sockaddr_in6(53, inet_pton(AF_INET6, "2606:4700:4700::1111")) }]) {
    my ($n, $fam, $addr) = @$_;
    if (!socket(my $s, $fam, SOCK_STREAM, 0)) { r("$n socket", 0); next }
    r("$n connect", connect($s, $addr->()));
}
