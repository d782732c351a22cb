#!/usr/bin/env bash
# Installs the package as an application would and checks that it runs: packs it, installs the tarball with
# `npm install --engine-strict` into a new application outside the repository (its dependencies resolved
# afresh, as a user gets them, not from our lock), runs `npx baton --help` there, and checks that no installed
# package asks for a Node.js older than ours allows. Usage: scripts/check-package.sh [--no-build] (--no-build:
# dist/ is up to date: pack it as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

build=yes
if [[ "${1:-}" == "--no-build" ]]; then build=no; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/baton-package-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if [[ "$build" == no ]]; then
  [[ -f dist/cli/main.js ]] || { echo "check-package: dist/ is not built (run without --no-build)" >&2; exit 1; }
  npm pack --ignore-scripts --pack-destination "$work" --json >"$work/pack.json"
else
  # `npm pack` builds first, through the prepack script.
  npm pack --pack-destination "$work" --json >"$work/pack.json"
fi

# What the tarball holds: no tests, sources or data folders.
node --input-type=module - "$work/pack.json" <<'EOF'
import { readFileSync } from 'node:fs';
const [pack] = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const paths = pack.files.map((file) => file.path);
const unwanted = paths.filter((p) => /^(src|test|bench|scripts|\.ci)\/|(^|\/)\.baton\/|\.map$/.test(p));
if (unwanted.length > 0) throw new Error(`the package holds files it should not:\n${unwanted.join('\n')}`);
for (const needed of ['bin/baton.js', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'README.md']) {
  if (!paths.includes(needed)) throw new Error(`the package lacks ${needed}`);
}
console.log(`check-package: ${pack.filename}: ${pack.files.length} files, ${(pack.size / 1000).toFixed(1)} kB packed, ` +
  `${(pack.unpackedSize / 1e6).toFixed(2)} MB unpacked`);
EOF

app="$work/app"
mkdir "$app"
printf '{ "name": "baton-package-check", "private": true, "type": "module" }\n' >"$app/package.json"
cd "$app"
npm install --engine-strict --no-audit --no-fund --prefer-offline "$work"/baton-runtime-*.tgz

help="$(npx --no-install baton --help)"
grep -q '^Usage: baton' <<<"$help" || { echo "check-package: npx baton --help printed:" >&2; echo "$help" >&2; exit 1; }

# --engine-strict checked this Node.js; the engines must also admit the oldest one Baton claims to run on.
node --input-type=module - <<'EOF'
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const require = createRequire(`${process.cwd()}/`);
const semver = require('semver');
const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'));
const oldest = semver.minVersion(lock.packages['node_modules/baton-runtime'].engines.node).version;
const refused = Object.entries(lock.packages)
  .filter(([path, entry]) => path !== '' && entry.engines?.node && !semver.satisfies(oldest, entry.engines.node))
  .map(([path, entry]) => `${path.replace(/^.*node_modules\//, '')}@${entry.version} (node ${entry.engines.node})`);
if (refused.length > 0) throw new Error(`installed packages refuse Node.js ${oldest}:\n${refused.join('\n')}`);
console.log(`check-package: ${Object.keys(lock.packages).length - 1} packages installed; every one admits Node.js ${oldest}; npx baton --help runs`);
EOF
