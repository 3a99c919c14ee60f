#!/bin/bash
# Start-up of train.py with a cold and a warm compilation cache: 2 processes
# (127.0.0.1, one XLA:CPU device each, Gloo) and 1 process; the tiny test
# config, 2 steps, one checkpoint and one evaluation, so the wall time is
# nearly all start-up. Figures: benchmarks/README.md, "Several hosts on paper".
#   bash benchmarks/multihost_startup.sh
set -u
cd "$(dirname "$0")/.."
export XLA_FLAGS="--xla_force_host_platform_device_count=1" JAX_PLATFORMS=cpu
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ARGS="--config tests/tiny_config.py --config.cpu_devices=0 --config.num_train_steps=2
      --config.eval_every_steps=2 --config.checkpoint_every_steps=2
      --config.compilation_cache_dir=$TMP/cache"
for n in 2 1; do
  rm -rf "$TMP/cache"
  for state in cold warm; do
    work="$TMP/run_${n}_$state"
    port=$((30000 + RANDOM % 20000))
    t0=$(date +%s.%N)
    if [ "$n" = 2 ]; then
      for i in 0 1; do
        timeout 600 python3 train.py $ARGS --workdir "$work" --multihost \
            --coordinator_address=127.0.0.1:$port --num_processes=2 \
            --process_id=$i > "$work.p$i.log" 2>&1 &
      done
      wait
    else
      timeout 600 python3 train.py $ARGS --workdir "$work" > "$work.log" 2>&1
    fi
    took=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
    grep -qh '^final:' "$work".*log || { echo "FAILED: see $work*.log"; trap - EXIT; exit 1; }
    echo "$n process(es), $state cache: $took s"
  done
done
