#!/usr/bin/env bash
# The sources of commit REV (default HEAD~1) in .basetree/ (git-ignored
# locally), for an A/B of two builds in one device call: carry ".basetree"
# and run benchmarks/run_h200.sh with STAGES="basebuild build ..." and
# BASE_TREE=.basetree; then PROJ_PYTHONPATH=/tmp/projbase:/tmp/site makes a
# stage time the base build (e.g. as a setting of candidates_ab.sh). Only what
# the build needs travels (no benchmarks/results, no tests).
#   bash benchmarks/tools/make-base-tree.sh e90dc1f
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:-HEAD~1}
grep -qx '/.basetree/' .git/info/exclude 2>/dev/null || echo '/.basetree/' >> .git/info/exclude
rm -rf .basetree && mkdir -p .basetree
git archive "$(git rev-parse "$rev")" -- pyproject.toml CMakeLists.txt README.md csrc python metal sim \
  | tar -x -C .basetree
git rev-parse "$rev" > .basetree/REVISION
du -sh .basetree
