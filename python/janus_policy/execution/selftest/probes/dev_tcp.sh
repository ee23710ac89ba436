# bash only: /dev/tcp is bash's own. $1: the port of the host's test listener on 127.0.0.1.
for t in "127.0.0.1/$1" 1.1.1.1/53; do
    if (exec 3<>"/dev/tcp/$t") 2>/dev/null; then echo "$t CONNECTED"; else echo "$t refused"; fi
done
