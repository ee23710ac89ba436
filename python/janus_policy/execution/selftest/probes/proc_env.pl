# Other processes of the sandbox (its init is a copy of the host process under
# the native method) must not hand over the host's environment either.
my $secret = reverse $ARGV[0];  # reversed, so this probe's own argv does not hold it
for my $f (glob("/proc/[0-9]*/environ"), glob("/proc/[0-9]*/cmdline")) {
    next unless open(my $h, "<", $f);
    local $/; my $t = <$h>;
    print "$f\tLEAK\n" if index($t, $secret) >= 0;
    print "$f\treadable\n";
}
