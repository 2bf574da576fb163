#!/usr/bin/env bash
# Refresh the UI's vendored libraries from the npm registry: the exact
# version below, its LICENSE, and the ES module build the UI imports.
#   scripts/vendor-web.sh            # the pinned version
#   CYTOSCAPE=3.36.0 scripts/vendor-web.sh
# Only the maintainer runs this; `cargo build` embeds what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

CYTOSCAPE=${CYTOSCAPE:-3.35.0}
DEST=web/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "cytoscape@$CYTOSCAPE" >/dev/null)
tar -xzf "$tmp/cytoscape-$CYTOSCAPE.tgz" -C "$tmp"
mkdir -p "$DEST"
cp "$tmp/package/dist/cytoscape.esm.min.mjs" "$DEST/cytoscape.esm.min.mjs"
cp "$tmp/package/LICENSE" "$DEST/cytoscape.LICENSE"
sha=$(sha256sum "$DEST/cytoscape.esm.min.mjs" | cut -d' ' -f1)
cat >"$DEST/VERSIONS" <<TXT
# Vendored by scripts/vendor-web.sh from the npm registry; do not edit.
cytoscape $CYTOSCAPE dist/cytoscape.esm.min.mjs sha256:$sha license:MIT (cytoscape.LICENSE)
TXT
echo "vendored cytoscape $CYTOSCAPE into $DEST"
