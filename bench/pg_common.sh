# bench/pg_common.sh — private PostgreSQL 15 clusters for the pg_* benchmarks (sourced).
# pg_up NAME PORT: initdb (as the postgres user) under $WORK and start on 127.0.0.1:PORT
# with logical decoding on; pg_down_all stops every cluster started (by its data dir).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_STARTED=()

# Debian's psql is a Perl wrapper (pg_wrapper) that spends tens of milliseconds of CPU
# at every start; the benches poll with psql several times a second while both sides
# are timed, so they call the client itself.
psql() { "$PG_BIN/psql" "$@"; }

as_pg() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_up() {
    local name=$1 port=$2 dir=$WORK/$1
    mkdir -p "$dir"
    ((EUID == 0)) && chown postgres: "$dir" "$WORK"
    chmod 700 "$dir"
    as_pg "$PG_BIN/initdb" -D "$dir" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 >"$WORK/$name.initdb.log" 2>&1
    as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 \
        -c wal_level=logical -c max_replication_slots=16 -c max_wal_senders=16 -c track_commit_timestamp=on \
        -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=30min" start >/dev/null
    PG_STARTED+=("$dir")
    psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -XAtqc \
        "CREATE ROLE ferry LOGIN SUPERUSER REPLICATION PASSWORD 'ferry'" >/dev/null
}

pg_down_all() {
    local d
    for d in "${PG_STARTED[@]}"; do
        as_pg "$PG_BIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null 2>&1 || true
    done
}

free_port() { # first free port from $1 upwards
    local p=$1
    while (: >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# pg_cpu NAME: CPU seconds the cluster NAME used so far (its postmaster, the backends it
# reaped, and those still running): a measure of server work that holds on a busy machine.
pg_cpu() {
    local pid ticks
    pid=$(head -1 "$WORK/$1/postmaster.pid")
    ticks=$(awk '{ t += $14 + $15 } END { print t }' $(for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do echo /proc/"$c"/stat; done) /dev/null 2>/dev/null)
    ticks=$((ticks + $(awk '{ print $14 + $15 + $16 + $17 }' /proc/"$pid"/stat)))
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# proc_cpu PID: CPU seconds a running process used so far.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' /proc/"$1"/stat; }

# delta A B: B - A, two decimals.
delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
