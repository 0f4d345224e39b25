#!/usr/bin/env bash
# A local S3-compatible server (moto's) for trying s3:// table locations by
# hand: `scripts/s3-server.sh [PORT]` runs it in the foreground on
# 127.0.0.1 and prints the environment a driver or executor needs. The tests
# start their own server; this script is not needed for them.
set -euo pipefail
port="${1:-9000}"
if ! moto_server --help >/dev/null 2>&1; then
    echo "moto_server not found: python3 -m pip install 'moto[server]'" >&2
    exit 1
fi
cat <<ENV
# In another shell (create a bucket first: curl -X PUT http://127.0.0.1:$port/BUCKET):
export AWS_ENDPOINT=http://127.0.0.1:$port
export AWS_ALLOW_HTTP=true
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
ENV
exec moto_server -H 127.0.0.1 -p "$port"
