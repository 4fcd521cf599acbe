#!/usr/bin/env bash
# Writes deploy/certs/site.pem (certificate + key, as HAProxy reads them): a self-signed
# certificate for localhost, to try deploy/compose.yaml with TLS. Put your real one there for
# anything else. Never committed (deploy/certs/ is ignored).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p certs
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" > certs/site.pem
chmod 600 certs/site.pem
echo "wrote deploy/certs/site.pem (self-signed for localhost, 30 days)"
