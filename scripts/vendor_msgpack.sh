#!/usr/bin/env bash
# Refresh web/vendor/msgpack/ from the npm package @msgpack/msgpack (ISC licence): the plain ESM
# build (dist.esm/*.mjs, no bundler needed) and its LICENSE. The version is pinned; bump
# MSGPACK_VERSION, run this script, run `node --test web/tests/` and commit the result.
# Needs npm and access to the npm registry (only when refreshing; the browser never fetches it).
set -euo pipefail
MSGPACK_VERSION="${MSGPACK_VERSION:-3.1.3}"
cd "$(dirname "$0")/.."
dest=web/vendor/msgpack
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "fetching @msgpack/msgpack@$MSGPACK_VERSION"
(cd "$tmp" && npm pack --silent "@msgpack/msgpack@$MSGPACK_VERSION" >/dev/null)
tar -xzf "$tmp"/msgpack-msgpack-"$MSGPACK_VERSION".tgz -C "$tmp"
pkg="$tmp/package"

licence=$(node -e 'console.log(require(process.argv[1]).license)' "$pkg/package.json")
if [ "$licence" != "ISC" ]; then
  echo "unexpected licence '$licence' for @msgpack/msgpack@$MSGPACK_VERSION: review before vendoring" >&2
  exit 1
fi

rm -rf "$dest"
mkdir -p "$dest/utils"
cp "$pkg"/dist.esm/*.mjs "$dest/"
cp "$pkg"/dist.esm/utils/*.mjs "$dest/utils/"
# the vendored files carry no source maps: drop the trailing sourceMappingURL comments
sed -i '/^\/\/# sourceMappingURL=/d' "$dest"/*.mjs "$dest"/utils/*.mjs
cp "$pkg/LICENSE" "$dest/LICENSE"
cat >"$dest/VERSION" <<INFO
@msgpack/msgpack $MSGPACK_VERSION (ISC licence, see LICENSE)
ESM build (dist.esm) copied unchanged except for removed sourceMappingURL comments,
by scripts/vendor_msgpack.sh. Entry point: index.mjs.
INFO
echo "vendored @msgpack/msgpack $MSGPACK_VERSION into $dest ($(ls "$dest" "$dest/utils" | grep -c '\.mjs$') modules)"
