sub r { my ($l, $ok) = @_; my $e = $! + 0; print "$l\t", ($ok ? "OK" : "errno=$e"), "\n" }
# r(label, ok) prints "label<TAB>OK" or "label<TAB>errno=N", N being errno as the call
# left it. Every `_perl` probe starts with this helper, its code on the first line: a
# probe's command line, as the proc-isolated check shows it, is that line.
