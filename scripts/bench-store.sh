#!/usr/bin/env bash
# Space benchmark of the store through a real mount: what the store takes on disk (du of
# the store directory) against the bytes it holds, over the life cycle of the LLM tier.
# Prints markdown tables. A benchmark, not a test: it never fails on the numbers.
#
#   scripts/bench-store.sh            # 16 rounds of 2 MiB, 10% of older files deleted per round
#   BENCH_ROUNDS=30 BENCH_ROUND_MB=4 scripts/bench-store.sh
#
# Every chunk is first written in the fast codec (zstd) and then rewritten smaller by
# the compactor; the synthetic model (-o test_model) stands in for the language model so
# that a round takes a minute, not hours (the real model codes ~200 bytes/s on 2 cores).
# After round BENCH_STEADY (default 6) each round deletes as many bytes of old files as it
# writes: the steady state. Each row is taken with the daemon idle for 15 s (it gives free
# space back after 10 s of quiet). At the end half of the files are deleted and the
# store is measured after a minute of idle, without unmount or any command.
#
# Environment: BENCH_ROUNDS (16), BENCH_ROUND_MB (2), BENCH_STEADY (6), BENCH_DIR
# (/var/tmp), KEEP_TMP=1, LLMFS_BIN.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=${BENCH_ROUNDS:-16}
ROUND_MB=${BENCH_ROUND_MB:-2}
STEADY=${BENCH_STEADY:-6}
export TMPDIR=${BENCH_DIR:-/var/tmp}
require_fuse
[[ -x $LLMFS_BIN ]] || die "$LLMFS_BIN not built (cargo build --release)"
command -v python3 >/dev/null || ensure_debs python3

make_tmp store-bench
STORE=$LLMFS_TMP/store
MNT=$LLMFS_TMP/mnt
mkdir -p "$MNT"
mount_llmfs "$STORE" "$MNT" "$LLMFS_TMP/daemon.log" test_model,cold_after=0

json() { "$LLMFS_BIN" stats "$MNT" --json "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
du_store() { du -sB1 "$STORE" | cut -f1; }

# Quiet for 15 s, so the daemon has given its free pages back.
settle() {
    json --wait-idle >/dev/null
    sleep 15
}

row() {
    local label=$1 st live meta disk
    st=$(json)
    live=$(field stored_bytes <<<"$st")
    meta=$(field metadata_bytes <<<"$st")
    disk=$(du_store)
    awk -v l="$label" -v w="$written" -v lv="$live" -v m="$meta" -v d="$disk" -v f="$(field files <<<"$st")" \
        'BEGIN { printf "| %s | %.1f | %d | %.2f | %.2f | %.2f | %.2f |\n", l, w/1048576, f, lv/1048576, m/1048576, d/1048576, d/(lv+m) }'
}

settle
empty=$(du_store)
written=0
echo
echo "Store on disk over the LLM tier's life cycle ($(date -u +%Y-%m-%d), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)):"
echo
echo "| after | written MiB | files | live frames MiB | metadata MiB | on disk MiB | on disk / (frames + metadata) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| empty store | 0 | 0 | 0 | 0 | $(awk -v d="$empty" 'BEGIN{printf "%.2f", d/1048576}') | |"
# The text: the vendored corpus, shuffled into new files of varied sizes (every file
# different, so no two chunks are equal).
gen() {
    python3 - "$1" "$2" "$3" <<'EOF'
import os, random, sys, glob
root, nbytes, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
lines = []
for p in sorted(glob.glob(os.environ["CORPUS"] + "/*")):
    if p.endswith((".md", ".jsonl")):
        lines += open(p, encoding="utf-8").read().splitlines(keepends=True)
done = 0
n = 0
while done < nbytes:
    size = int(2 ** rng.uniform(11, 20))  # 2 KiB .. 1 MiB
    out = []
    got = 0
    while got < size:
        l = rng.choice(lines)
        words = l.split(" ")
        if len(words) > 4:
            i = rng.randrange(len(words))
            words[i] = rng.choice(rng.choice(lines).split(" ") or [""])
        l = " ".join(words)
        out.append(l)
        got += len(l.encode())
    name = f"{root}/r{seed}-{n}.log"
    with open(name, "w", encoding="utf-8") as f:
        f.write("".join(out))
    done += got
    n += 1
EOF
}
export CORPUS
CORPUS=$(cd "$(dirname "$0")/../tests/corpus" && pwd)
for r in $(seq 1 "$ROUNDS"); do
    gen "$MNT" $((ROUND_MB << 20)) "$r"
    written=$((written + (ROUND_MB << 20)))
    # Delete 10% of the older files, or as many bytes as were written once steady.
    python3 - "$MNT" "$r" "$STEADY" "$((ROUND_MB << 20))" <<'EOF'
import os, random, sys
mnt, r, steady, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(1000 + r)
old = [f for f in os.listdir(mnt) if not f.startswith(f"r{r}-")]
rng.shuffle(old)
if r > steady:
    gone = 0
    for f in old:
        if gone >= nbytes:
            break
        gone += os.path.getsize(os.path.join(mnt, f))
        os.remove(os.path.join(mnt, f))
else:
    for f in old[: len(old) // 10]:
        os.remove(os.path.join(mnt, f))
EOF
    settle
    row "round $r$([[ $r -gt $STEADY ]] && echo ' (steady)')"
done
python3 - "$MNT" <<'EOF'
import os, random, sys
mnt = sys.argv[1]
files = sorted(os.listdir(mnt))
random.Random(7).shuffle(files)
for f in files[: len(files) // 2]:
    os.remove(os.path.join(mnt, f))
EOF
sleep 60
row "half deleted, 1 min idle"
umount_llmfs
echo
echo "After unmount: $(du_store) bytes on disk."
