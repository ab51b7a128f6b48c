#!/usr/bin/env bash
# ss-bench.sh: one sliding sync scenario of tessera-load against a fresh
# Tessera on this host.
#
# Builds tessera (-tags sqlite_fts5) and tessera-load from this tree, starts
# tessera on 127.0.0.1 (fresh data directory, rate limits off, logging at
# warn), runs `tessera-load SCENARIO FLAGS...` against it RUNS times (the
# first after a warm-up run when WARMUP=1), gives ss-conns the server's
# -server-pid, prints each run's JSON line and the server's CPU time in its
# measured phase, and stops the server. Linux only (it reads /proc).
#
# usage: docs/ss-bench.sh SCENARIO [FLAGS...]
#   docs/ss-bench.sh ss-initial -rooms 1000        RUNS=3 by default: three measured runs, each with
#                                                  its own user and rooms, on one server
#   docs/ss-bench.sh ss-fanout -clients 50
#   docs/ss-bench.sh ss-conns -conns 1000
#   RUNS=5 WARMUP=1 docs/ss-bench.sh ss-fanout     five measured runs after an unmeasured one
#   KEEP=1 docs/ss-bench.sh ...                    keep the work directory (binaries, config, logs)
#   TESSERA=/path/to/tessera docs/ss-bench.sh ...  use that server binary instead of building one
#   DEADLINE=60m docs/ss-bench.sh ss-initial -rooms 5000    tessera-load's -deadline (default 30m)
set -euo pipefail

if (($# < 1)) || [[ $1 != ss-* ]]; then
	echo "usage: $0 ss-initial|ss-fanout|ss-conns [FLAGS...]" >&2
	exit 2
fi
scenario=$1
shift
RUNS=${RUNS:-3}
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-ss.XXXXXX")
server_pid=
load_pid=
cleanup() {
	if [[ -n $load_pid ]] && kill -0 "$load_pid" 2>/dev/null; then kill "$load_pid"; fi
	if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid"
		wait "$server_pid" 2>/dev/null || true
	fi
	if [[ -z ${KEEP:-} ]]; then rm -rf "$work"; else echo "work directory kept: $work" >&2; fi
}
trap cleanup EXIT

# ss-conns holds one connection per long-poll on each side.
need=4096
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $need ]]; then
	ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

echo "ss-bench: building into $work" >&2
if [[ -n ${TESSERA:-} ]]; then
	cp "$TESSERA" "$work/tessera"
else
	go build -tags sqlite_fts5 -o "$work/tessera" ./cmd/tessera
fi
go build -o "$work/tessera-load" ./cmd/tessera-load

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z ${PORT:-} ]]; then
	for _ in $(seq 1 100); do
		PORT=$((20000 + RANDOM % 40000))
		if port_free "$PORT"; then break; fi
	done
fi
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$work/tessera" generate-config -server-name localhost -data-dir "$work/data" \
	-listen "127.0.0.1:$PORT" -registration-shared-secret "$secret" -o "$work/tessera.yaml" >/dev/null
sed -i -e '/^rate_limits:/,/^[a-z]/ s/^  enabled: true$/  enabled: false/' \
	-e '/^logging:/,/^[a-z]/ s/^  level: .*/  level: warn/' "$work/tessera.yaml"
grep -q '^  enabled: false$' "$work/tessera.yaml" && grep -q '^  level: warn$' "$work/tessera.yaml" || {
	echo "ss-bench: could not edit the generated config" >&2
	exit 1
}

"$work/tessera" run -config "$work/tessera.yaml" >"$work/server.log" 2>&1 &
server_pid=$!
hs="http://127.0.0.1:$PORT"
for i in $(seq 1 100); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
	if ! kill -0 "$server_pid" 2>/dev/null || [[ $i == 100 ]]; then
		echo "ss-bench: the server did not start; its log:" >&2
		cat "$work/server.log" >&2
		exit 1
	fi
	sleep 0.1
done
echo "ss-bench: server pid $server_pid on $hs" >&2

clk_tck=$(getconf CLK_TCK)
# utime and stime are fields 14 and 15 of /proc/PID/stat; the command name
# (field 2) may hold spaces, so count from after its closing parenthesis.
cpu_ticks() { sed 's/^.*) //' "/proc/$server_pid/stat" | awk '{print $12 + $13}'; }

extra=()
if [[ $scenario == ss-conns ]]; then extra=(-server-pid "$server_pid"); fi
status=0
for i in $(seq $((${WARMUP:-0} > 0 ? 0 : 1)) "$RUNS"); do
	label="run $i"
	if ((i == 0)); then label="warm-up"; fi
	echo "ss-bench: $label: tessera-load $scenario $*" >&2
	"$work/tessera-load" -hs "$hs" -shared-secret "$secret" -deadline "${DEADLINE:-30m}" \
		"$scenario" "$@" "${extra[@]}" >"$work/run$i.out" 2>"$work/run$i.err" &
	load_pid=$!
	# The server's CPU time from the start of the measured phase (the
	# tool's "measuring:" or "ss-conns: begin" line) to the end of the run:
	# unlike latency, other processes on the host do not inflate it (much).
	cpu0=
	while kill -0 "$load_pid" 2>/dev/null; do
		if [[ -z $cpu0 ]] && grep -qE '^(measuring:|ss-conns: begin)' "$work/run$i.err"; then cpu0=$(cpu_ticks); fi
		sleep 0.05
	done
	cpu1=$(cpu_ticks)
	if wait "$load_pid"; then :; else
		status=$?
		cat "$work/run$i.err" >&2
	fi
	if [[ -n $cpu0 ]]; then
		echo "ss-bench: $label: the server used $(awk -v a="$cpu0" -v b="$cpu1" -v t="$clk_tck" \
			'BEGIN {printf "%.2f", (b - a) / t}') s of CPU in the measured phase" >&2
	fi
	if ((i > 0)); then
		sed '$d' "$work/run$i.out" >&2
		tail -n 1 "$work/run$i.out"
	fi
done
exit "$status"
