#!/usr/bin/env bash
# scale-bench.sh: tessera-load against one Tessera process and against three
# sharing one PostgreSQL database (docs/scaling.md, issue 22), with the CPU
# each process and PostgreSQL used and the database's commits per run.
#
# Builds tessera and tessera-load, starts a private PostgreSQL cluster with
# its durable defaults (fsync on; PGEXTRA adds settings), and for each
# process count and scenario a fresh database and fresh processes (rate
# limits off, logging at warn), one warm-up run and RUNS=3 measured runs.
# Each measured run prints one line:
#   PROCS SCENARIO {tessera-load's JSON (less per_room) + "bench": {cpu_tessera_s,
#       cpu_per_process_s, cpu_postgres_s, run_commits, load1}}
# Over the measured phase only (from tessera-load's "measuring:" to its end
# or its "verifying:"): CPU, user+system time from /proc (PostgreSQL's:
# its postmaster's children, live and exited). Over the whole tessera-load
# run, setup included: run_commits,
# the database's xact_commit delta from pg_stat_database, which counts
# every committed transaction, reads included.
#
# Scenarios (with 3 processes the tool sends through all three, -via):
#   send30    send -c 60 -m 30 -rooms 30 -verify: room r created through
#             process r mod 3 (which owns it), its two senders through its
#             owner and through the next process: half the sends forwarded
#   direct30  send -c 30 -m 60 -rooms 30: each sender through its room's
#             owner, nothing forwarded
#   fanout    fanout -s 30 -n 100: 30 receivers long-polling, spread over
#             the processes; one sender through the first
#
# MODE=writes instead counts PostgreSQL's write transactions (transaction
# IDs assigned) and WAL bytes per event, by the difference between send -c
# 30 -m 1 and -m 61 over 30 rooms (setup excluded), RUNS times per PROCS.
#
# MODE=kill instead runs the kill -9 test by hand: 3 processes, tessera-load
# send -c 60 -rooms 30 -duration 25s through all three with retries, process
# b killed with SIGKILL 6 s into the sending and started again 3 s later;
# prints the JSON and a summary per owner (internal/crashtest's
# TestKillNineInCluster asserts the same).
#
# usage: docs/scale-bench.sh
#        PROCS=3 SCENARIOS=send30 RUNS=5 docs/scale-bench.sh
#        MODE=kill docs/scale-bench.sh
#        MODE=writes RUNS=1 docs/scale-bench.sh
# Needs PostgreSQL (apt-get install postgresql), curl and jq.
set -euo pipefail
RUNS=${RUNS:-3}
PROCS=${PROCS:-"1 3"}
SCENARIOS=${SCENARIOS:-"send30 direct30 fanout"}
MODE=${MODE:-bench}
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-scale.XXXXXX")
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -n $pgbin ]] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as=()
if [[ $(id -u) = 0 ]]; then chown postgres "$work"; as=(runuser -u postgres --); fi
declare -A pids=()
stop_all() {
	for n in "${!pids[@]}"; do
		if kill -0 "${pids[$n]}" 2>/dev/null; then kill "${pids[$n]}"; wait "${pids[$n]}" 2>/dev/null || true; fi
	done
	pids=()
}
cleanup() {
	stop_all
	[[ -d $work/pg ]] && "${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -tags sqlite_fts5 -o "$work/tessera" ./cmd/tessera
go build -o "$work/tessera-load" ./cmd/tessera-load
chmod -R a+rX "$work"

pgport=${PGPORT:-55434}
"${as[@]}" "$pgbin/initdb" -D "$work/pg" -U tessera --auth=trust --locale=C -E UTF8 >/dev/null
"${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
	-o "-k $work -p $pgport -h 127.0.0.1 -c max_connections=300 ${PGEXTRA:-}" start >/dev/null
psql_() { psql -h 127.0.0.1 -p "$pgport" -U tessera -d postgres -tAq "$@"; }

# ticks PID...: user+system clock ticks of the processes (and, with +PID,
# also of its waited-for children).
ticks() {
	local sum=0 p f
	for p in "$@"; do
		if [[ $p == +* ]]; then
			p=${p#+}
			f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
			read -r -a a <<<"$f"
			sum=$((sum + a[11] + a[12] + a[13] + a[14]))
		else
			f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
			read -r -a a <<<"$f"
			sum=$((sum + a[11] + a[12]))
		fi
	done
	echo "$sum"
}
pg_ticks() {
	local pm
	pm=$(head -1 "$work/pg/postmaster.pid")
	ticks "+$pm" $(ps -o pid= --ppid "$pm")
}
hz=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'; }

# sample: tessera's CPU ticks (all processes), PostgreSQL's, then each
# tessera process's. (No psql here: it takes most of a second to connect
# on a busy machine, too late for a sample; see MODE=writes.)
sample() {
	local n per=()
	for n in a b c; do [[ -n ${pids[$n]:-} ]] && per+=("$(ticks "${pids[$n]}")"); done
	echo "$(ticks "${pids[@]}")" "$(pg_ticks)" "${per[@]}"
}

# setup PROCS: a fresh database, config and PROCS running processes; sets
# urls (the first is -hs) and pids.
setup() {
	local procs=$1 db cfg n port
	db=scale_$RANDOM$RANDOM
	psql_ -c "CREATE DATABASE $db TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
	dbname=$db
	dir=$work/$db
	mkdir -p "$dir"
	cfg=$dir/tessera.yaml
	"$work/tessera" generate-config -server-name localhost -data-dir "$dir/data" -listen 127.0.0.1:0 \
		-registration-shared-secret S -o "$cfg" >/dev/null
	sed -i -E \
		-e '/^rate_limits:/,/^[a-z]/ s/^  enabled: true$/  enabled: false/' \
		-e 's/^  hash_memory_kib: [0-9]+$/  hash_memory_kib: 1024/' \
		-e 's/^  hash_iterations: [0-9]+$/  hash_iterations: 1/' \
		-e 's/^  level: info$/  level: warn/' \
		-e 's/^  engine: sqlite$/  engine: postgres/' \
		-e "s|^  dsn: \"\"$|  dsn: \"postgres://tessera@127.0.0.1:$pgport/$db?sslmode=disable\"|" \
		"$cfg"
	names=(a b c)
	urls=()
	if ((procs > 1)); then
		{
			echo "instances:"
			for ((i = 0; i < procs; i++)); do
				port=$((20000 + RANDOM % 20000))
				urls+=("http://127.0.0.1:$port")
				echo "  ${names[i]}: {internal_url: \"http://127.0.0.1:$port\", listen: \"127.0.0.1:$port\"}"
			done
			echo 'instance_secret: "scale-bench-instance-secret-0123456789"'
		} >"$dir/instances.yaml"
		sed -i -e '/^instances: {}$/d' -e '/^instance_secret: ""$/d' "$cfg"
		cat "$dir/instances.yaml" >>"$cfg"
	else
		port=$((20000 + RANDOM % 20000))
		urls=("http://127.0.0.1:$port")
		sed -i -E "s/^listen: .*/listen: 127.0.0.1:$port/" "$cfg"
	fi
	for ((i = 0; i < procs; i++)); do
		start_proc "$procs" "${names[i]}"
	done
}

# start_proc PROCS NAME: starts one process and waits until it answers.
start_proc() {
	local procs=$1 n=$2 i args=()
	((procs > 1)) && args=(-instance "$n")
	"$work/tessera" run -config "$dir/tessera.yaml" "${args[@]}" 2>>"$dir/$n.log" &
	pids[$n]=$!
	i=$(printf '%s\n' a b c | grep -n "^$n$" | cut -d: -f1)
	for _ in $(seq 200); do
		curl -sf "${urls[i - 1]}/_matrix/client/versions" >/dev/null && return 0
		sleep 0.1
	done
	echo "process $n did not start:" >&2
	cat "$dir/$n.log" >&2
	exit 1
}

via_arg() {
	local IFS=,
	((${#urls[@]} > 1)) && echo "-via ${urls[*]:1}"
	return 0
}

args() {
	case $1 in
	send30) echo "send -c 60 -m 30 -rooms 30 -verify $(via_arg)" ;;
	direct30) echo "send -c 30 -m 60 -rooms 30 $(via_arg)" ;;
	fanout) echo "fanout -s 30 -n 100 $(via_arg)" ;;
	esac
}

if [[ $MODE == writes ]]; then
	# Write transactions and WAL per event, by difference: the same send
	# with 1 and with 61 messages per sender, each with its own setup; the
	# difference is 1,800 events' writes, setup excluded.
	for procs in $PROCS; do
		setup "$procs"
		for r in $(seq "$RUNS"); do
			w=()
			for m in 1 61; do
				read -r x0 l0 < <(psql_ -F ' ' -c "SELECT pg_snapshot_xmax(pg_current_snapshot()), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
				# shellcheck disable=SC2046
				"$work/tessera-load" -hs "${urls[0]}" -shared-secret S -json-only send -c 30 -m $m -rooms 30 $(via_arg) >/dev/null
				read -r x1 l1 < <(psql_ -F ' ' -c "SELECT pg_snapshot_xmax(pg_current_snapshot()), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
				w+=($((x1 - x0)) $((l1 - l0)))
			done
			echo "$procs writes: 1,800 events: $((w[2] - w[0])) write transactions, $(((w[3] - w[1]) / 1800)) WAL bytes per event"
		done
		stop_all
	done
	exit 0
fi

if [[ $MODE == kill ]]; then
	setup 3
	log=$dir/load.err
	"$work/tessera-load" -hs "${urls[0]}" -shared-secret S -timeout 10s -deadline 3m send -c 60 -m 100000 -rooms 30 \
		$(via_arg) -retry-for 60s -retry-wait 100ms -duration 25s -verify >"$dir/load.out" 2>"$log" &
	load=$!
	until grep -q '^measuring:' "$log"; do
		kill -0 $load 2>/dev/null || { cat "$log" >&2; exit 1; }
		sleep 0.1
	done
	sleep 6
	killed=$(date +%s%3N)
	kill -9 "${pids[b]}"
	wait "${pids[b]}" 2>/dev/null || true
	sleep 3
	start_proc 3 b
	back=$(date +%s%3N)
	wait $load && rc=0 || rc=$?
	echo "tessera-load exit $rc; b killed at $killed, listening again at $back (unix ms)"
	tail -1 "$dir/load.out" >"$dir/load.json"
	cat "$dir/load.json"
	jq -r --argjson back "$back" --argjson killed "$killed" '
		"acknowledged \(.ok), failed attempts \(.errors), retries \(.retries // 0), given up \(.unacknowledged // 0); verify: \(.verify)",
		(.per_room | group_by(.created_via)[] |
			"owner \(["a","b","c"][.[0].created_via]): \(length) rooms, \(map(.acknowledged) | add) acknowledged, errors \(map(.errors | to_entries[] | .value) | add // 0), lost \(map(.lost) | add), duplicated \(map(.duplicated) | add), longest gap \(map(.longest_gap_ms) | max) ms" +
			(if .[0].created_via == 1 then ", first write after the restart at most \(map(.gap_to_unix_ms - $back) | max) ms after b listened" else "" end))' \
		"$dir/load.json"
	exit 0
fi

for procs in $PROCS; do
	for sc in $SCENARIOS; do
		setup "$procs"
		# shellcheck disable=SC2046
		"$work/tessera-load" -hs "${urls[0]}" -shared-secret S -json-only $(args "$sc") >/dev/null || true
		for ((r = 1; r <= RUNS; r++)); do
			# pg_stat_database's counters reach it up to 10 s late (a
			# backend flushes them when idle): let the last run's arrive.
			sleep 11
			c0=$(psql_ -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$dbname'")
			rm -f "$dir/out" "$dir/err"
			# shellcheck disable=SC2046
			"$work/tessera-load" -hs "${urls[0]}" -shared-secret S $(args "$sc") >"$dir/out" 2>"$dir/err" &
			lp=$!
			# The measured phase only: from "measuring:" to the end of the
			# run or to "verifying:".
			until grep -qs '^measuring:' "$dir/err" || ! kill -0 $lp 2>/dev/null; do sleep 0.02; done
			sample0=($(sample))
			while kill -0 $lp 2>/dev/null && ! grep -q '^verifying:' "$dir/err"; do sleep 0.02; done
			sample1=($(sample))
			[[ -n ${DEBUG:-} ]] && echo "samples: ${sample0[*]} / ${sample1[*]}" >&2
			wait $lp || true # a failed check still prints the JSON line: keep it, and go on
			out=$(tail -1 "$dir/out")
			sleep 11
			c1=$(psql_ -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$dbname'")
			per=()
			for ((i = 2; i < ${#sample0[@]}; i++)); do per+=("$(secs $((sample1[i] - sample0[i])))"); done
			load1=$(cut -d' ' -f1 /proc/loadavg)
			echo "$procs $sc $(echo "$out" | jq -c --argjson ct "$(secs $((sample1[0] - sample0[0])))" \
				--argjson cp "$(secs $((sample1[1] - sample0[1])))" --argjson commits "$((c1 - c0))" \
				--argjson load "$load1" --arg per "${per[*]}" \
				'del(.per_room) + {bench: {cpu_tessera_s: $ct, cpu_per_process_s: ($per | split(" ") | map(tonumber)),
					cpu_postgres_s: $cp, run_commits: $commits, load1: $load}}')"
		done
		stop_all
	done
done
