#!/bin/sh
# Render conf/nginx.conf for docker-compose.yml: its example upstream servers
# (127.0.0.1:8081...) are replaced by the compose services listed in
# $PUBSUB_UPSTREAMS ("pubsub1:8080 pubsub2:8080"); nothing else changes.
#
#   PUBSUB_UPSTREAMS="pubsub1:8080 pubsub2:8080" sh deploy/render-nginx.sh TEMPLATE OUTPUT
#
# tests/test_compose.py runs this very script and checks that the rendered
# upstream block names exactly the server services of docker-compose.yml.
set -eu
template=${1:-/etc/pubsub/nginx.conf}
output=${2:-/etc/nginx/nginx.conf}
: "${PUBSUB_UPSTREAMS:?list the server services as host:port, separated by spaces}"

servers=""
for upstream in $PUBSUB_UPSTREAMS; do
    servers="${servers}        server ${upstream} max_fails=3 fail_timeout=5s;\n"
done

awk -v servers="$servers" '
    /^[ \t]*server 127\.0\.0\.1:[0-9]+/ { if (!done) { printf "%s", servers; done = 1 } next }
    { print }
    END { if (!done) { print "render-nginx: no upstream server lines in the template" > "/dev/stderr"; exit 1 } }
' "$template" > "$output"
