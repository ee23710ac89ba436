# One line per argument: PATH (write a file), mkdir:PATH, append:PATH, read:PATH
# (prints the content when it opens), exists:PATH, symlink:LINK=TARGET.
for my $p (@ARGV) {
    if ($p =~ /^mkdir:(.*)/) { r($p, mkdir $1) }
    elsif ($p =~ /^symlink:([^=]*)=(.*)/) { r($p, symlink $2, $1) }
    elsif ($p =~ /^append:(.*)/) { r($p, open(my $f, ">>", $1)) }
    elsif ($p =~ /^read:(.*)/) { my $ok = open(my $f, "<", $1); r($p, $ok); print <$f> if $ok }
    elsif ($p =~ /^exists:(.*)/) { r($p, -e $1) }
    else { my $ok = open(my $f, ">", $p); $ok = print $f "janus selftest\n" if $ok; r($p, $ok) }
}
