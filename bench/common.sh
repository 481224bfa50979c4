# bench/common.sh - sourced first by the bench scripts (bench/X.sh BUILD):
# -u on, the working directory the repository's top, the build directory
# (the first argument, default build) as an absolute path in BUILD and its
# ringmail in RM.
# shellcheck shell=bash
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
case "$BUILD" in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
# shellcheck disable=SC2034 # RM: for the scripts that source this
RM=$BUILD/ringmail
