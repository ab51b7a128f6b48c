#!/usr/bin/env bash
# engine-bench.sh: tessera-load's core scenarios against Tessera on SQLite
# and on PostgreSQL, side by side (issue 21).
#
# Builds tessera and tessera-load, starts a private PostgreSQL cluster with
# its durable defaults (fsync on, synchronous_commit on: unlike the test
# cluster of .ci/start-postgres), and for each engine starts a fresh server
# (fresh data directory, fresh database, rate limits off, logging at warn),
# runs each scenario once unmeasured and RUNS=3 times measured, and prints
# one line per run: ENGINE SCENARIO JSON. Stops everything on exit.
#
# usage: docs/engine-bench.sh                 all scenarios below, both engines
#        ENGINES=postgres docs/engine-bench.sh
#        SCENARIOS="send8" RUNS=5 docs/engine-bench.sh
#        SCENARIOS="send8long" docs/engine-bench.sh   send8 for 8,000 events (sustained, ~5 s a run)
#        PGEXTRA="-c shared_buffers=512MB" docs/engine-bench.sh     more postgres settings
set -euo pipefail
RUNS=${RUNS:-3}
ENGINES=${ENGINES:-"sqlite postgres"}
SCENARIOS=${SCENARIOS:-"send1 send8 send8long rooms messages fanout initialsync"}
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-engines.XXXXXX")
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -n $pgbin ]] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as=()
if [[ $(id -u) = 0 ]]; then chown postgres "$work"; as=(runuser -u postgres --); fi
server_pid=
cleanup() {
	if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; fi
	[[ -d $work/pg ]] && "${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -tags sqlite_fts5 -o "$work/tessera" ./cmd/tessera
go build -o "$work/tessera-load" ./cmd/tessera-load
chmod -R a+rX "$work"

pgport=${PGPORT:-55433}
if [[ $ENGINES == *postgres* ]]; then
	"${as[@]}" "$pgbin/initdb" -D "$work/pg" -U tessera --auth=trust --locale=C -E UTF8 >/dev/null
	"${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w -o "-k $work -p $pgport -h 127.0.0.1 ${PGEXTRA:-}" start >/dev/null
fi

args() {
	case $1 in
	send1) echo "send -c 8 -m 100" ;;
	send8) echo "send -c 8 -m 100 -rooms 8" ;;
	send8long) echo "send -c 8 -m 1000 -rooms 8" ;;
	rooms) echo "rooms -c 8 -n 100" ;;
	messages) echo "messages -n 1000 -limit 100" ;;
	fanout) echo "fanout -s 20 -n 50" ;;
	initialsync) echo "initialsync -k 20 -n 20" ;;
	esac
}

for engine in $ENGINES; do
	for sc in $SCENARIOS; do
		dir=$work/$engine-$sc
		mkdir -p "$dir"
		port=$((18000 + RANDOM % 2000))
		"$work/tessera" generate-config -server-name localhost -data-dir "$dir/data" -listen "127.0.0.1:$port" \
			-registration-shared-secret S -o "$dir/t.yaml" >/dev/null
		sed -i -e '/^rate_limits:/,/^[a-z]/s/^  enabled: true$/  enabled: false/' -e 's/^  level: info$/  level: warn/' "$dir/t.yaml"
		if [[ $engine == postgres ]]; then
			db=bench_${sc}
			"${as[@]}" "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U tessera -d postgres -qc "CREATE DATABASE $db" >/dev/null
			sed -i -e 's/^  engine: sqlite$/  engine: postgres/' \
				-e "s|^  dsn: \"\"$|  dsn: \"postgres://tessera@127.0.0.1:$pgport/$db?sslmode=disable\"|" "$dir/t.yaml"
		fi
		"$work/tessera" run -config "$dir/t.yaml" 2>"$dir/log" &
		server_pid=$!
		for _ in $(seq 100); do grep -q "Tessera is listening" "$dir/log" && break; sleep 0.2; done
		for i in $(seq 0 "$RUNS"); do
			# shellcheck disable=SC2046
			line=$("$work/tessera-load" -hs "http://127.0.0.1:$port" -shared-secret S -json-only $(args "$sc"))
			[[ $i = 0 ]] || echo "$engine $sc $line"
		done
		kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
	done
done
