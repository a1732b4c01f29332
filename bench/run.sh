#!/usr/bin/env bash
# bench/run.sh: tollgate side by side with its backend and nginx, under wrk
# on loopback (issue 5). Run it with `make bench-proxy`.
#
# It installs nothing. It needs go, curl and wrk; nginx is optional (the
# nginx systems are skipped, saying so, when it is missing) and so is taskset
# (without it there is no pinned mode). On Debian:
#     apt-get install -y wrk nginx-light        # or nginx
#
# Systems, all in front of one fasthttp keep-alive backend (bench/backend,
# fixed 200-byte JSON body; a request with slow_ms=N in its query is answered
# after N ms):
#   backend        wrk straight to the backend: the ceiling
#   nginx          nginx as a plain keep-alive reverse proxy
#   nginx-auth     nginx checking X-API-Key against a map of 10,000 keys (401
#                  when absent) and adding a few headers
#   forwarder      the bare proxy: bench/forwarder, a naive fasthttp HostClient
#                  reverse proxy (no auth, no quota, no headers)
#   forwarder-pipe the same over a fasthttp PipelineClient (BENCH_PIPE_CONNS
#                  upstream connections); not in the default list
#   tollgate       API-key auth + monthly quota + limit headers, embedded NATS,
#                  access log off, upstream through its connection pool
#   tollgate-pipe  the same with upstreams.backend.pipeline: {conns:
#                  BENCH_PIPE_CONNS}: requests pipelined to the backend
#   tollgate-rate  tollgate whose plan also has a short-window rate limit
#                  (GCRA), set far above what any run reaches
#   tollgate-log   tollgate with the access log on (written to a file)
# A system whose program is missing (nginx not installed, a Go build that
# failed) is skipped, saying so.
#
# Loads, each measured for the systems that are running:
#   saturated  BENCH_CONNS connections sending as fast as answers come (all)
#   moderate   BENCH_MODERATE_CONNS connections, each waiting
#              BENCH_MODERATE_DELAY_MS before every request (all but
#              tollgate-log)
#   slowmix    BENCH_SLOWMIX_CONNS connections as fast as answers come, 1
#              request in BENCH_SLOWMIX_EVERY answered by the backend after
#              BENCH_SLOWMIX_MS (BENCH_SLOWMIX_SYSTEMS): on a pipelined
#              upstream connection answers come back in order, so a slow one
#              holds up those queued behind it (head-of-line blocking). Its
#              percentiles are per request (wrk's correction for coordinated
#              omission undone, see bench/lua/bench.lua), wrk's own beside.
# Systems run side by side; each round measures every system once per load,
# the starting system rotating from round to round (A B C, B C A, ...) so that
# drift hits all alike. Each measurement is a discarded warm-up run and then a
# measured run. Modes: "pinned" (wrk on CPU 0; backend and proxies on CPU 1,
# GOMAXPROCS=1, nginx worker_processes 1) and "unpinned" (no affinity, nginx
# worker_processes auto).
#
# Settings (environment):
#   BENCH_ROUNDS=3  BENCH_WARMUP=2  BENCH_DURATION=8   rounds, seconds
#   BENCH_CONNS=100                      connections of the saturating runs
#   BENCH_MODES="pinned unpinned"        or one of them
#   BENCH_SYSTEMS="backend nginx nginx-auth forwarder tollgate tollgate-pipe tollgate-rate tollgate-log"
#                                        (forwarder-pipe may be added)
#   BENCH_PIPE_CONNS=4                   upstream connections of tollgate-pipe
#                                        and forwarder-pipe
#   BENCH_MAIN=1                         0 skips the comparison (scale only)
#   BENCH_MODERATE=1                     also the unsaturated run:
#   BENCH_MODERATE_CONNS=10 BENCH_MODERATE_DELAY_MS=1  (each connection waits
#                                        1 ms before each request)
#   BENCH_SLOWMIX=1                      also the slow-response mix:
#   BENCH_SLOWMIX_CONNS=100 BENCH_SLOWMIX_EVERY=100 BENCH_SLOWMIX_MS=20
#   BENCH_SLOWMIX_SYSTEMS="backend nginx forwarder forwarder-pipe tollgate tollgate-pipe"
#                                        (those of them that are running)
#   BENCH_SCALE=1                        also the scale figures:
#   BENCH_SCALE_TENANTS="1 1000 100000"  active tenants (one key each)
#   BENCH_STEADY_CONNS=30                connections of the ~10k req/s run
#   BENCH_READY_KEYS=1000000             credentials for the readiness timing
#                                        (0 skips it)
#   BENCH_SYNC_ALWAYS=true               tollgate's nats.sync_always (its default)
#   BENCH_PIPELINE=                      N: the scale runs' tollgate pipelines
#                                        its upstream over N connections. (It
#                                        used to switch the comparison's
#                                        tollgate to pipelining; the comparison
#                                        now has both, tollgate and
#                                        tollgate-pipe, and BENCH_PIPELINE=N
#                                        only stands in for BENCH_PIPE_CONNS.)
#   BENCH_MAX_LEASE=                     tollgate's quota.max_lease (empty: its
#                                        default, DEFAULT_MAX_LEASE below)
#   BENCH_RESULTS=bench/RESULTS.md       where the tables go ("" : nowhere)
#   BENCH_KEEP=0                         1 keeps the work dir (logs, wrk output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-2}
DURATION=${BENCH_DURATION:-8}
CONNS=${BENCH_CONNS:-100}
MODES=${BENCH_MODES:-pinned unpinned}
SYSTEMS=${BENCH_SYSTEMS:-backend nginx nginx-auth forwarder tollgate tollgate-pipe tollgate-rate tollgate-log}
# tollgate-rate's short-window limit: far above what any run reaches, so
# every request pays for the check and none is refused
RATE_LIMIT=1000000000
MAIN=${BENCH_MAIN:-1}
MODERATE=${BENCH_MODERATE:-1}
MOD_CONNS=${BENCH_MODERATE_CONNS:-10}
MOD_DELAY_MS=${BENCH_MODERATE_DELAY_MS:-1}
SLOWMIX=${BENCH_SLOWMIX:-1}
SLOWMIX_CONNS=${BENCH_SLOWMIX_CONNS:-100}
SLOWMIX_EVERY=${BENCH_SLOWMIX_EVERY:-100}
SLOWMIX_MS=${BENCH_SLOWMIX_MS:-20}
SLOWMIX_SYSTEMS=${BENCH_SLOWMIX_SYSTEMS:-backend nginx forwarder forwarder-pipe tollgate tollgate-pipe}
SCALE=${BENCH_SCALE:-1}
SCALE_TENANTS=${BENCH_SCALE_TENANTS:-1 1000 100000}
STEADY_CONNS=${BENCH_STEADY_CONNS:-30}
READY_KEYS=${BENCH_READY_KEYS:-1000000}
RESULTS=${BENCH_RESULTS-$ROOT/bench/RESULTS.md}
KEEP=${BENCH_KEEP:-0}
SYNC_ALWAYS=${BENCH_SYNC_ALWAYS:-true}
MAX_LEASE=${BENCH_MAX_LEASE:-}
# tollgate's default quota.max_lease (internal/config/config.go); only used
# to bound the quota check and to label the tables.
DEFAULT_MAX_LEASE=10000
PIPELINE=${BENCH_PIPELINE:-}
PIPE_CONNS=${BENCH_PIPE_CONNS:-${PIPELINE:-4}}

LUA=$ROOT/bench/lua/bench.lua
ADMIN_TOKEN=tga_bench_$(date +%s)_not_a_secret
export BENCH_ADMIN_TOKEN=$ADMIN_TOKEN # tollgate's config reads it: admin.token
PLAN_LIMIT=1000000000000 # a monthly quota no run gets near
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
BIN=$WORK/bin
TSV=$WORK/results.tsv # one line per measured run
RSS=$WORK/rss.tsv     # mode system peak-kB
NOTES=$WORK/notes.md  # problems seen (non-2xx, errors, log lines)
: >"$TSV"
: >"$RSS"
: >"$NOTES"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
note() { printf -- '- %s\n' "$*" >>"$NOTES"; log "NOTE: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- processes

STARTED=() # PIDs of every process this script started

# start_bg LOG CMD...: run CMD in the background, output appended to LOG;
# sets PID. Prefixes like `env` and `taskset` exec, so PID is the server's.
start_bg() {
	local out=$1
	shift
	"$@" >>"$out" 2>&1 &
	PID=$!
	STARTED+=("$PID")
}

# stop_pid PID [SECONDS]: SIGTERM, wait, then SIGKILL. Only PIDs we started.
stop_pid() {
	local pid=$1 grace=${2:-25} i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "PID $pid did not stop in ${grace}s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	local keep=() p
	for p in "${STARTED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	STARTED=(${keep[@]+"${keep[@]}"})
}

cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in ${STARTED[@]+"${STARTED[@]}"}; do stop_pid "$p" 5; done
	if [[ $KEEP == 1 || $rc != 0 ]]; then
		log "work dir kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "
# Listen ports come from below the kernel's ephemeral range: a port that an
# outgoing connection holds refuses connections yet cannot be bound.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=32768
# free_port: a loopback port nothing listens on and not handed out before.
free_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			USED_PORTS+="$p "
			echo "$p"
			return
		fi
	done
}

# wait_http URL SECONDS PID: until URL answers 2xx; fails if PID dies.
wait_http() {
	local url=$1 secs=$2 pid=$3 i
	for ((i = 0; i < secs * 20; i++)); do
		kill -0 "$pid" 2>/dev/null || return 1
		curl -fso /dev/null --max-time 1 "$url" && return 0
		sleep 0.05
	done
	return 1
}

# wait_port PORT SECONDS PID: until something accepts on 127.0.0.1:PORT.
wait_port() {
	local port=$1 secs=$2 pid=$3 i
	for ((i = 0; i < secs * 20; i++)); do
		kill -0 "$pid" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

children() { pgrep -P "$1" | tr '\n' ' ' || true; }

# cpu_ticks PID...: utime+stime of the processes (all their threads).
cpu_ticks() {
	local p t=0 v
	for p in "$@"; do
		v=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || continue
		t=$((t + v))
	done
	echo "$t"
}

# hwm_kb PID...: sum of the processes' peak resident set (VmHWM).
hwm_kb() {
	local p t=0 v
	for p in "$@"; do
		v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo ""; }

metric() { # metric ADMIN_ADDR NAME: a Prometheus sample's value, summed over its labels
	{ curl -fs --max-time 5 "http://$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $2; f = 1} END {if (f) printf "%.0f\n", s}'; } || true
}

steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }

# ---------------------------------------------------------------- building

build() {
	log "building tollgate, backend, forwarder and seed into $BIN"
	mkdir -p "$BIN"
	(cd "$ROOT" &&
		go build -o "$BIN/tollgate" ./cmd/tollgate &&
		go build -o "$BIN/backend" ./bench/backend &&
		go build -o "$BIN/seed" ./bench/seed) || die "go build failed (the tree may be mid-edit)"
	# the bare proxy is only a reference: without it its systems are skipped
	(cd "$ROOT" && go build -o "$BIN/forwarder" ./bench/forwarder) ||
		note "go build ./bench/forwarder failed: forwarder systems skipped"
}

# ---------------------------------------------------------------- systems

declare -A URL PIDS KEY ADMIN
BACKEND_PID=""
BACKEND_ADDR=""

# srv_prefix: the command prefix that places a server process in this mode.
srv_prefix() { # MODE GO(0/1)
	if [[ $1 == pinned ]]; then
		if [[ $2 == 1 ]]; then echo "env GOMAXPROCS=1 taskset -c 1"; else echo "taskset -c 1"; fi
	fi
}

start_backend() { # MODE
	local port
	mkdir -p "$WORK/$1"
	port=$(free_port)
	BACKEND_ADDR=127.0.0.1:$port
	# shellcheck disable=SC2046
	start_bg "$WORK/$1/backend.log" $(srv_prefix "$1" 1) "$BIN/backend" -addr "$BACKEND_ADDR"
	BACKEND_PID=$PID
	wait_http "http://$BACKEND_ADDR/" 10 "$PID" || die "backend did not start ($(tail -3 "$WORK/$1/backend.log"))"
	URL[backend]=http://$BACKEND_ADDR/v1/items
	PIDS[backend]=$PID
}

# start_forwarder MODE NAME [PIPELINE_CONNS]: the bare fasthttp proxy,
# placed like the backend (pinned: CPU 1, GOMAXPROCS=1).
start_forwarder() {
	local mode=$1 name=$2 pipe=${3:-} dir=$WORK/$1/$2 port args=()
	mkdir -p "$dir"
	port=$(free_port)
	[[ -z $pipe ]] || args=(-pipeline "$pipe")
	# shellcheck disable=SC2046
	start_bg "$dir/forwarder.log" $(srv_prefix "$mode" 1) "$BIN/forwarder" -addr "127.0.0.1:$port" \
		-upstream "$BACKEND_ADDR" ${args[@]+"${args[@]}"}
	PIDS[$name]=$PID
	URL[$name]=http://127.0.0.1:$port/v1/items
	KEY[$name]=$(head -n1 "$WORK/nginx-keys.txt")
	wait_http "${URL[$name]}" 10 "$PID" || die "$name did not start ($(tail -n 3 "$dir/forwarder.log" | tr '\n' ' '))"
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: ${KEY[$name]}" "${URL[$name]}")
	[[ $code == 200 ]] || die "$name answers $code to a valid request"
}

nginx_conf() { # KIND DIR PORT WORKERS
	local kind=$1 dir=$2 port=$3 workers=$4
	mkdir -p "$dir/tmp"
	{
		cat <<-EOF
			worker_processes $workers;
			daemon off;
			master_process on;
			pid $dir/nginx.pid;
			error_log $dir/error.log warn;
			events { worker_connections 8192; }
			http {
			    access_log off;
			    default_type application/json;
			    client_body_temp_path $dir/tmp/body;
			    proxy_temp_path $dir/tmp/proxy;
			    keepalive_requests 1000000;
			    upstream backend {
			        server $BACKEND_ADDR;
			        keepalive 128;
			        keepalive_requests 1000000;
			    }
		EOF
		if [[ $kind == nginx-auth ]]; then
			cat <<-EOF
				    map_hash_max_size 65536;
				    map_hash_bucket_size 256;
				    map \$http_x_api_key \$tenant {
				        default "";
				        include $WORK/nginx-keys.map;
				    }
				    server {
				        listen 127.0.0.1:$port;
				        location / {
				            if (\$tenant = "") {
				                return 401 '{"ok":false,"status":401,"problems":[{"level":"SEVERE","code":"credential_invalid"}]}';
				            }
				            proxy_pass http://backend;
				            proxy_http_version 1.1;
				            proxy_set_header Connection "";
				            proxy_set_header X-API-Key "";
				            proxy_set_header X-Tollgate-Tenant \$tenant;
				            add_header X-Request-Id \$request_id always;
				            add_header X-RateLimit-Limit 1000000 always;
				        }
				    }
				}
			EOF
		else
			cat <<-EOF
				    server {
				        listen 127.0.0.1:$port;
				        location / {
				            proxy_pass http://backend;
				            proxy_http_version 1.1;
				            proxy_set_header Connection "";
				        }
				    }
				}
			EOF
		fi
	} >"$dir/nginx.conf"
}

start_nginx() { # MODE KIND
	local mode=$1 kind=$2 dir=$WORK/$1/$2 port workers=auto
	[[ $mode == pinned ]] && workers=1
	port=$(free_port)
	nginx_conf "$kind" "$dir" "$port" "$workers"
	nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || die "$kind: nginx -t failed"
	# shellcheck disable=SC2046
	start_bg "$dir/stderr.log" $(srv_prefix "$mode" 0) nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
	local master=$PID
	URL[$kind]=http://127.0.0.1:$port/v1/items
	if [[ $kind == nginx-auth ]]; then KEY[$kind]=$(head -n1 "$WORK/nginx-keys.txt"); fi
	wait_port "$port" 10 "$master" || die "$kind did not start: $(tail -n 3 "$dir/error.log" "$dir/stderr.log" 2>/dev/null | tr '\n' ' ')"
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -n $(children "$master") ]] && break
		sleep 0.1
	done
	PIDS[$kind]="$master $(children "$master")"
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: ${KEY[$kind]:-none}" "${URL[$kind]}")
	[[ $code == 200 ]] || die "$kind answers $code to a valid request"
	if [[ $kind == nginx-auth ]]; then
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: tg_not_a_key" "${URL[$kind]}")
		[[ $code == 401 ]] || die "nginx-auth answers $code to an unknown key"
	fi
}

# tollgate_config FILE DATA_DIR LISTEN ADMIN ACCESS(true/false) SYNC(true/false)
#   PIPELINE_CONNS("": the connection pool) [NATS_LISTEN]
tollgate_config() {
	local nats="{}" upstream="{url: \"http://$BACKEND_ADDR\"}"
	[[ -z $7 ]] || upstream="{url: \"http://$BACKEND_ADDR\", pipeline: {conns: $7}}"
	[[ -n ${8:-} ]] && nats="{listen: \"$8\", sync_always: $6}" || nats="{sync_always: $6}"
	cat >"$1" <<-EOF
		# written by bench/run.sh
		listen: $3
		admin: {listen: "$4", token: "\${BENCH_ADMIN_TOKEN}"}
		data_dir: $2
		nats: $nats
		quota: {timezone: UTC${MAX_LEASE:+, max_lease: $MAX_LEASE}}
		log: {access: $5}
		plans:
		  bench: {monthly_requests: $PLAN_LIMIT}
		  bench-rate: {monthly_requests: $PLAN_LIMIT, rate: {requests: $RATE_LIMIT, per: 1s}}
		upstreams:
		  backend: $upstream
		routes:
		  - {path_prefix: /, upstream: backend, auth: [api_key]}
	EOF
}

# start_tollgate MODE NAME CONFIG LOG: starts it, waits for /readyz; sets
# PID and READY_MS (exec to first 200 from /readyz).
start_tollgate() {
	local mode=$1 name=$2 cfg=$3 out=$4 admin t0
	admin=$(awk -F'"' '/^admin:/ {print $2}' "$cfg")
	t0=$(date +%s%N)
	# shellcheck disable=SC2046
	start_bg "$out" $(srv_prefix "$mode" 1) "$BIN/tollgate" serve -config "$cfg"
	if ! wait_http "http://$admin/readyz" 300 "$PID"; then
		note "$name did not become ready: $(tail -n 3 "$out" | tr '\n' ' ')"
		return 1
	fi
	READY_MS=$((($(date +%s%N) - t0) / 1000000))
	ADMIN[$name]=$admin
}

tg_admin() { # NAME ARGS...
	local name=$1
	shift
	"$BIN/tollgate" admin -url "http://${ADMIN[$name]}" -token "$ADMIN_TOKEN" "$@"
}

# setup_tollgate MODE NAME ACCESS [PIPELINE_CONNS]: a tollgate with tenant
# bench-1 and one key.
setup_tollgate() {
	local mode=$1 name=$2 access=$3 pipe=${4:-} dir=$WORK/$1/$2 port aport out
	mkdir -p "$dir"
	port=$(free_port)
	aport=$(free_port)
	tollgate_config "$dir/config.yaml" "$dir/data" "127.0.0.1:$port" "127.0.0.1:$aport" "$access" "$SYNC_ALWAYS" "$pipe"
	out=$dir/tollgate.log
	[[ $access == true ]] && out=$dir/tollgate+access.log
	start_tollgate "$mode" "$name" "$dir/config.yaml" "$out" || die "$name did not start"
	log "$name ready in ${READY_MS} ms (empty store)"
	PIDS[$name]=$PID
	URL[$name]=http://127.0.0.1:$port/v1/items
	local plan=bench
	[[ $name == tollgate-rate ]] && plan=bench-rate
	tg_admin "$name" tenants create bench-1 --plan "$plan" >/dev/null
	KEY[$name]=$(tg_admin "$name" keys create bench-1 --name wrk 2>/dev/null | sed -n 's/.*"key": "\(tg_[^"]*\)".*/\1/p')
	[[ -n ${KEY[$name]} ]] || die "$name: could not create a key"
	# the hot path really is on: 200 with the limit headers, 401 without a key
	local hdrs
	hdrs=$(curl -s -D - -o /dev/null -H "X-API-Key: ${KEY[$name]}" "${URL[$name]}")
	grep -q '^HTTP/1.1 200' <<<"$hdrs" || die "$name: a valid key got: $(head -n1 <<<"$hdrs")"
	grep -qi '^X-RateLimit-Limit: ' <<<"$hdrs" || die "$name: no X-RateLimit-Limit header"
	[[ $(curl -s -o /dev/null -w '%{http_code}' "${URL[$name]}") == 401 ]] || die "$name: no 401 without a key"
	SERVED[$name]=1
	SLACK[$name]=${MAX_LEASE:-$DEFAULT_MAX_LEASE}
}

# ---------------------------------------------------------------- measuring

declare -A SERVED # 2xx responses wrk counted per tollgate (warm-ups too)
# SLACK: how far the quota counter may exceed SERVED: the requests in flight
# when each wrk run stopped (at most its connections) plus one unspent lease.
declare -A SLACK

# run_wrk MODE SECONDS CONNS URL KEY DELAY_MS KEYS_FILE OUT [SLOW_EVERY]: one
# wrk run; prints its WRKRESULT fields. SLOW_EVERY: the slow-response mix,
# every Nth request answered after SLOWMIX_MS, per-request percentiles too.
run_wrk() {
	local mode=$1 secs=$2 conns=$3 url=$4 key=$5 delay=$6 keys=$7 out=$8 slow=${9:-} threads=2 place=()
	local raw=0 slow_ms=""
	# pinned: wrk alone on CPU 0 with one thread; unpinned: two threads
	[[ $mode == pinned ]] && threads=1 place=(taskset -c 0)
	((conns < threads)) && threads=$conns
	[[ -z $slow ]] || raw=1 slow_ms=$SLOWMIX_MS
	BENCH_DELAY_MS=$delay BENCH_KEYS_FILE=$keys BENCH_WRK_THREADS=$threads BENCH_WRK_CONNS=$conns \
		BENCH_SLOW_EVERY=$slow BENCH_SLOW_MS=$slow_ms BENCH_RAW_LATENCY=$raw \
		timeout $((secs + 30)) ${place[@]+"${place[@]}"} wrk -t"$threads" \
		-c"$conns" -d"${secs}s" --timeout 5s --latency -s "$LUA" \
		-H "X-API-Key: $key" "$url" >"$out" 2>&1 || true
	local line
	line=$(grep '^WRKRESULT ' "$out" || true)
	[[ -n $line ]] || { note "wrk produced no result ($out): $(tail -n 2 "$out" | tr '\n' ' ')"; echo ""; return; }
	echo "${line#WRKRESULT }"
}

field() { # field "k=v k=v" NAME [DEFAULT (0)]
	local kv
	for kv in $1; do [[ ${kv%%=*} == "$2" ]] && { echo "${kv#*=}"; return; }; done
	echo "${3-0}"
}

# measure MODE LOAD SYSTEM ROUND CONNS DELAY_MS KEYS_FILE [SLOW_EVERY]:
# warm-up, then a measured run with the CPU time of the system's processes
# (and of the backend) and, for tollgate, its ledger operations; appends to
# $TSV: mode load system round rps p50 p99 requests non2xx errors cpu/req
# backend-cpu/req ledger/s records/s p99.9, then (slow mix only) the
# per-request p50 p90 p99 p99.9; latencies in µs.
measure() {
	local mode=$1 load=$2 sys=$3 round=$4 conns=$5 delay=$6 keys=$7 slow=${8:-}
	local url=${URL[$sys]} key=${KEY[$sys]:-tg_none} dir=$WORK/$1/wrk
	# shellcheck disable=SC2206
	local pids=(${PIDS[$sys]})
	mkdir -p "$dir"
	local r c0 c1 b0 b1 l0="" l1="" w0="" w1="" req non2xx
	r=$(run_wrk "$mode" "$WARMUP" "$conns" "$url" "$key" "$delay" "$keys" "$dir/$load-$sys-$round-warmup.txt" "$slow")
	count_served "$sys" "$r" "$conns"
	c0=$(cpu_ticks "${pids[@]}")
	b0=$(cpu_ticks "$BACKEND_PID")
	if [[ -n ${ADMIN[$sys]:-} ]]; then
		l0=$(metric "${ADMIN[$sys]}" tollgate_ledger_operations_total)
		w0=$(metric "${ADMIN[$sys]}" tollgate_lease_record_writes_total)
	fi
	r=$(run_wrk "$mode" "$DURATION" "$conns" "$url" "$key" "$delay" "$keys" "$dir/$load-$sys-$round.txt" "$slow")
	c1=$(cpu_ticks "${pids[@]}")
	b1=$(cpu_ticks "$BACKEND_PID")
	if [[ -n ${ADMIN[$sys]:-} ]]; then
		l1=$(metric "${ADMIN[$sys]}" tollgate_ledger_operations_total)
		w1=$(metric "${ADMIN[$sys]}" tollgate_lease_record_writes_total)
	fi
	[[ -n $r ]] || return 0
	count_served "$sys" "$r" "$conns"
	req=$(field "$r" requests)
	non2xx=$(field "$r" non2xx)
	local errs=$(($(field "$r" err_connect) + $(field "$r" err_read) + $(field "$r" err_write) + $(field "$r" err_timeout)))
	local secs ledger="" records=""
	secs=$(awk -v d="$(field "$r" duration_us)" 'BEGIN {print d / 1e6}')
	[[ -n $l0 && -n $l1 ]] && ledger=$(awk -v a="$l0" -v b="$l1" -v s="$secs" 'BEGIN {printf "%.1f", (b - a) / s}')
	[[ -n $w0 && -n $w1 ]] && records=$(awk -v a="$w0" -v b="$w1" -v s="$secs" 'BEGIN {printf "%.1f", (b - a) / s}')
	awk -v OFS='\t' -v m="$mode" -v l="$load" -v s="$sys" -v rd="$round" -v rps="$(field "$r" rps)" \
		-v p50="$(field "$r" p50_us)" -v p99="$(field "$r" p99_us)" -v req="$req" -v n2="$non2xx" -v e="$errs" \
		-v c="$((c1 - c0))" -v b="$((b1 - b0))" -v hz="$CLK_TCK" -v led="$ledger" -v rec="$records" \
		-v p999="$(field "$r" p999_us "")" -v r50="$(field "$r" raw_p50_us "")" -v r90="$(field "$r" raw_p90_us "")" \
		-v r99="$(field "$r" raw_p99_us "")" -v r999="$(field "$r" raw_p999_us "")" 'BEGIN {
			cpu = req > 0 ? c * 1e6 / hz / req : 0; bcpu = req > 0 ? b * 1e6 / hz / req : 0
			print m, l, s, rd, rps, p50, p99, req, n2, e, sprintf("%.2f", cpu), sprintf("%.2f", bcpu), led, rec, p999, r50, r90, r99, r999
		}' >>"$TSV"
	log "$(printf '%-9s %-16s %-12s r%s %9.0f req/s  p50 %6.2f ms  p99 %7.2f ms  cpu %6.2f us/req  non2xx %s errors %s%s' \
		"$mode" "$load" "$sys" "$round" "$(field "$r" rps)" "$(awk -v v="$(field "$r" p50_us)" 'BEGIN{print v/1000}')" \
		"$(awk -v v="$(field "$r" p99_us)" 'BEGIN{print v/1000}')" "$(tail -n1 "$TSV" | cut -f11)" "$non2xx" "$errs" \
		"${ledger:+  ledger ${ledger}/s}${records:+  records ${records}/s}")"
	if [[ -n $slow ]]; then
		local rp90 rp999
		rp90=$(field "$r" raw_p90_us "")
		rp999=$(field "$r" raw_p999_us "")
		if [[ -n $rp90 ]]; then
			log "$(printf '%-9s %-16s %-12s r%s per request: p90 %.2f ms, p99.9 %.2f ms' "$mode" "$load" "$sys" "$round" \
				"$(awk -v v="$rp90" 'BEGIN{print v/1000}')" "$(awk -v v="$rp999" 'BEGIN{print v/1000}')")"
		else
			note "$mode $load $sys round $round: no per-request percentiles (wrk's histogram could not be uncorrected; $dir/$load-$sys-$round.txt)"
		fi
	fi
	if ((non2xx > 0 || errs > 0)); then
		note "$mode $load $sys round $round: $non2xx non-2xx responses and $errs socket errors out of $req (wrk output: $dir/$load-$sys-$round.txt)"
	fi
}

count_served() { # SYSTEM WRKFIELDS CONNS
	[[ -n $2 && -n ${SERVED[$1]+x} ]] || return 0
	SERVED[$1]=$((SERVED[$1] + $(field "$2" requests) - $(field "$2" non2xx)))
	SLACK[$1]=$((SLACK[$1] + $3))
}

# check_tollgate MODE NAME LOG: after a mode, compare the quota counter with
# what wrk counted, and collect error codes and warning/error log lines.
check_tollgate() {
	local mode=$1 name=$2 out=$3 used codes lines
	used=$(tg_admin "$name" usage bench-1 2>/dev/null | sed -n 's/.*"used": \([0-9]*\).*/\1/p')
	log "$mode $name: quota used ${used:-?}, 2xx counted by wrk ${SERVED[$name]}, allowed excess ${SLACK[$name]}"
	echo -e "$mode\t$name\t${used:-}\t${SERVED[$name]}\t${SLACK[$name]}" >>"$WORK/usage.tsv"
	if [[ -z $used ]]; then
		note "$mode $name: could not read the quota usage of bench-1"
	elif ((used < SERVED[$name])); then
		note "$mode $name: quota counted $used but wrk saw ${SERVED[$name]} 2xx responses: requests served uncounted"
	elif ((used > SERVED[$name] + SLACK[$name])); then
		note "$mode $name: quota counted $used, more than the ${SERVED[$name]} 2xx wrk saw plus ${SLACK[$name]} in flight or leased"
	fi
	# (one credential_missing is the harness's own check that a request
	# without a key gets 401)
	codes=$(curl -fs "http://${ADMIN[$name]}/metrics" |
		awk '/^tollgate_errors_total/ && $2 > 0 && !($1 ~ /"credential_missing"/ && $2 == 1) {printf "%s=%s ", $1, $2}')
	[[ -z $codes ]] || note "$mode $name error counters: $codes"
	# warnings and errors, but not the "nats disconnected" every shutdown logs
	lines=$(grep -E '"level":"(warn|error|dpanic|panic|fatal)"' "$out" | grep -v '"logger":"access"' | grep -v '"nats disconnected"' || true)
	if [[ -n $lines ]]; then
		note "$mode $name logged $(wc -l <<<"$lines") warning/error lines, first: \`$(head -n1 <<<"$lines" | cut -c1-300)\`"
	fi
}

TOLLGATES="tollgate tollgate-pipe tollgate-rate tollgate-log" # the systems with a quota to check

# check_slow SYSTEM: one request for the slow URL through the system must get
# 200 after at least SLOWMIX_MS (so the query reaches the backend); 1 if not.
check_slow() {
	local sys=$1 out code secs
	out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 \
		-H "X-API-Key: ${KEY[$sys]:-none}" "${URL[$sys]}?slow_ms=$SLOWMIX_MS") || true
	read -r code secs <<<"$out"
	[[ $code == 200 && -n ${SERVED[$sys]+x} ]] && SERVED[$sys]=$((SERVED[$sys] + 1))
	if [[ $code != 200 ]] || ! awk -v s="$secs" -v ms="$SLOWMIX_MS" 'BEGIN {exit !(s * 1000 >= ms * 0.9)}'; then
		note "$sys: a slow request (slow_ms=$SLOWMIX_MS) got ${code:-no answer} in ${secs:-?} s: no slow-mix runs for it"
		return 1
	fi
}

# trim_access_log MODE: the access log grows fast; keep its problems (moved
# to tollgate.log), drop its lines.
trim_access_log() {
	local f=$WORK/$1/tollgate-log/tollgate+access.log
	[[ -f $f ]] || return 0
	grep -v '"logger":"access"' "$f" >>"$WORK/$1/tollgate-log/tollgate.log" || true
	: >"$f"
}

run_mode() { # MODE
	local mode=$1 sys active=() slowmix=() round i
	mkdir -p "$WORK/$mode"
	log "=== mode $mode ==="
	start_backend "$mode"
	for sys in $SYSTEMS; do
		case $sys in
		backend) KEY[backend]=$(head -n1 "$WORK/nginx-keys.txt") ;;
		nginx | nginx-auth)
			if ! have nginx; then
				log "skipping $sys: nginx is not installed (apt-get install -y nginx-light)"
				continue
			fi
			start_nginx "$mode" "$sys"
			;;
		forwarder | forwarder-pipe)
			if [[ ! -x $BIN/forwarder ]]; then
				log "skipping $sys: no forwarder binary (its build failed)"
				continue
			fi
			if [[ $sys == forwarder ]]; then start_forwarder "$mode" "$sys"; else start_forwarder "$mode" "$sys" "$PIPE_CONNS"; fi
			;;
		tollgate) setup_tollgate "$mode" tollgate false ;;
		tollgate-pipe) setup_tollgate "$mode" tollgate-pipe false "$PIPE_CONNS" ;;
		tollgate-rate) setup_tollgate "$mode" tollgate-rate false ;;
		tollgate-log) setup_tollgate "$mode" tollgate-log true ;;
		*) die "unknown system $sys" ;;
		esac
		active+=("$sys")
		if [[ $SLOWMIX == 1 && " $SLOWMIX_SYSTEMS " == *" $sys "* ]] && check_slow "$sys"; then
			slowmix+=("$sys")
		fi
	done
	local n=${#active[@]} ns=${#slowmix[@]}
	for ((round = 1; round <= ROUNDS; round++)); do
		for ((i = 0; i < n; i++)); do
			sys=${active[$(((i + round - 1) % n))]}
			measure "$mode" saturated "$sys" "$round" "$CONNS" "" ""
			[[ $sys != tollgate-log ]] || trim_access_log "$mode"
		done
		if [[ $MODERATE == 1 ]]; then
			for ((i = 0; i < n; i++)); do
				sys=${active[$(((i + round - 1) % n))]}
				[[ $sys == tollgate-log ]] && continue
				measure "$mode" moderate "$sys" "$round" "$MOD_CONNS" "$MOD_DELAY_MS" ""
			done
		fi
		for ((i = 0; i < ns; i++)); do
			sys=${slowmix[$(((i + round - 1) % ns))]}
			measure "$mode" slowmix "$sys" "$round" "$SLOWMIX_CONNS" "" "" "$SLOWMIX_EVERY"
			[[ $sys != tollgate-log ]] || trim_access_log "$mode"
		done
	done
	for sys in "${active[@]}"; do
		# shellcheck disable=SC2086
		echo -e "$mode\t$sys\t$(hwm_kb ${PIDS[$sys]})" >>"$RSS"
	done
	for sys in $TOLLGATES; do
		[[ -n ${ADMIN[$sys]:-} ]] || continue
		[[ $sys != tollgate-log ]] || trim_access_log "$mode"
		check_tollgate "$mode" "$sys" "$WORK/$mode/$sys/tollgate.log"
	done
	for sys in "${active[@]}"; do
		[[ $sys == backend ]] && continue
		# shellcheck disable=SC2206
		local p=(${PIDS[$sys]})
		stop_pid "${p[0]}"
		unset "ADMIN[$sys]"
	done
	if [[ -f $WORK/$mode/tollgate-log/tollgate+access.log ]]; then # what it logged while stopping
		trim_access_log "$mode"
		rm -f "$WORK/$mode/tollgate-log/tollgate+access.log"
	fi
	stop_pid "$BACKEND_PID"
	for sys in $TOLLGATES; do
		local f=$WORK/$mode/$sys/tollgate.log
		if [[ -f $f ]] && ! grep -q '"msg":"stopped"' "$f"; then
			note "$mode $sys: no \"stopped\" line after SIGTERM (log: $f)"
		fi
	done
	return 0
}

# ---------------------------------------------------------------- scale

# run_scale MODE: requests/s as active tenants grow, ledger operations at
# a steady ~10k req/s, and time to ready with many credentials.
#
# The store is seeded once and kept as a pristine copy; every measurement
# runs on a fresh tollgate started from that copy and stopped afterwards.
# One long-lived replica would not do: the leases a run leaves with thousands
# of tenants keep the ledger busy (returns, lease records) long after it, and
# that work would be counted in, and slow down, whatever runs next.
run_scale() {
	local mode=$1 dir=$WORK/scale port aport nport maxt=0 t round
	mkdir -p "$dir"
	log "=== scale ($mode) ==="
	for t in $SCALE_TENANTS; do ((t > maxt)) && maxt=$t; done
	start_backend "$mode"
	port=$(free_port)
	aport=$(free_port)
	nport=$(free_port)
	# Seeding goes through a tollgate with sync_always off (a fsync per KV
	# write makes a million records take many minutes); every measurement
	# runs with BENCH_SYNC_ALWAYS (default on, tollgate's default).
	tollgate_config "$dir/seed.yaml" "$dir/data" "127.0.0.1:$port" "127.0.0.1:$aport" false false "$PIPELINE" "127.0.0.1:$nport"
	tollgate_config "$dir/run.yaml" "$dir/data" "127.0.0.1:$port" "127.0.0.1:$aport" false "$SYNC_ALWAYS" "$PIPELINE"
	start_tollgate unpinned scale "$dir/seed.yaml" "$dir/seed.log" || die "scale tollgate did not start"
	local tg=$PID
	echo -e "unpinned\t0\t0\t$READY_MS\t$(hwm_kb "$PID")" >>"$WORK/ready.tsv"
	log "seeding $maxt tenants with one key each"
	"$BIN/seed" -nats "nats://127.0.0.1:$nport" -tenants "$maxt" -keys "$maxt" -plan bench \
		-keys-out "$dir/keys.txt" -timeout 10m | tee -a "$dir/seed.out" >&2
	stop_pid "$tg"
	cp -a "$dir/data" "$dir/pristine"
	for t in $SCALE_TENANTS; do head -n "$t" "$dir/keys.txt" >"$dir/keys-$t.txt"; done
	URL[scale]=http://127.0.0.1:$port/v1/items

	local load conns delay
	for ((round = 1; round <= ROUNDS; round++)); do
		for load in $(for t in $SCALE_TENANTS; do echo "tenants-$t"; done) \
			$(for t in $SCALE_TENANTS; do ((t <= 1000)) && echo "steady-$t"; done); do
			t=${load#*-}
			conns=$CONNS delay=""
			[[ $load == steady-* ]] && conns=$STEADY_CONNS delay=1
			rm -rf "$dir/data"
			cp -a "$dir/pristine" "$dir/data"
			start_tollgate "$mode" scale "$dir/run.yaml" "$dir/tollgate.log" || die "scale tollgate did not start"
			PIDS[scale]=$PID
			echo -e "$mode\t$maxt\t$maxt\t$READY_MS\t$(hwm_kb "$PID")\t" >>"$WORK/ready-runs.tsv"
			measure "$mode" "$load" scale "$round" "$conns" "$delay" "$dir/keys-$t.txt"
			local codes s0
			codes=$(curl -fs "http://${ADMIN[scale]}/metrics" |
				awk '/^tollgate_errors_total/ && $2 > 0 {printf "%s=%s ", $1, $2}')
			[[ -z $codes ]] || note "scale $load round $round error counters: $codes"
			# peak RSS, and how long SIGTERM takes (drain, leases returned)
			s0=$(date +%s%N)
			echo -e "$load\t$(hwm_kb "$PID")" >>"$dir/rss.tsv"
			stop_pid "$PID" 60
			echo -e "$load\t$((($(date +%s%N) - s0) / 1000000))" >>"$dir/stop.tsv"
			unset "ADMIN[scale]"
		done
	done
	# the 100k-tenant start, as the median of the starts above
	sort -t$'\t' -k4,4n "$WORK/ready-runs.tsv" | awk -v n="$(wc -l <"$WORK/ready-runs.tsv")" 'NR == int((n + 1) / 2)' >>"$WORK/ready.tsv"

	if ((READY_KEYS > maxt)); then
		local more=$((READY_KEYS - maxt))
		rm -rf "$dir/data"
		mv "$dir/pristine" "$dir/data"
		start_tollgate unpinned scale "$dir/seed.yaml" "$dir/seed.log" || die "scale tollgate did not start"
		tg=$PID
		log "seeding $more more keys (spread over the $maxt tenants)"
		if "$BIN/seed" -nats "nats://127.0.0.1:$nport" -tenants "$maxt" -write-tenants=false -keys "$more" \
			-timeout 15m | tee -a "$dir/seed.out" >&2; then
			stop_pid "$tg"
			log "timing a fresh start with $READY_KEYS credentials (unpinned)"
			if start_tollgate unpinned scale "$dir/run.yaml" "$dir/tollgate-1m.log"; then
				local creds
				creds=$(metric "${ADMIN[scale]}" tollgate_credentials)
				log "ready in $READY_MS ms with ${creds:-?} credentials"
				sleep 5
				echo -e "unpinned\t$maxt\t${creds:-?}\t$READY_MS\t$(hwm_kb "$PID")\t$(rss_kb "$PID")" >>"$WORK/ready.tsv"
				local code
				code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $(tail -n1 "$dir/keys.txt")" "${URL[scale]}")
				[[ $code == 200 ]] || note "after the 1M-credential start a valid key got $code"
				unset "ADMIN[scale]"
			else
				echo -e "unpinned\t$maxt\t$READY_KEYS\tFAILED\t" >>"$WORK/ready.tsv"
			fi
			stop_pid "$PID"
		else
			note "seeding $more keys failed"
			stop_pid "$tg"
		fi
	fi
	stop_pid "$BACKEND_PID"
	rm -rf "$dir/data" "$dir/pristine"
}

# ---------------------------------------------------------------- report

# med MODE LOAD SYSTEM COLUMN: median over rounds
med() {
	awk -F'\t' -v m="$1" -v l="$2" -v s="$3" -v c="$4" '$1 == m && $2 == l && $3 == s && $c != "" {print $c}' "$TSV" |
		sort -g | awk '{a[NR] = $1} END {if (NR == 0) exit; print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'
}
total() { awk -F'\t' -v m="$1" -v l="$2" -v s="$3" -v c="$4" '$1 == m && $2 == l && $3 == s {t += $c} END {print t + 0}' "$TSV"; }
runs() { awk -F'\t' -v m="$1" -v l="$2" -v s="$3" '$1 == m && $2 == l && $3 == s {n++} END {print n + 0}' "$TSV"; }
num() { # num VALUE DECIMALS: thousands separators; "–" when empty
	[[ -n $1 ]] || { echo "–"; return; }
	awk -v v="$1" -v d="$2" 'BEGIN {
		s = sprintf("%." d "f", v); i = index(s, "."); ip = i ? substr(s, 1, i - 1) : s; fp = i ? substr(s, i) : ""
		neg = ip ~ /^-/; if (neg) ip = substr(ip, 2)
		while (length(ip) > 3) { fp = "," substr(ip, length(ip) - 2) fp; ip = substr(ip, 1, length(ip) - 3) }
		print (neg ? "-" : "") ip fp }'
}
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "–"}' || echo "–"; }
ms() { [[ -n $1 ]] && awk -v v="$1" 'BEGIN {printf "%.2f", v / 1000}' || echo "–"; }

describe() {
	case $1 in
	backend) echo "backend direct (ceiling)" ;;
	nginx) echo "nginx, plain keep-alive proxy" ;;
	nginx-auth) echo "nginx + 10k-key \`map\` + headers" ;;
	forwarder) echo "bare proxy: fasthttp \`HostClient\` forwarder" ;;
	forwarder-pipe) echo "bare proxy, fasthttp \`PipelineClient\` ($PIPE_CONNS conns)" ;;
	tollgate) echo "**tollgate**: key + quota + limit headers" ;;
	tollgate-pipe) echo "**tollgate**, pipelined upstream ($PIPE_CONNS conns)" ;;
	tollgate-rate) echo "tollgate + a short-window rate limit (GCRA, far from its limit)" ;;
	tollgate-log) echo "tollgate, access log on (to a file)" ;;
	*) echo "$1" ;;
	esac
}

report_main() {
	local mode sys rps p50 p99 cpu bcpu rss led n2 er
	echo "Host: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ {print $2}') GiB;" \
		"kernel $(uname -r); $(go version | awk '{print $3}'); $(nginx -v 2>&1 | sed 's/^nginx version: //' || echo 'no nginx');" \
		"$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'). tollgate at $GIT_DESC."
	echo "Run: $STARTED_AT → $(date -u '+%H:%M UTC'); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
		"steal $(awk -v a="$STEAL0" -v b="$(steal_ticks)" -v s="$SECONDS" -v n="$(nproc)" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", (b - a) / hz / s / n * 100}') % of CPU time."
	echo "Each figure: median of $ROUNDS rounds of ${DURATION}s after ${WARMUP}s of warm-up; wrk with $CONNS connections" \
		"(\`--latency\`, \`--timeout 5s\`); CPU µs/req = the system's own utime+stime (all its processes, threads included)" \
		"during the measured run ÷ requests served; backend µs/req the same for the backend behind it; peak RSS = VmHWM at the end" \
		"(nginx: master + workers; tollgate: includes its embedded NATS). tollgate: plan of $(num "$PLAN_LIMIT" 0) requests/month," \
		"\`nats.sync_always: $SYNC_ALWAYS\`, \`quota.max_lease: ${MAX_LEASE:-$DEFAULT_MAX_LEASE (default)}\`; upstream through its connection pool," \
		"tollgate-pipe the same with \`upstreams.backend.pipeline: {conns: $PIPE_CONNS}\`; nginx:" \
		"upstream \`keepalive 128\`, \`keepalive_requests 1000000\` (client and upstream), access log off." \
		"The bare proxy is \`bench/forwarder\` (fasthttp \`HostClient\`, no auth, quota or headers), placed like the backend." \
		"wrk's p50/p99 are corrected for coordinated omission (wrk adds samples for the requests a slow answer kept a connection from sending)."
	for mode in $MODES; do
		awk -F'\t' -v m="$mode" '$1 == m {f = 1} END {exit !f}' "$TSV" || continue
		echo
		if [[ $mode == pinned ]]; then
			echo "#### Pinned: wrk on CPU 0 (1 thread); backend and proxy on CPU 1 (GOMAXPROCS=1, nginx worker_processes 1)"
		else
			echo "#### Unpinned: no affinity (wrk 2 threads, GOMAXPROCS default, nginx worker_processes auto)"
		fi
		echo
		echo "| system | req/s | × backend | × nginx | × nginx-auth | p50 ms | p99 ms | peak RSS MiB | CPU µs/req | backend CPU µs/req | non-2xx / socket errors |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		local rb rn ra
		rb=$(med "$mode" saturated backend 5)
		rn=$(med "$mode" saturated nginx 5)
		ra=$(med "$mode" saturated nginx-auth 5)
		for sys in $SYSTEMS; do
			[[ $(runs "$mode" saturated "$sys") -gt 0 ]] || continue
			rps=$(med "$mode" saturated "$sys" 5)
			p50=$(med "$mode" saturated "$sys" 6)
			p99=$(med "$mode" saturated "$sys" 7)
			cpu=$(med "$mode" saturated "$sys" 11)
			bcpu=$(med "$mode" saturated "$sys" 12)
			rss=$(awk -F'\t' -v m="$mode" -v s="$sys" '$1 == m && $2 == s {printf "%.0f", $3 / 1024}' "$RSS")
			n2=$(total "$mode" saturated "$sys" 9)
			er=$(total "$mode" saturated "$sys" 10)
			[[ $sys == backend ]] && bcpu=""
			echo "| $(describe "$sys") | $(num "$rps" 0) | $(ratio "$rps" "$rb") | $(ratio "$rps" "$rn") | $(ratio "$rps" "$ra") | $(ms "$p50") | $(ms "$p99") | ${rss:-–} | $(num "$cpu" 1) | $(num "$bcpu" 1) | $n2 / $er |"
		done
		summary_line "$mode"
		if [[ $MODERATE == 1 ]]; then report_moderate "$mode"; fi
		if [[ $SLOWMIX == 1 ]]; then report_slowmix "$mode"; fi
	done
	if [[ -s $WORK/usage.tsv ]]; then
		echo
		echo "Quota check after each mode (tenant \`bench-1\`): \`used\` from the admin API against the 2xx responses wrk counted" \
			"(warm-ups included). \`used\` may exceed the count by the requests in flight when each wrk run stopped and by the unspent lease."
		echo
		echo "| mode | system | quota used | 2xx counted by wrk | difference | allowed: connections × runs + max_lease |"
		echo "|---|---|---:|---:|---:|---:|"
		awk -F'\t' '{d = ($3 == "") ? "–" : $3 - $4; printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, ($3 == "" ? "?" : $3), $4, d, $5}' "$WORK/usage.tsv"
	fi
}

# summary_line MODE: the saturated req/s of the proxies as ratios to plain
# nginx and to nginx-auth, and tollgate's to the bare proxy.
summary_line() {
	local mode=$1 sys rps rn ra rf line=""
	rn=$(med "$mode" saturated nginx 5)
	ra=$(med "$mode" saturated nginx-auth 5)
	rf=$(med "$mode" saturated forwarder 5)
	for sys in $SYSTEMS; do
		[[ $sys == backend || $sys == nginx || $sys == nginx-auth ]] && continue
		rps=$(med "$mode" saturated "$sys" 5)
		[[ -n $rps ]] || continue
		local part=""
		[[ -z $rn ]] || part+=", $(ratio "$rps" "$rn")× nginx"
		[[ -z $ra ]] || part+=", $(ratio "$rps" "$ra")× nginx-auth"
		[[ -z $rf || $sys != tollgate* ]] || part+=", $(ratio "$rps" "$rf")× the bare proxy"
		[[ -z $part ]] || line+="${line:+; }\`$sys\` ${part#, }"
	done
	[[ -n $line ]] || return 0
	echo
	echo "Summary, $mode (median req/s): $line."
}

report_moderate() { # MODE
	local mode=$1 sys p50 p99
	echo
	echo "Moderate load, $mode: $MOD_CONNS connections, each waiting ${MOD_DELAY_MS} ms before every request (unsaturated); added = the system's median minus backend-direct's."
	echo
	echo "| system | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU µs/req |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	local b50 b99
	b50=$(med "$mode" moderate backend 6)
	b99=$(med "$mode" moderate backend 7)
	for sys in $SYSTEMS; do
		[[ $(runs "$mode" moderate "$sys") -gt 0 ]] || continue
		p50=$(med "$mode" moderate "$sys" 6)
		p99=$(med "$mode" moderate "$sys" 7)
		local a50="–" a99="–"
		if [[ $sys != backend && -n $b50 ]]; then
			a50=$(awk -v a="$p50" -v b="$b50" 'BEGIN {printf "%+.2f", (a - b) / 1000}')
			a99=$(awk -v a="$p99" -v b="$b99" 'BEGIN {printf "%+.2f", (a - b) / 1000}')
		fi
		echo "| $(describe "$sys") | $(num "$(med "$mode" moderate "$sys" 5)" 0) | $(ms "$p50") | $(ms "$p99") | $a50 | $a99 | $(num "$(med "$mode" moderate "$sys" 11)" 1) |"
	done
}

report_slowmix() { # MODE
	local mode=$1 sys rps rn any=0
	for sys in $SYSTEMS; do [[ $(runs "$mode" slowmix "$sys") -gt 0 ]] && any=1; done
	[[ $any == 1 ]] || return 0
	echo
	echo "Slow-response mix, $mode: $SLOWMIX_CONNS connections sending as fast as answers come; 1 request in $SLOWMIX_EVERY" \
		"(query \`slow_ms=$SLOWMIX_MS\`) is answered by the backend after $SLOWMIX_MS ms, the others at once." \
		"p50 to p99.9 are per request (wrk's coordinated-omission correction undone, see \`bench/lua/bench.lua\`), wrk's own figures beside;" \
		"with 1 request in $SLOWMIX_EVERY slow, p99 sits at the edge between the fast and the slow answers."
	echo
	echo "It shows head-of-line blocking: on a pipelined upstream connection answers come back in order, so the requests queued" \
		"behind a slow answer wait for it too and the pipelined systems' p90 to p99.9 rise above the pooled ones', where only the slow requests are slow."
	echo
	echo "| system | req/s | × nginx | p50 ms | p90 ms | p99 ms | p99.9 ms | wrk's p99 / p99.9 ms | CPU µs/req | non-2xx / socket errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	rn=$(med "$mode" slowmix nginx 5)
	for sys in $SYSTEMS; do
		[[ $(runs "$mode" slowmix "$sys") -gt 0 ]] || continue
		rps=$(med "$mode" slowmix "$sys" 5)
		echo "| $(describe "$sys") | $(num "$rps" 0) | $(ratio "$rps" "$rn") | $(ms "$(med "$mode" slowmix "$sys" 16)") |" \
			"$(ms "$(med "$mode" slowmix "$sys" 17)") | $(ms "$(med "$mode" slowmix "$sys" 18)") | $(ms "$(med "$mode" slowmix "$sys" 19)") |" \
			"$(ms "$(med "$mode" slowmix "$sys" 7)") / $(ms "$(med "$mode" slowmix "$sys" 15)") | $(num "$(med "$mode" slowmix "$sys" 11)" 1) |" \
			"$(total "$mode" slowmix "$sys" 9) / $(total "$mode" slowmix "$sys" 10) |"
	done
}

# colmed FILE KEY DIVISOR DECIMALS: median of column 2 where column 1 is KEY
colmed() {
	[[ -f $1 ]] || { echo "–"; return; }
	awk -F'\t' -v k="$2" '$1 == k {print $2}' "$1" | sort -g |
		awk -v d="$3" -v p="$4" '{a[NR] = $1} END {if (NR == 0) {print "–"; exit}
			m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%." p "f\n", m / d}'
}

report_scale() {
	local mode=$1 t
	echo "Host and method as above (mode: $mode; $CONNS connections; median of $ROUNDS rounds, interleaved). The store holds" \
		"$(num "$(tail -n1 <<<"$(tr ' ' '\n' <<<"$SCALE_TENANTS" | sort -n)")" 0) tenants, one key each; every measurement runs on a fresh" \
		"tollgate started on a copy of that store (so no run inherits the leases of another) and stopped after it;" \
		"\`nats.sync_always: $SYNC_ALWAYS\`, \`quota.max_lease: ${MAX_LEASE:-$DEFAULT_MAX_LEASE (default)}\`${PIPELINE:+, upstream pipelined over $PIPELINE connections}. wrk's Lua script sends every request with" \
		"the next key of a list of N keys of N different tenants, so N tenants are active at once. Ledger ops/s:" \
		"\`tollgate_ledger_operations_total\` during the measured run (what it counts is tollgate's definition). Stop: SIGTERM" \
		"to exit right after the run (drain, unused leases returned)."
	echo
	echo "| active tenants | req/s | × 1 tenant | p50 ms | p99 ms | CPU µs/req | ledger ops/s | ledger ops per 1,000 req | lease record writes/s | peak RSS MiB | stop s | non-2xx / socket errors |"
	echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	local r1
	r1=$(med "$mode" tenants-1 scale 5)
	for t in $SCALE_TENANTS; do
		[[ $(runs "$mode" "tenants-$t" scale) -gt 0 ]] || continue
		local rps led
		rps=$(med "$mode" "tenants-$t" scale 5)
		led=$(med "$mode" "tenants-$t" scale 13)
		echo "| $(num "$t" 0) | $(num "$rps" 0) | $(ratio "$rps" "$r1") | $(ms "$(med "$mode" "tenants-$t" scale 6)") | $(ms "$(med "$mode" "tenants-$t" scale 7)") |" \
			"$(num "$(med "$mode" "tenants-$t" scale 11)" 1) | $(num "$led" 0) | $(awk -v l="$led" -v r="$rps" 'BEGIN {if (r > 0 && l != "") printf "%.2f", l / r * 1000; else print "–"}') |" \
			"$(num "$(med "$mode" "tenants-$t" scale 14)" 0) | $(colmed "$WORK/scale/rss.tsv" "tenants-$t" 1024 0) | $(colmed "$WORK/scale/stop.tsv" "tenants-$t" 1000 1) |" \
			"$(total "$mode" "tenants-$t" scale 9) / $(total "$mode" "tenants-$t" scale 10) |"
	done
	local any=0
	for t in $SCALE_TENANTS; do [[ $(runs "$mode" "steady-$t" scale) -gt 0 ]] && any=1; done
	if [[ $any == 1 ]]; then
		echo
		echo "Steady load (the issue asks for 10,000 req/s): $STEADY_CONNS connections, each waiting 1 ms before every request; the rate is what wrk achieved."
		echo
		echo "| active tenants | req/s | p99 ms | ledger ops/s (one replica) | ledger ops per 1,000 req | ledger ops/s scaled to 10,000 req/s | lease record writes/s | stop s |"
		echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
		for t in $SCALE_TENANTS; do
			[[ $(runs "$mode" "steady-$t" scale) -gt 0 ]] || continue
			local rps led
			rps=$(med "$mode" "steady-$t" scale 5)
			led=$(med "$mode" "steady-$t" scale 13)
			echo "| $(num "$t" 0) | $(num "$rps" 0) | $(ms "$(med "$mode" "steady-$t" scale 7)") | $(num "$led" 1) | $(awk -v l="$led" -v r="$rps" 'BEGIN {if (r > 0 && l != "") printf "%.2f", l / r * 1000; else print "–"}') | $(awk -v l="$led" -v r="$rps" 'BEGIN {if (r > 0 && l != "") printf "%.0f", l / r * 10000; else print "–"}') | $(num "$(med "$mode" "steady-$t" scale 14)" 1) | $(colmed "$WORK/scale/stop.tsv" "steady-$t" 1000 1) |"
		done
	fi
	if [[ -s $WORK/ready.tsv ]]; then
		echo
		echo "Time from starting \`tollgate serve\` to the first 200 from \`/readyz\` (the embedded NATS recovers its store," \
			"both buckets are mirrored into memory, then the listeners serve); peak RSS (VmHWM) at ready and RSS 5 s later, idle." \
			"The $mode row is the median over the fresh starts of the runs above."
		echo
		echo "| mode | tenants in store | credentials in store | time to ready | peak RSS MiB | RSS after 5 s MiB |"
		echo "|---|---:|---:|---:|---:|---:|"
		awk -F'\t' '{t = ($4 == "FAILED") ? "**did not become ready**" : sprintf("%.2f s", $4 / 1000);
			printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, t, ($5 == "" ? "–" : sprintf("%.0f", $5 / 1024)), ($6 == "" ? "–" : sprintf("%.0f", $6 / 1024))}' "$WORK/ready.tsv" |
			awk -F'|' -v OFS='|' '{for (i = 3; i <= 4; i++) {v = $i; gsub(/ /, "", v); if (v ~ /^[0-9]+$/) {s = v; o = ""; while (length(s) > 3) {o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3)}; $i = " " s o " "}} print}'
	fi
}

# write_section NAME FILE: replace the marked section of $RESULTS (or add it).
write_section() {
	local name=$1 body=$2 begin="<!-- BEGIN $1 (written by bench/run.sh) -->" end="<!-- END $1 -->"
	[[ -n $RESULTS ]] || return 0
	if [[ ! -f $RESULTS ]]; then
		# shellcheck disable=SC2016
		printf '# Benchmark results\n\nWritten by `make bench-proxy` (bench/run.sh).\n' >"$RESULTS"
	fi
	if grep -qF "$begin" "$RESULTS" && grep -qF "$end" "$RESULTS"; then
		awk -v b="$begin" -v e="$end" -v f="$body" '
			$0 == b {print; while ((getline l < f) > 0) print l; skip = 1; next}
			$0 == e {skip = 0}
			!skip {print}' "$RESULTS" >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
	else
		{ echo; echo "$begin"; cat "$body"; echo "$end"; } >>"$RESULTS"
	fi
	log "wrote section $name of $RESULTS"
}

# ---------------------------------------------------------------- main

main() {
	local missing=()
	for t in go curl wrk; do have "$t" || missing+=("$t"); done
	((${#missing[@]} == 0)) || die "missing ${missing[*]} (Debian: apt-get install -y wrk curl; nothing can be measured without them)"
	have nginx || log "nginx is not installed: the nginx systems are skipped (apt-get install -y nginx-light)"
	if ! have taskset; then
		log "taskset is not available: no pinned mode"
		MODES=$(tr ' ' '\n' <<<"$MODES" | grep -vx pinned | tr '\n' ' ')
		[[ -n ${MODES// /} ]] || MODES=unpinned
	fi
	if [[ $(nproc) -lt 2 ]]; then
		log "fewer than 2 CPUs: no pinned mode"
		MODES=unpinned
	fi
	STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
	LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
	STEAL0=$(steal_ticks)
	SECONDS=0
	GIT_DESC=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
	local dirty
	dirty=$(cd "$ROOT" && git status --porcelain -- '*.go' ':!bench' 2>/dev/null | wc -l)
	((dirty == 0)) || GIT_DESC+=" + $dirty uncommitted Go files"
	local sys
	for sys in $SYSTEMS $SLOWMIX_SYSTEMS; do
		case $sys in
		backend | nginx | nginx-auth | forwarder | forwarder-pipe | tollgate | tollgate-pipe | tollgate-rate | tollgate-log) ;;
		*) die "unknown system $sys (BENCH_SYSTEMS, BENCH_SLOWMIX_SYSTEMS)" ;;
		esac
	done
	if [[ $SLOWMIX == 1 ]] && ! [[ $SLOWMIX_EVERY =~ ^[1-9][0-9]*$ && $SLOWMIX_MS =~ ^[1-9][0-9]*$ && $SLOWMIX_CONNS =~ ^[1-9][0-9]*$ ]]; then
		die "BENCH_SLOWMIX_EVERY, BENCH_SLOWMIX_MS and BENCH_SLOWMIX_CONNS must be positive integers (or BENCH_SLOWMIX=0)"
	fi
	log "work dir $WORK; modes: $MODES; systems: $SYSTEMS; rounds $ROUNDS × (${WARMUP}s + ${DURATION}s)"
	if [[ -n $PIPELINE ]]; then
		log "BENCH_PIPELINE=$PIPELINE: the scale runs' tollgate pipelines its upstream; in the comparison tollgate stays pooled" \
			"and tollgate-pipe (${PIPE_CONNS} conns) is the pipelined one"
	fi
	if [[ $SLOWMIX == 1 ]]; then
		log "slow-response mix: $SLOWMIX_CONNS connections, 1 request in $SLOWMIX_EVERY slowed by ${SLOWMIX_MS} ms, for those of: $SLOWMIX_SYSTEMS"
	fi
	build
	"$BIN/seed" -gen 10000 >"$WORK/nginx-keys.txt"
	awk '{printf "\"%s\" t%d;\n", $1, NR}' "$WORK/nginx-keys.txt" >"$WORK/nginx-keys.map"

	local mode
	if [[ $MAIN == 1 ]]; then
		for mode in $MODES; do run_mode "$mode"; done
		local main_md=$WORK/main.md
		{
			report_main
			if [[ -s $NOTES ]]; then
				echo
				echo "Problems seen during the run:"
				echo
				cat "$NOTES"
			fi
		} >"$main_md"
		: >"$NOTES"
		echo >&2
		cat "$main_md"
		write_section bench-proxy "$main_md"
	fi

	if [[ $SCALE == 1 ]]; then
		local smode
		smode=$(awk '{print $1}' <<<"$MODES")
		run_scale "$smode"
		local scale_md=$WORK/scale.md
		{
			echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at $GIT_DESC, same host."
			echo
			report_scale "$smode"
			if [[ -s $NOTES ]]; then
				echo
				echo "Problems seen during the scale runs:"
				echo
				cat "$NOTES"
			fi
		} >"$scale_md"
		echo >&2
		cat "$scale_md"
		write_section bench-scale "$scale_md"
	fi
	cp "$TSV" "$WORK/results-final.tsv" 2>/dev/null || true
	log "raw results: $TSV (kept with BENCH_KEEP=1)"
}

main "$@"
