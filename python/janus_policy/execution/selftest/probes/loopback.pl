# $ARGV[0]: the port of the host's test listener on 127.0.0.1.
use Socket;
$SIG{ALRM} = sub { print "HUNG\n"; exit 3 }; alarm 5;
if (!socket(my $s, AF_INET, SOCK_STREAM, 0)) { r("socket", 0) }
else { r("connect", connect($s, pack_sockaddr_in($ARGV[0], inet_aton("127.0.0.1")))) }
