#!/usr/bin/env bash
# Prints fresh keys for a split Worktruck deployment as KEY=VALUE lines (an env file):
#   WORKTRUCK_SECRET_KEY            master secret, every process (keep secret)
#   WORKTRUCK_CONTEXT__SIGNING_KEY  Ed25519 seed, gateways only (keep secret)
#   WORKTRUCK_CONTEXT__PUBLIC_KEY   its public key, services (not secret)
# Usage: deploy/gen-keys.sh > worktruck-keys.env   (needs openssl 1.1.1 or newer)
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl genpkey -algorithm ed25519 -out "$dir/ctx.pem" 2>/dev/null
# The DER encodings end with the raw 32-byte seed (PKCS#8) and public key (SPKI).
seed=$(openssl pkey -in "$dir/ctx.pem" -outform DER | tail -c 32 | base64)
public=$(openssl pkey -in "$dir/ctx.pem" -pubout -outform DER | tail -c 32 | base64)
echo "WORKTRUCK_SECRET_KEY=$(openssl rand -base64 32)"
echo "WORKTRUCK_CONTEXT__SIGNING_KEY=$seed"
echo "WORKTRUCK_CONTEXT__PUBLIC_KEY=$public"
