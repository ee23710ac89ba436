# @ARGV: setuid-root programs. Prints "PROGRAM<TAB>real effective saved fs uids" of each
# while it is blocked on a full pipe, after exec set its ids.
use Fcntl; use POSIX ();
for my $bin (@ARGV) {
    pipe(my $r, my $w) or die "pipe: $!";
    # Fill the pipe: the program blocks at its first write, after exec set its ids.
    my $fl = fcntl($w, F_GETFL, 0); fcntl($w, F_SETFL, $fl | O_NONBLOCK);
    1 while syswrite($w, "x" x 4096); 1 while syswrite($w, "x");
    fcntl($w, F_SETFL, $fl);
    my $pid = fork;
    if (!$pid) {
        open(STDOUT, ">&", $w); open(STDERR, ">&", $w);
        exec($bin, "--help"); POSIX::_exit(127);
    }
    close $w;
    (my $name = substr((split m{/}, $bin)[-1], 0, 15));
    my ($uid, $state) = ("?", "?");
    for (1 .. 300) {
        open(my $s, "<", "/proc/$pid/status") or last;
        local $/; my $t = <$s>;
        my ($n) = $t =~ /^Name:\t(.*)$/m; ($state) = $t =~ /^State:\t(\S)/m;
        ($uid) = $t =~ /^Uid:\t(.*)$/m;
        last if $n eq $name && $state ne "R";
        select(undef, undef, undef, 0.01);
    }
    print "$bin\t$uid\n";
    kill 9, $pid; waitpid $pid, 0;
}
