# $1: the decimals of the escapee's unique `sleep 1000.N`; the command itself ends
# a second later, while the host is watching the escapee run.
setsid nohup sleep "1000.$1" >/dev/null 2>&1 &
sleep 1
exit 0
