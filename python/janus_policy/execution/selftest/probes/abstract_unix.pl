# $ARGV[0]: the name of the host's abstract unix socket (without the leading NUL).
use Socket;
socket(my $s, AF_UNIX, SOCK_STREAM, 0) or do { r("socket", 0); exit };
r("connect", connect($s, pack_sockaddr_un("\0" . $ARGV[0])));
