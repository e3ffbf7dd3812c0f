#!/usr/bin/env bash
# The unit tests on the other supported Node lines' pinned versions (22 and 26; `npm test`
# runs the whole suite on the LTS). Each is fetched into vmi's cache like the private LTS
# (nothing if it is there, the sha512 checked) and put first on the tests' PATH only.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r lts others < <(node -p 'const p = require("./package.json").vmiNode;
  [p.lts, ...Object.keys(p.integrity).filter((v) => v !== p.lts)].join(" ")')
for v in $others; do
  bin=$(node scripts/private-node.mjs install "$v")
  echo "vmi: unit tests on Node $v" >&2
  PATH="$bin:$PATH" node node_modules/vitest/vitest.mjs run test/unit
done
