# shellcheck shell=bash disable=SC2034  # the figures set here are read by the caller
# bench/mysql_common.sh — what bench/mysql_cdc and bench/mysql_cdc_apedts share (sourced).
# The caller sets BENCH (its name, for log lines), REPO, WORK, CATCHUP_LIMIT and POLL, and
# for the ferry and backlog parts S_PORT, T_PORT, S_DIR, TABLES, TIME, THREADS, MIN_CHANGES,
# WORKERS, KEEP_TXNS and the sysbench command line SB (an array).
#   log, die, now_ns, secs_since            messages and wall time
#   port_free, ports_free BASE N            N consecutive free ports from BASE
#   tb PAIRDIR PORT_A PORT_B ACTION         scripts/testbed on a private pair of MariaDB
#   sql PORT STATEMENTS...                  root over TCP, tab-separated, no headers
#   cpu_ticks, read_bytes, cpu_stat, machine, cpu_pct, mb, warm, status_var, settle PORT...
#   build_ferry, write_ferry_config, start_ferry, stop_ferry, ferry_snapshot, ferry_timed
#   write_backlog                           sysbench rounds on S, counted in S's binlog

log() { printf '[%s %s] %s\n' "$BENCH" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now_ns() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

port_free() { ! (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports_free() { # ports_free BASE N
    local p
    for ((p = $1; p < $1 + $2; p++)); do port_free "$p" || return 1; done
}

tb() { # tb PAIRDIR PORT_A PORT_B ACTION (TMPDIR: the servers' temp files stay private)
    mkdir -p "$WORK/tmp"
    TMPDIR=$WORK/tmp FERRY_TESTBED_DIR=$1 FERRY_TESTBED_PORT_A=$2 FERRY_TESTBED_PORT_B=$3 "$REPO/scripts/testbed" "$4"
}

sql() { # sql PORT STATEMENTS... (root over TCP, tab-separated, no headers)
    local port=$1
    shift
    mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot -N -B -e "$*"
}
cpu_ticks() { # utime + stime of a pid, in clock ticks
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    s=${s##*) }
    awk '{ print $12 + $13 }' <<<"$s"
}
TCK=$(getconf CLK_TCK)
read_bytes() { awk '$1 == "read_bytes:" { print $2 }' "/proc/$1/io" 2>/dev/null || echo 0; }
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
# warm FILES...: reads them once, so neither side's timed run starts on a cold page cache
# (this VM's kernel reclaims idle page cache within about a minute).
warm() { cat "$@" >/dev/null; }
# Machine-wide CPU (all cores) from /proc/stat: "busy total iowait" jiffies; this machine
# may be shared, so the report shows how busy it was during each timed phase.
cpu_stat() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $6; exit }' /proc/stat; }
machine() { # machine "BUSY0 TOTAL0 IOWAIT0" -> "B% busy, W% iowait"
    local b0 t0 w0 b1 t1 w1
    read -r b0 t0 w0 <<<"$1"
    read -r b1 t1 w1 <<<"$(cpu_stat)"
    awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" -v w="$((w1 - w0))" -v n="$(nproc)" \
        'BEGIN { printf "%.0f%% busy, %.0f%% iowait (of %d cores x wall time)", 100 * b / t, 100 * w / t, n }'
}
cpu_pct() { awk -v t="$1" -v tck="$TCK" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? 100 * t / tck / s : 0) }'; }
mariadbd_pid() { cat "$1/pid"; }
cs() { sql "$1" "CHECKSUM TABLE $tables" | awk '{ print $1, $2 }'; } # cs PORT: the bench's $tables
status_var() { sql "$1" "SHOW GLOBAL STATUS LIKE '$2'" | awk '{ print $2 }'; }
# settle PORT...: before each timed phase every server flushes its dirty pages
# (innodb_max_dirty_pages_pct set to 0 for the wait, then restored), so no side pays for
# another's flushing.
settle() {
    local p pct deadline
    for p in "$@"; do
        pct=$(sql "$p" 'SELECT @@innodb_max_dirty_pages_pct')
        sql "$p" 'SET GLOBAL innodb_max_dirty_pages_pct = 0'
        deadline=$((SECONDS + 180))
        while (($(status_var "$p" Innodb_buffer_pool_pages_dirty) > 50 && SECONDS < deadline)); do sleep 0.5; done
        sql "$p" "SET GLOBAL innodb_max_dirty_pages_pct = $pct"
    done
    sync
}

# --- ferry: one task S -> T named "cdc" ------------------------------------------------------
build_ferry() { # sets FERRY
    log "building ferry (cargo build --release)"
    cargo build --release --quiet || die "cargo build --release failed"
    FERRY=${CARGO_TARGET_DIR:-$REPO/target}/release/ferry
    [[ -x $FERRY ]] || die "$FERRY missing after the build"
}

write_ferry_config() { # writes $CONFIG
    cat >"$CONFIG" <<EOF
[node]
id = "bench-mysql-cdc"
store = "sqlite://meta.db"

[[endpoint]]
name = "s"
site = "dc-a"
url = "mysql://ferry:ferry@127.0.0.1:$S_PORT"

[[endpoint]]
name = "t"
site = "dc-b"
url = "mysql://ferry:ferry@127.0.0.1:$T_PORT"

[[task]]
name = "cdc"
from = "s"
to = "t"
mode = "one-way"
tables = ["sbtest.*"]
snapshot = true
workers = $WORKERS
keep_transactions = $KEEP_TXNS
EOF
}

FERRY_PID=
stop_ferry() { # SIGTERM, wait up to 60 s; returns ferry's exit code
    local pid=$FERRY_PID rc=0 i
    [[ -n $pid ]] || return 0
    FERRY_PID=
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "ferry (pid $pid) still running 60 s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || rc=$?
    return "$rc"
}
start_ferry() {
    FERRY_LOG=info "$FERRY" run --config "$CONFIG" >>"$WORK/ferry.log" 2>&1 &
    FERRY_PID=$!
}
ferry_alive() { [[ -n $FERRY_PID ]] && kill -0 "$FERRY_PID" 2>/dev/null; }
# T's stream slots, one per apply worker (stream:0 .. stream:N-1); ferry resumes from the
# lowest, so T has applied up to a position only when every slot is at or past it.
t_position() { sql "$T_PORT" "SELECT position FROM ferry.ferry_checkpoint WHERE task='cdc' AND slot LIKE 'stream:%' ORDER BY slot" 2>/dev/null | paste -sd' ' - || true; }
t_slots() { sql "$T_PORT" "SELECT COUNT(*) FROM ferry.ferry_checkpoint WHERE task='cdc' AND slot LIKE 'stream:%'" 2>/dev/null || echo 0; }
s_head() { sql "$S_PORT" 'SHOW MASTER STATUS' | awk '{ print $1, $2 }'; }
# pos_ge POSITION FILE OFFSET: true if mysql:<file>:<offset>:<gtid> is at or past FILE:OFFSET
pos_ge() {
    local rest=${1#mysql:} f o
    [[ $1 == mysql:* ]] || return 1
    f=${rest%%:*}
    rest=${rest#*:}
    o=${rest%%:*}
    [[ $f > $2 ]] || { [[ $f == "$2" ]] && ((o >= $3)); }
}
# t_reached FILE OFFSET: true if every stream slot of T is at or past FILE:OFFSET
t_reached() {
    local p n=0
    for p in $(t_position); do
        pos_ge "$p" "$1" "$2" || return 1
        n=$((n + 1))
    done
    ((n > 0))
}
ferry_fail() {
    log "ferry status:"
    "$FERRY" status --config "$CONFIG" --format json >&2 || true
    die "$*"
}

# ferry_snapshot: ferry copies sbtest.* from S to T, follows S up to its head, then stops
# (SIGTERM; its checkpoint stays).
ferry_snapshot() {
    local deadline hf ho rc
    log "ferry: snapshot of sbtest.* from S to T"
    start_ferry
    deadline=$((SECONDS + CATCHUP_LIMIT))
    until [[ $(sql "$T_PORT" "SELECT COUNT(*) FROM ferry.ferry_checkpoint WHERE task='cdc' AND slot LIKE 'table:%' \
            AND progress LIKE '%\"done\"%'" 2>/dev/null || echo 0) -ge $TABLES ]]; do
        ferry_alive || ferry_fail "ferry run exited during the snapshot"
        ((SECONDS < deadline)) || ferry_fail "the snapshot did not finish within ${CATCHUP_LIMIT}s"
        sleep 0.5
    done
    read -r hf ho <<<"$(s_head)"
    until t_reached "$hf" "$ho"; do
        ferry_alive || ferry_fail "ferry run exited after the snapshot"
        ((SECONDS < deadline)) || ferry_fail "ferry did not reach S's head $hf:$ho within ${CATCHUP_LIMIT}s"
        sleep 0.2
    done
    rc=0
    stop_ferry || rc=$?
    ((rc == 0)) || die "ferry run exited with $rc on SIGTERM after the snapshot"
    log "ferry: snapshot done and level with S; stopped (checkpoint $(t_position))"
}

# --- the backlog ---------------------------------------------------------------------------
gtid_seq() { tr ',' '\n' <<<"$1" | awk -F- -v d="$2" '$1 == d { print $3 }'; }
# write_backlog: sysbench oltp_write_only on S; sets START_FILE
# START_OFF (S's head before), HEAD_FILE HEAD_OFF S_GTID (after), files (S's binlogs in
# between), TXNS, CHANGES (row changes counted in the binlog) and the SB_* figures.
# Rounds of sysbench run: the first lasts --time; if the backlog is still short of
# --min-changes, further rounds (sized from the measured rate, +10%) make up the rest.
# BACKLOG_TAIL_SQL, if set, runs on S after the last round as one more transaction of
# BACKLOG_TAIL_CHANGES row changes, part of the backlog.
write_backlog() {
    local tail_sql=${BACKLOG_TAIL_SQL:-} tail_changes=${BACKLOG_TAIL_CHANGES:-0} tail_txns=0 seq0 seq1 round round_time out t
    S_DOMAIN=$(sql "$S_PORT" 'SELECT @@gtid_domain_id')
    seq0=$(gtid_seq "$(sql "$S_PORT" 'SELECT @@gtid_binlog_pos')" "$S_DOMAIN")
    read -r START_FILE START_OFF <<<"$(s_head)"
    SB_TXNS=0 SB_WRITES=0 SB_ERRORS=0 SB_SECONDS=0 SB_ROUNDS='' round_time=$TIME
    for round in 1 2 3 4; do
        log "sysbench run: --time=$round_time --threads=$THREADS (unthrottled) on S"
        out=$WORK/sysbench-run-$round.log
        "${SB[@]}" --time="$round_time" --threads="$THREADS" --report-interval=10 run >"$out" 2>&1 ||
            { tail -n 30 "$out" >&2; die "sysbench run"; }
        t=$(awk '$1 == "transactions:" { print $2 }' "$out")
        SB_TXNS=$((SB_TXNS + t))
        SB_WRITES=$((SB_WRITES + $(awk '$1 == "write:" { print $2 }' "$out")))
        SB_ERRORS=$((SB_ERRORS + $(awk '$1 == "ignored" && $2 == "errors:" { print $3 }' "$out")))
        SB_SECONDS=$((SB_SECONDS + round_time))
        SB_ROUNDS+="${SB_ROUNDS:+ + }--time=$round_time: $t tx ($(awk '$1 == "transactions:" { gsub(/\(/, "", $3); print $3 }' "$out") tx/s)"
        ((SB_TXNS * 4 < MIN_CHANGES)) || break
        ((round < 4)) || die "after $SB_SECONDS s of sysbench the backlog has $((SB_TXNS * 4)) row changes, short of $MIN_CHANGES"
        round_time=$(awk -v need="$((MIN_CHANGES - SB_TXNS * 4))" -v t="$t" -v s="$round_time" \
            'BEGIN { r = need / 4 / (t / s) * 1.1; printf "%d", r < 5 ? 5 : r + 1 }')
        log "backlog so far: $((SB_TXNS * 4)) row changes, short of $MIN_CHANGES: one more round of ${round_time}s"
    done
    if [[ -n $tail_sql ]]; then
        sql "$S_PORT" "$tail_sql"
        tail_txns=1
    fi
    SB_TPS=$(awk -v t="$SB_TXNS" -v s="$SB_SECONDS" 'BEGIN { printf "%.0f", t / s }')
    S_GTID=$(sql "$S_PORT" 'SELECT @@gtid_binlog_pos')
    read -r HEAD_FILE HEAD_OFF <<<"$(s_head)"
    seq1=$(gtid_seq "$S_GTID" "$S_DOMAIN")
    TXNS=$((seq1 - seq0))
    [[ $TXNS == "$((SB_TXNS + tail_txns))" ]] || die "S's binlog got $TXNS transactions, sysbench reports $SB_TXNS"
    # The row changes, counted in S's binlog (row events of the backlog's transactions).
    mapfile -t files < <(awk -v a="$START_FILE" -v b="$HEAD_FILE" '{ sub(/^.*\//, "") } $0 >= a && $0 <= b' "$S_DIR/bin.index")
    CHANGES=$(cd "$S_DIR" && mariadb-binlog --no-defaults --base64-output=decode-rows -v --start-position="$START_OFF" \
        --stop-position="$HEAD_OFF" "${files[@]}" | grep -cE '^### (INSERT INTO|UPDATE|DELETE FROM) ')
    # oltp_write_only: 2 UPDATEs, 1 DELETE, 1 INSERT per transaction, one row each.
    ((CHANGES == SB_TXNS * 4 + tail_changes)) ||
        log "note: the binlog holds $CHANGES row changes for $TXNS transactions (not 4 each); using the binlog's count"
    log "backlog: $TXNS transactions in ${SB_SECONDS}s ($SB_TPS/s; sysbench: $SB_WRITES writes, $SB_ERRORS ignored errors), \
$CHANGES row changes in the binlog; S at $HEAD_FILE:$HEAD_OFF gtid $S_GTID"
    ((CHANGES >= MIN_CHANGES)) || die "backlog of $CHANGES row changes is below $MIN_CHANGES: raise --threads or --time"
}

# ferry_timed: ferry runs from its checkpoint until every stream slot of T reaches
# HEAD_FILE:HEAD_OFF, polled every POLL s, then stops. The caller settles the servers
# first. Sets FERRY_S FERRY_RATE T_SLOTS LOAD_FERRY M_FERRY and the CPU/IO figures
# ferry_cpu ferry_rd t_cpu t_rd t_fsync s_cpu s_rd (T_PID, S_PID: the servers' pids).
ferry_timed() {
    local t0 n p last_pos last_move rc t_fsync0 t_cpu0 s_cpu0 t_rd0 s_rd0 m0
    (cd "$S_DIR" && warm "${files[@]}")
    LOAD_FERRY=$(cut -d' ' -f1-3 /proc/loadavg)
    t_fsync0=$(status_var "$T_PORT" Innodb_data_fsyncs)
    t_cpu0=$(cpu_ticks "$T_PID") s_cpu0=$(cpu_ticks "$S_PID") t_rd0=$(read_bytes "$T_PID") s_rd0=$(read_bytes "$S_PID") m0=$(cpu_stat)
    log "ferry: run from its checkpoint $(t_position)"
    t0=$(now_ns)
    start_ferry
    n=0
    last_pos='' last_move=$SECONDS
    until t_reached "$HEAD_FILE" "$HEAD_OFF"; do
        ferry_alive || ferry_fail "ferry run exited during the catch-up"
        sleep "$POLL"
        if ((++n % 20 == 0)); then
            p=$(t_position)
            if [[ $p != "$last_pos" ]]; then last_pos=$p last_move=$SECONDS; fi
            ((SECONDS - last_move < 120)) || ferry_fail "ferry's checkpoint has not moved for 120 s (at $p, head $HEAD_FILE:$HEAD_OFF)"
            (($(date +%s) - t0 / 1000000000 < CATCHUP_LIMIT)) || ferry_fail "ferry did not catch up within ${CATCHUP_LIMIT}s"
            if ((n % 100 == 0)); then log "ferry: at $p, head $HEAD_FILE:$HEAD_OFF"; fi
        fi
    done
    FERRY_S=$(secs_since "$t0")
    T_SLOTS=$(t_slots)
    ferry_cpu=$(cpu_ticks "$FERRY_PID")
    t_cpu=$(($(cpu_ticks "$T_PID") - t_cpu0)) s_cpu=$(($(cpu_ticks "$S_PID") - s_cpu0))
    t_rd=$(($(read_bytes "$T_PID") - t_rd0)) s_rd=$(($(read_bytes "$S_PID") - s_rd0)) M_FERRY=$(machine "$m0")
    ferry_rd=$(read_bytes "$FERRY_PID")
    t_fsync=$(($(status_var "$T_PORT" Innodb_data_fsyncs) - t_fsync0))
    FERRY_RATE=$(awk -v c="$CHANGES" -v s="$FERRY_S" 'BEGIN { printf "%.0f", c / s }')
    log "ferry: caught up in ${FERRY_S}s ($FERRY_RATE changes/s)"
    rc=0
    stop_ferry || rc=$?
    ((rc == 0)) || die "ferry run exited with $rc on SIGTERM after the catch-up"
    if grep -q ' ERROR \| WARN ' "$WORK/ferry.log"; then
        log "note: ferry's log has warnings or errors:"
        grep ' ERROR \| WARN ' "$WORK/ferry.log" | tail -n 10 >&2
    fi
}
