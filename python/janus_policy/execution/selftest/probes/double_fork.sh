# $1: the decimals of the escapee's unique `sleep 1000.N`; the command itself ends
# once `release` appears in its work dir.
setsid nohup sleep "1000.$1" >/dev/null 2>&1 &
while [ ! -e release ]; do sleep 0.02; done
exit 0
