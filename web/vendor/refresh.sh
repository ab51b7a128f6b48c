#!/usr/bin/env bash
# Refreshes the vendored ES modules in web/static/vendor from npm: one file
# per library, its version in its name (the server serves vendor/ as
# immutable), with its licence beside it. Change a version here, run this
# script, and update the imports in web/static/js/ to the new file names.
set -euo pipefail
cd "$(dirname "$0")/.."
out=static/vendor

HTM=3.1.1        # htm's preact/standalone: Preact + hooks + htm in one ESM file
MARKED=18.3.0    # Markdown to HTML for sent messages (as Element does)
DOMPURIFY=3.5.0  # sanitizer for HTML from other clients
LIVEKIT=2.23.0   # livekit-client for calls, loaded only when a call starts (as clientapi's call test)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() { # name version -> $tmp/name/package
  mkdir -p "$tmp/$1"
  (cd "$tmp/$1" && npm pack --silent "$1@$2" >/dev/null && tar xzf ./*.tgz)
}

rm -f "$out"/*
fetch htm "$HTM"
cp "$tmp/htm/package/preact/standalone.module.js" "$out/preact-htm-$HTM.mjs"
cp "$tmp/htm/package/LICENSE" "$out/preact-htm-$HTM.LICENSE.txt"
# The standalone build bundles Preact (MIT) too.
preact=$(node -e 'console.log(require(process.argv[1]).devDependencies.preact)' "$tmp/htm/package/package.json")
fetch preact "${preact#^}"
{ echo; echo "--- Preact (bundled in htm's preact/standalone) ---"; cat "$tmp/preact/package/LICENSE"; } >>"$out/preact-htm-$HTM.LICENSE.txt"

fetch marked "$MARKED"
cp "$tmp/marked/package/lib/marked.esm.js" "$out/marked-$MARKED.mjs"
cp "$tmp/marked/package/LICENSE" "$out/marked-$MARKED.LICENSE.txt"

fetch dompurify "$DOMPURIFY"
cp "$tmp/dompurify/package/dist/purify.es.mjs" "$out/dompurify-$DOMPURIFY.mjs"
cp "$tmp/dompurify/package/LICENSE" "$out/dompurify-$DOMPURIFY.LICENSE.txt"

fetch livekit-client "$LIVEKIT"
# Self-contained ESM build; its source map is not shipped.
sed '$ s|//# sourceMappingURL=.*$||' "$tmp/livekit-client/package/dist/livekit-client.esm.mjs" >"$out/livekit-client-$LIVEKIT.mjs"
cp "$tmp/livekit-client/package/LICENSE" "$out/livekit-client-$LIVEKIT.LICENSE.txt"

ls -l "$out"
