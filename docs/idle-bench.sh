#!/usr/bin/env bash
# idle-bench.sh: what S idle long-poll /sync requests cost a Tessera server.
#
# Builds tessera and tessera-load from this tree, starts tessera on
# 127.0.0.1 (fresh data directory, rate limits off, logging at warn), runs
# `tessera-load idle -s S -d D`, and samples the server's resident memory
# (VmRSS and VmHWM in /proc/PID/status) and CPU time (utime+stime in
# /proc/PID/stat) when the idle period begins and D-1 seconds later (just
# before the tool closes its polls), and its RSS once a second in between.
# Then it stops the server. Linux only (it reads /proc).
#
# usage: docs/idle-bench.sh [S [D]]        (defaults: S=1000, D=20 seconds)
#   PORT=18008 docs/idle-bench.sh          listen on a given port instead of a free one
#   KEEP=1 docs/idle-bench.sh              keep the work directory (binaries, config, logs)
#   TESSERA=/path/to/tessera docs/idle-bench.sh   use that server binary instead of building one
#   SETTLE=30 docs/idle-bench.sh 1000 60   seconds between the last long-poll being sent and the idle
#                                          period (tessera-load's -settle; default 2). The users'
#                                          last activity is their initial sync just before; with
#                                          presence on, each syncing user's presence changes a minute
#                                          after it (and so wakes its poll), so SETTLE=30 with D=60
#                                          shows a whole minute's cost, and the default a quiet window.
#   PRESENCE=false docs/idle-bench.sh      run the server with presence.enabled: false
set -euo pipefail

S=${1:-1000}
D=${2:-20}
if ! [[ $S =~ ^[0-9]+$ && $D =~ ^[0-9]+$ && ${SETTLE:-2} =~ ^[0-9]+$ ]] || ((S < 1 || D < 2)); then
	echo "usage: $0 [S [D]]   (S users >= 1, D whole seconds >= 2)" >&2
	exit 2
fi
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-idle.XXXXXX")
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

# One connection per long-poll on each side, plus the server's database and
# the tool's setup connections.
need=$((S + 256))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $need ]]; then
	ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $need ]]; then
	echo "idle-bench: open file limit $(ulimit -n) is below the $need that $S long-polls need (raise the hard limit)" >&2
	exit 1
fi

echo "idle-bench: building into $work" >&2
if [[ -n ${TESSERA:-} ]]; then
	cp "$TESSERA" "$work/tessera"
else
	go build -o "$work/tessera" ./cmd/tessera
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
# rate_limits.enabled: false and logging.level: warn, each within its own section.
sed -i -e '/^rate_limits:/,/^[a-z]/ s/^  enabled: true$/  enabled: false/' \
	-e '/^logging:/,/^[a-z]/ s/^  level: .*/  level: warn/' "$work/tessera.yaml"
grep -q '^  enabled: false$' "$work/tessera.yaml" && grep -q '^  level: warn$' "$work/tessera.yaml" || {
	echo "idle-bench: could not edit the generated config" >&2
	exit 1
}
if [[ ${PRESENCE:-} == false ]]; then
	sed -i '/^presence:/,/^[a-z]/ s/^  enabled: true$/  enabled: false/' "$work/tessera.yaml"
	if [[ $(sed -n '/^presence:/,/^[a-z]/ p' "$work/tessera.yaml" | grep -c '^  enabled: false$') != 1 ]]; then
		echo "idle-bench: could not turn presence off in the generated config" >&2
		exit 1
	fi
fi

"$work/tessera" run -config "$work/tessera.yaml" >"$work/server.log" 2>&1 &
server_pid=$!
hs="http://127.0.0.1:$PORT"
for i in $(seq 1 100); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
	if ! kill -0 "$server_pid" 2>/dev/null || [[ $i == 100 ]]; then
		echo "idle-bench: the server did not start; its log:" >&2
		cat "$work/server.log" >&2
		exit 1
	fi
	sleep 0.1
done

clk_tck=$(getconf CLK_TCK)
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$server_pid/status"; }
# utime and stime are fields 14 and 15; the command name (field 2) may hold
# spaces, so count from after its closing parenthesis.
cpu_ticks() { sed 's/^.*) //' "/proc/$server_pid/stat" | awk '{print $12 + $13}'; }
now() { date +%s.%N; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

base_rss=$(rss_kib)
echo "idle-bench: server pid $server_pid on $hs: RSS $(mib "$base_rss") MiB before any user exists" >&2

# Long-polls of 60 s, as clients use, or longer if the wait and the idle
# period would outlast them.
poll_timeout=$((${SETTLE:-2} + D + 10))
if ((poll_timeout < 60)); then poll_timeout=60; fi
"$work/tessera-load" -hs "$hs" -shared-secret "$secret" -deadline 30m \
	idle -s "$S" -d "$D" -settle "${SETTLE:-2}s" -poll-timeout "${poll_timeout}s" >"$work/load.out" 2>"$work/load.err" &
load_pid=$!

# Wait for a line on the tool's stderr, for at most $2 seconds.
wait_for() {
	local deadline=$((SECONDS + $2))
	until grep -q "$1" "$work/load.err"; do
		if ! kill -0 "$load_pid" 2>/dev/null || ((SECONDS > deadline)); then
			echo "idle-bench: tessera-load ended (or timed out) before printing \"$1\":" >&2
			cat "$work/load.err" "$work/load.out" >&2
			exit 1
		fi
		sleep 0.05
	done
}

wait_for 'idle: begin' 1800
# The window sampled here lies inside the tool's idle period (which lasts D
# from the begin line): it ends a second early, before the tool closes its
# polls, so tearing down the connections is not counted as idle CPU.
t0=$(now) rss0=$(rss_kib) cpu0=$(cpu_ticks) thr0=$(threads)
rss_max=$rss0
rss_series=$(mib "$rss0")
for _ in $(seq 1 $((D - 1))); do
	sleep 1
	r=$(rss_kib)
	if ((r > rss_max)); then rss_max=$r; fi
	rss_series+=" $(mib "$r")"
done
t1=$(now) rss1=$(rss_kib) cpu1=$(cpu_ticks) thr1=$(threads) hwm=$(hwm_kib)
wait_for 'idle: end' $((D + 60))

load_status=0
wait "$load_pid" || load_status=$?
load_pid=

elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$clk_tck" 'BEGIN {printf "%.2f", (b - a) / t}')
cpu_pct=$(awk -v c="$cpu_s" -v e="$elapsed" 'BEGIN {printf "%.2f", 100 * c / e}')

echo "idle-bench: $S idle long-polls for ${elapsed}s against tessera pid $server_pid"
echo "  RSS at start of idle   $(mib "$rss0") MiB ($thr0 threads)"
echo "  RSS at end of idle     $(mib "$rss1") MiB ($thr1 threads); highest of the samples each second $(mib "$rss_max") MiB"
echo "  RSS each second (MiB)  $rss_series"
echo "  RSS before any users   $(mib "$base_rss") MiB; peak of the whole run (VmHWM) $(mib "$hwm") MiB"
echo "  CPU while idle         ${cpu_s}s of CPU in ${elapsed}s = ${cpu_pct}% of one core (tick ${clk_tck}/s)"
echo "  tessera-load:"
sed 's/^/    /' "$work/load.out"
wakeups=$(grep -o '"wakeups":[0-9]*' "$work/load.out" | tail -n 1 | cut -d: -f2)
printf '{"idle_bench":true,"users":%s,"idle_seconds":%s,"rss_start_kib":%s,"rss_end_kib":%s,"rss_max_kib":%s,"rss_base_kib":%s,"hwm_kib":%s,"cpu_seconds":%s,"cpu_percent":%s,"threads":%s,"wakeups":%s,"load_exit":%s}\n' \
	"$S" "$elapsed" "$rss0" "$rss1" "$rss_max" "$base_rss" "$hwm" "$cpu_s" "$cpu_pct" "$thr1" "${wakeups:-null}" "$load_status"
exit "$load_status"
