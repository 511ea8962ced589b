#!/usr/bin/env bash
# VS Code for the end-to-end tests (test/e2e): builds the native modules of the VS Code inside the code-server npm
# package (its install script is blocked by allowScripts; run here once, skipped when already built), packages the
# extension as a .vsix and installs it into an isolated extensions folder (.gpurun-test/vscode/extensions).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cs=node_modules/code-server
node24="$root/node_modules/node/bin"
[ -x "$node24/node" ] || { echo "40-vscode: node_modules/node (Node 24) is missing; run npm ci first" >&2; exit 1; }
node24_version=$("$node24/node" -v)

# A marker written after a complete build; VS Code's node_modules alone may be a half-finished install.
marker="$cs/lib/vscode/.gpurun-postinstall-done"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$node24_version" ]; then
  echo "40-vscode: code-server already built for $node24_version"
else
  echo "40-vscode: building code-server's native modules with Node $node24_version (a few minutes)"
  (
    cd "$cs"
    PATH="$node24:$PATH" \
    npm_config_nodedir=/usr \
    npm_config_user_agent="npm/$(npm -v) node/$node24_version linux x64" \
      sh postinstall.sh
  )
  echo "$node24_version" > "$marker"
fi

echo "40-vscode: packaging the extension"
npm run --silent package
vsix=$(ls -t gpurun-*.vsix | head -1)
ext_dir="$root/.gpurun-test/vscode/extensions"
mkdir -p "$ext_dir"
PATH="$node24:$PATH" node "$cs/out/node/entry.js" --extensions-dir "$ext_dir" --user-data-dir "$root/.gpurun-test/vscode/user-data" --install-extension "$vsix" --force
echo "40-vscode: installed $vsix into $ext_dir"
