#!/usr/bin/env bash
# The TPL search as a new user runs it, with the ranking signal measured against its own noise
# (tiny_search: search.noise_seeds 2). Writes runs/search/results.md; see bench/search_noise.md.
set -euo pipefail
dir=${1:-runs/search_noise}
mkdir -p "$dir" && cd "$dir"
progvid synth data/synth
time progvid search tiny_search --out runs/search
cat runs/search/results.md
