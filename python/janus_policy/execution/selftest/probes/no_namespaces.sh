# Each attempt prints "what<TAB>exit status".
unshare -U true 2>/dev/null; printf 'unshare -U\t%s\n' "$?"
unshare -Ur true 2>/dev/null; printf 'unshare -Ur\t%s\n' "$?"
unshare -m true 2>/dev/null; printf 'unshare -m\t%s\n' "$?"
mount -t tmpfs x /tmp 2>/dev/null; printf 'mount -t tmpfs x /tmp\t%s\n' "$?"
