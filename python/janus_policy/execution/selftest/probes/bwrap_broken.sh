#!/bin/sh
# Stands in for a broken bwrap binary: it fails whatever it is asked.
echo 'bwrap: broken on purpose' >&2
exit 1
