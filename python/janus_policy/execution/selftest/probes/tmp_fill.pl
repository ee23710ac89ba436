for my $i (1 .. 2000) {
    open(my $f, ">", "/tmp/f$i") or die "open $i: $!\n";
    print $f "x" x 4096 or die "write $i: $!\n";
    close $f or die "close $i: $!\n";
}
print "all written\n";
