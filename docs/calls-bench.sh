#!/usr/bin/env bash
# calls-bench.sh: what a MatrixRTC call costs a Tessera server with its
# embedded SFU (calls.enabled).
#
# Builds tessera and tessera-load from this tree, starts tessera on
# 127.0.0.1 (fresh data directory, rate limits off, logging at warn, calls
# on with node_ip 127.0.0.1 and free ports), and for each P runs
# `tessera-load calls -p P -d D`: P users join one call as Element Call
# does, each publishing a synthetic VP8 track at BITRATE and subscribing to
# all others. Between the tool's "calls: media flowing" and "calls: done"
# it samples the server's CPU time (utime+stime in /proc/PID/stat) and RSS
# (VmRSS in /proc/PID/status). Then it stops the server. Linux only.
#
# usage: docs/calls-bench.sh [D [P...]]    (defaults: D=20 seconds, P=1 4 8)
#   BITRATE=500000 docs/calls-bench.sh     each track's bit/s
#   KEEP=1 docs/calls-bench.sh             keep the work directory (binaries, config, logs)
#   TESSERA=/path/to/tessera docs/calls-bench.sh   use that server binary instead of building one
set -euo pipefail

D=${1:-20}
shift || true
PS=("$@")
if ((${#PS[@]} == 0)); then PS=(1 4 8); fi
BITRATE=${BITRATE:-500000}
if ! [[ $D =~ ^[0-9]+$ && $BITRATE =~ ^[0-9]+$ ]] || ((D < 2)); then
	echo "usage: $0 [D [P...]]   (D whole seconds >= 2)" >&2
	exit 2
fi
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-calls.XXXXXX")
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

echo "calls-bench: building into $work" >&2
if [[ -n ${TESSERA:-} ]]; then
	cp "$TESSERA" "$work/tessera"
else
	go build -o "$work/tessera" ./cmd/tessera
fi
go build -o "$work/tessera-load" ./cmd/tessera-load

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
udp_free() { ! grep -qi ":$(printf '%04X' "$1") " /proc/net/udp /proc/net/udp6 2>/dev/null; }
used=()
free_port() { # a TCP (and UDP) port free now and not handed out before
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 40000))
		if port_free "$p" && udp_free "$p" && [[ " ${used[*]} " != *" $p "* ]]; then
			used+=("$p")
			echo "$p"
			return
		fi
	done
	echo "calls-bench: no free port" >&2
	exit 1
}
PORT=$(free_port)
used+=("$PORT")
SIGNAL=$(free_port)
used+=("$SIGNAL")
UDP=$(free_port)
used+=("$UDP")
TCP=$(free_port)
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$work/tessera" generate-config -server-name localhost -data-dir "$work/data" \
	-listen "127.0.0.1:$PORT" -registration-shared-secret "$secret" -o "$work/tessera.yaml" >/dev/null
# Each edit within its own section.
sed -i -e '/^rate_limits:/,/^[a-z]/ s/^  enabled: true$/  enabled: false/' \
	-e '/^logging:/,/^[a-z]/ s/^  level: .*/  level: warn/' \
	-e '/^calls:/,/^[a-z]/ s/^  enabled: false$/  enabled: true/' \
	-e "/^calls:/,/^[a-z]/ s/^  signal_port: .*/  signal_port: $SIGNAL/" \
	-e "/^calls:/,/^[a-z]/ s/^  udp_port: .*/  udp_port: $UDP/" \
	-e "/^calls:/,/^[a-z]/ s/^  tcp_port: .*/  tcp_port: $TCP/" \
	-e '/^calls:/,/^[a-z]/ s/^  node_ip: .*/  node_ip: "127.0.0.1"/' "$work/tessera.yaml"
calls=$(sed -n '/^calls:/,/^[a-z]/ p' "$work/tessera.yaml")
for want in '  enabled: true' "  signal_port: $SIGNAL" "  udp_port: $UDP" "  tcp_port: $TCP" '  node_ip: "127.0.0.1"'; do
	grep -qxF "$want" <<<"$calls" || {
		echo "calls-bench: could not set \"$want\" in the generated config's calls section" >&2
		exit 1
	}
done

"$work/tessera" run -config "$work/tessera.yaml" >"$work/server.log" 2>&1 &
server_pid=$!
hs="http://127.0.0.1:$PORT"
for i in $(seq 1 100); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
	if ! kill -0 "$server_pid" 2>/dev/null || [[ $i == 100 ]]; then
		echo "calls-bench: the server did not start; its log:" >&2
		cat "$work/server.log" >&2
		exit 1
	fi
	sleep 0.1
done

clk_tck=$(getconf CLK_TCK)
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
# utime and stime are fields 14 and 15; count from after the command name.
cpu_ticks() { sed 's/^.*) //' "/proc/$server_pid/stat" | awk '{print $12 + $13}'; }
now() { date +%s.%N; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# The tool's JSON field $1 from its last line.
field() { tail -n 1 "$work/load.out" | grep -o "\"$1\":{[^}]*}\|\"$1\":[^,}]*" | head -n 1 | sed 's/^[^:]*://' || true; }

base_rss=$(rss_kib)
echo "calls-bench: server pid $server_pid on $hs (SFU signal $SIGNAL, UDP $UDP, TCP $TCP): RSS $(mib "$base_rss") MiB at start" >&2

wait_for() {
	local deadline=$((SECONDS + $2))
	until grep -q "$1" "$work/load.err"; do
		if ! kill -0 "$load_pid" 2>/dev/null || ((SECONDS > deadline)); then
			echo "calls-bench: tessera-load ended (or timed out) before printing \"$1\":" >&2
			cat "$work/load.err" "$work/load.out" >&2
			exit 1
		fi
		sleep 0.05
	done
}

rows=()
status=0
for P in "${PS[@]}"; do
	"$work/tessera-load" -hs "$hs" -shared-secret "$secret" -deadline 10m \
		calls -p "$P" -d "$D" -bitrate "$BITRATE" >"$work/load.out" 2>"$work/load.err" &
	load_pid=$!
	wait_for 'calls: media flowing' 300
	t0=$(now) rss0=$(rss_kib) cpu0=$(cpu_ticks)
	# RSS once a second through the window: it swings with the Go GC, so
	# report the mean and the highest as well as the ends.
	rss_sum=$rss0 rss_n=1 rss_max=$rss0
	until grep -q 'calls: done' "$work/load.err"; do
		kill -0 "$load_pid" 2>/dev/null || break
		sleep 1
		r=$(rss_kib)
		rss_sum=$((rss_sum + r)) rss_n=$((rss_n + 1))
		if ((r > rss_max)); then rss_max=$r; fi
	done
	wait_for 'calls: done' $((D + 60))
	t1=$(now) rss1=$(rss_kib) cpu1=$(cpu_ticks)
	rss_mean=$((rss_sum / rss_n))
	load_status=0
	wait "$load_pid" || load_status=$?
	load_pid=
	((load_status == 0)) || status=$load_status
	elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
	cpu_pct=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$clk_tck" -v e="$elapsed" 'BEGIN {printf "%.1f", 100 * (b - a) / t / e}')
	lat=$(field first_rtp)
	p50=$(grep -o '"p50_ms":[0-9.]*' <<<"$lat" | cut -d: -f2 || true)
	mx=$(grep -o '"max_ms":[0-9.]*' <<<"$lat" | cut -d: -f2 || true)
	echo "calls-bench: P=$P over ${elapsed}s (tessera-load exit $load_status):" >&2
	sed 's/^/    /' "$work/load.out" >&2
	rows+=("$(printf '%3s %7s %8s %8s %8s %8s %8s %8s %10s %8s' "$P" "$cpu_pct" "$(mib "$rss0")" "$(mib "$rss1")" \
		"$(mib "$rss_mean")" "$(mib "$rss_max")" "${p50:--}" "${mx:--}" "$(field recv_kbps_mean)" "$(field missing_streams)")")
	printf '{"calls_bench":true,"participants":%s,"seconds":%s,"cpu_percent":%s,"rss_start_kib":%s,"rss_end_kib":%s,"rss_mean_kib":%s,"rss_max_kib":%s,"first_rtp_p50_ms":%s,"first_rtp_max_ms":%s,"recv_kbps_mean":%s,"load_exit":%s}\n' \
		"$P" "$elapsed" "$cpu_pct" "$rss0" "$rss1" "$rss_mean" "$rss_max" "${p50:-null}" "${mx:-null}" "$(field recv_kbps_mean)" "$load_status" >>"$work/bench.jsonl"
done

echo "calls-bench: tessera pid $server_pid, ${BITRATE} bit/s VP8 per participant, ${D}s per run; RSS before any call $(mib "$base_rss") MiB"
echo "CPU: % of one core over the window; RSS in MiB at its start, end, mean and highest (sampled each second);"
echo "first RTP: ms from join request to first received packet (participants 2..P); recv: kbit/s per participant"
printf '%3s %7s %8s %8s %8s %8s %8s %8s %10s %8s\n' P CPU% RSS0 RSS1 RSSmean RSSmax p50 max recv missing
printf '%s\n' "${rows[@]}"
cat "$work/bench.jsonl"
exit "$status"
