#!/usr/bin/env bash
# The sources of commit REV (default HEAD~1) in DEST (default .basetree/;
# git-ignored locally), for an A/B of two builds in one device call: carry ".basetree"
# and run benchmarks/run_h200.sh with STAGES="basebuild build ..." and
# BASE_TREE=.basetree; then PROJ_PYTHONPATH=/tmp/projbase:/tmp/site makes a
# stage time the base build (e.g. as a setting of candidates_ab.sh). Only what
# the build needs travels (no benchmarks/results, no tests).
#   bash benchmarks/tools/make-base-tree.sh e90dc1f
# A second candidate tree: make-base-tree.sh REV2 .basetree2, carry both and
# BASE_TREE=".basetree .basetree2" (the second builds into /tmp/projbase2).
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:-HEAD~1}
dest=${2:-.basetree}
case $dest in .basetree*) ;; *) echo "DEST must start with .basetree (git-ignored)"; exit 1 ;; esac
grep -qxF '/.basetree*/' .git/info/exclude 2>/dev/null || echo '/.basetree*/' >> .git/info/exclude
rm -rf "$dest" && mkdir -p "$dest"
git archive "$(git rev-parse "$rev")" -- pyproject.toml CMakeLists.txt README.md csrc python metal sim \
  | tar -x -C "$dest"
git rev-parse "$rev" > "$dest/REVISION"
du -sh "$dest"
