#!/bin/sh
# shard.sh SUITE ARGS...: runs a Catch2 suite with ARGS and one seed shared by every shard of a ctest
# run: KFA_TEST_SEED, else the ctest process's id (this shell's parent), so each run draws fresh inputs.
exec "$@" --rng-seed "${KFA_TEST_SEED:-$PPID}"
