#!/usr/bin/env bash
# bench/tls.sh: the cost of TLS termination, tollgate against nginx, on
# loopback under wrk (issue 15). It installs nothing: it needs go, curl,
# openssl, wrk, nginx (with the ssl module) and taskset. On Debian:
#     apt-get install -y wrk nginx-light
#
# One certificate for both: ECDSA P-256, self-signed for IP 127.0.0.1,
# made with openssl. Both servers offer TLS 1.2 and 1.3 and choose
# TLS_AES_128_GCM_SHA256 (Go's choice; nginx is told to prefer it too).
#
# Systems, all in front of one bench/backend (fixed 200-byte JSON body):
#   tollgate-http   tollgate, api_key route (key + quota + limit headers),
#                   clear text
#   tollgate-https  the same with tls: {cert_file, key_file}
#   nginx-http      nginx as a plain keep-alive reverse proxy (no auth)
#   nginx-https     the same server with `listen ... ssl`
# Loads:
#   keepalive  wrk, CONNS keep-alive connections sending as fast as answers
#              come: requests per second over TLS 1.3 (X25519) once the
#              handshakes are done
#   newconn    hsload (a Go client written out and built by this script):
#              NC_CONNS at a time, every request on a new connection (TCP,
#              a full TLS 1.3 handshake with X25519 and no session
#              resumption, one GET with "Connection: close"), so req/s =
#              handshakes per second. wrk is not used for this: it resumes
#              sessions (from its tickets) on reconnection, and reconnects
#              slowly.
# Placement: wrk on CPU 0 (one thread); backend and proxy on CPU 1
# (GOMAXPROCS=1, nginx worker_processes 1), as bench/run.sh's pinned mode.
# Each round measures every system once per load (the starting system
# rotating); each measurement is a discarded warm-up run, then a measured
# run, during which the proxy's own CPU time (utime+stime, all its
# processes and threads) is taken.
#
# Settings (environment):
#   TLS_ROUNDS=3 TLS_WARMUP=2 TLS_DURATION=8   rounds, seconds (≤ 10 s a run)
#   TLS_CONNS=50                               keep-alive connections
#   TLS_NC_CONNS=16                            connections of the newconn load
#   TLS_SYSTEMS="tollgate-http tollgate-https nginx-http nginx-https"
#   TLS_LOADS="keepalive newconn"
#   TLS_SRC=<repo root>                        the tree tollgate is built from
#   TLS_OUT=                                   also write the tables here
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=${TLS_SRC:-$ROOT}
ROUNDS=${TLS_ROUNDS:-3}
WARMUP=${TLS_WARMUP:-2}
DURATION=${TLS_DURATION:-8}
CONNS=${TLS_CONNS:-50}
NC_CONNS=${TLS_NC_CONNS:-16}
OUTFILE=${TLS_OUT:-}
LUA=$ROOT/bench/lua/bench.lua
CLK_TCK=$(getconf CLK_TCK)
export BENCH_ADMIN_TOKEN=tga_tlsbench_$(date +%s)_not_a_secret

WORK=$(mktemp -d /tmp/tollgate-tls.XXXXXX)
BIN=$WORK/bin
TSV=$WORK/results.tsv
: >"$TSV"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for t in go curl openssl wrk nginx taskset; do command -v $t >/dev/null || die "$t is not installed"; done

STARTED=()
start_bg() { # LOG CMD...: sets PID
	local out=$1
	shift
	"$@" >>"$out" 2>&1 &
	PID=$!
	STARTED+=("$PID")
}
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in ${STARTED[@]+"${STARTED[@]}"}; do stop_pid "$p"; done
	if [[ $rc != 0 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED=" "
free_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % 20000))
		[[ $USED == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then USED+="$p "; echo "$p"; return; fi
	done
}
wait_url() { # URL PID [curl args]
	local url=$1 pid=$2 i
	shift 2
	for ((i = 0; i < 600; i++)); do
		kill -0 "$pid" 2>/dev/null || return 1
		curl -fso /dev/null --max-time 1 "$@" "$url" && return 0
		sleep 0.05
	done
	return 1
}
cpu_ticks() {
	local p t=0 v
	for p in "$@"; do
		v=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || continue
		t=$((t + v))
	done
	echo "$t"
}

log "building tollgate and the backend from $SRC, and hsload"
mkdir -p "$BIN" "$WORK/hsload"
(cd "$SRC" && go build -o "$BIN/tollgate" ./cmd/tollgate && go build -o "$BIN/backend" ./bench/backend) || die "go build failed"
printf 'module hsload\ngo 1.26\n' >"$WORK/hsload/go.mod"
cat >"$WORK/hsload/main.go" <<'GO'
// Command hsload opens a new connection for every request (TLS 1.3, full
// handshake: no session resumption, X25519, or clear text with -clear),
// sends one GET with "Connection: close", reads the answer and closes; c
// connections at a time, for d or n requests, whichever ends first. It
// prints one WRKRESULT line in bench/lua/bench.lua's format.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	target := flag.String("url", "", "https:// or http:// URL")
	header := flag.String("H", "", "one extra header line, \"Name: value\"")
	conns := flag.Int("c", 16, "connections at a time")
	dur := flag.Duration("d", 8*time.Second, "duration")
	max := flag.Int64("n", 1<<40, "at most this many requests")
	cafile := flag.String("cafile", "", "PEM certificate(s) to trust")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var conf *tls.Config
	if u.Scheme == "https" {
		pool := x509.NewCertPool()
		if b, err := os.ReadFile(*cafile); err != nil || !pool.AppendCertsFromPEM(b) {
			fmt.Fprintln(os.Stderr, "hsload: -cafile:", err)
			os.Exit(2)
		}
		conf = &tls.Config{RootCAs: pool, ServerName: u.Hostname(), MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
			CurvePreferences: []tls.CurveID{tls.X25519}, NextProtos: []string{"http/1.1"}}
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\n"
	if *header != "" {
		req += *header + "\r\n"
	}
	req += "Connection: close\r\n\r\n"
	var count, non2xx, errConnect, errRead atomic.Int64
	lat := make([][]time.Duration, *conns)
	start := time.Now()
	end := start.Add(*dur)
	var wg sync.WaitGroup
	for w := range *conns {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for time.Now().Before(end) && count.Add(1) <= *max {
				t0 := time.Now()
				c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
				if err != nil {
					errConnect.Add(1)
					continue
				}
				_ = c.SetDeadline(t0.Add(5 * time.Second))
				if conf != nil {
					tc := tls.Client(c, conf)
					if err := tc.Handshake(); err != nil {
						if errConnect.Add(1) == 1 {
							fmt.Fprintln(os.Stderr, "hsload: first handshake error:", err)
						}
						c.Close()
						continue
					}
					c = tc
				}
				if _, err := io.WriteString(c, req); err != nil {
					errRead.Add(1)
					c.Close()
					continue
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					errRead.Add(1)
					c.Close()
					continue
				}
				_, err = io.CopyBuffer(io.Discard, resp.Body, buf)
				resp.Body.Close()
				c.Close()
				if err != nil {
					errRead.Add(1)
					continue
				}
				if resp.StatusCode < 200 || resp.StatusCode > 299 {
					non2xx.Add(1)
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) int64 {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(float64(len(all))*p/100))].Microseconds()
	}
	n := int64(len(all))
	fmt.Printf("WRKRESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d non2xx=%d err_connect=%d err_read=%d err_write=0 err_timeout=0\n",
		n, elapsed.Microseconds(), float64(n)/elapsed.Seconds(), pct(50), pct(90), pct(99), pct(99.9), pct(100),
		non2xx.Load(), errConnect.Load(), errRead.Load())
}
GO
(cd "$WORK/hsload" && go build -o "$BIN/hsload" .) || die "go build of hsload failed"

CERT=$WORK/cert.pem
KEY=$WORK/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$KEY" -out "$CERT" -days 2 \
	-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null || die "openssl req failed"

PIN_SRV=(taskset -c 1)
PIN_WRK=(taskset -c 0)
declare -A URL PIDS HDR

port=$(free_port)
BACKEND=127.0.0.1:$port
start_bg "$WORK/backend.log" env GOMAXPROCS=1 "${PIN_SRV[@]}" "$BIN/backend" -addr "$BACKEND"
wait_url "http://$BACKEND/" "$PID" || die "backend did not start"
BACKEND_PID=$PID

start_tollgate() { # NAME TLS(0/1)
	local name=$1 tls=$2 dir=$WORK/$1 p a scheme=http tlsline=""
	mkdir -p "$dir"
	p=$(free_port)
	a=$(free_port)
	[[ $tls == 1 ]] && scheme=https tlsline="tls: {cert_file: $CERT, key_file: $KEY}"
	cat >"$dir/config.yaml" <<-EOF
		listen: 127.0.0.1:$p
		$tlsline
		admin: {listen: "127.0.0.1:$a", token: "\${BENCH_ADMIN_TOKEN}"}
		data_dir: $dir/data
		nats: {sync_always: true}
		quota: {timezone: UTC}
		log: {access: false}
		plans:
		  bench: {monthly_requests: 1000000000000}
		upstreams:
		  backend: {url: "http://$BACKEND"}
		routes:
		  - {path_prefix: /, upstream: backend, auth: [api_key]}
	EOF
	start_bg "$dir/tollgate.log" env GOMAXPROCS=1 "${PIN_SRV[@]}" "$BIN/tollgate" serve -config "$dir/config.yaml"
	PIDS[$name]=$PID
	wait_url "http://127.0.0.1:$a/readyz" "$PID" || die "$name did not start: $(tail -n 3 "$dir/tollgate.log")"
	"$BIN/tollgate" admin -url "http://127.0.0.1:$a" -token "$BENCH_ADMIN_TOKEN" tenants create bench-1 --plan bench >/dev/null
	local k
	k=$("$BIN/tollgate" admin -url "http://127.0.0.1:$a" -token "$BENCH_ADMIN_TOKEN" keys create bench-1 --name wrk |
		sed -n 's/.*"key": "\(tg_[^"]*\)".*/\1/p')
	[[ -n $k ]] || die "$name: no key"
	HDR[$name]="X-API-Key: $k"
	URL[$name]=$scheme://127.0.0.1:$p/v1/items
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CERT" -H "${HDR[$name]}" "${URL[$name]}")
	[[ $code == 200 ]] || die "$name answers $code to a valid key"
}

start_nginx() {
	local dir=$WORK/nginx ph ps
	mkdir -p "$dir/tmp"
	ph=$(free_port)
	ps=$(free_port)
	cat >"$dir/nginx.conf" <<-EOF
		worker_processes 1;
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
		        server $BACKEND;
		        keepalive 128;
		        keepalive_requests 1000000;
		    }
		    server {
		        listen 127.0.0.1:$ph;
		        location / {
		            proxy_pass http://backend;
		            proxy_http_version 1.1;
		            proxy_set_header Connection "";
		        }
		    }
		    server {
		        listen 127.0.0.1:$ps ssl;
		        ssl_certificate $CERT;
		        ssl_certificate_key $KEY;
		        ssl_protocols TLSv1.2 TLSv1.3;
		        ssl_prefer_server_ciphers on;
		        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
		        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305;
		        location / {
		            proxy_pass http://backend;
		            proxy_http_version 1.1;
		            proxy_set_header Connection "";
		            proxy_set_header X-Forwarded-Proto https;
		        }
		    }
		}
	EOF
	nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || die "nginx -t failed"
	start_bg "$dir/stderr.log" "${PIN_SRV[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
	local master=$PID i
	wait_url "http://127.0.0.1:$ph/v1/items" "$master" || die "nginx did not start: $(tail -n 3 "$dir/error.log")"
	for ((i = 0; i < 50; i++)); do [[ -n $(pgrep -P "$master") ]] && break; sleep 0.1; done
	PIDS[nginx-http]="$master $(pgrep -P "$master" | tr '\n' ' ')"
	PIDS[nginx-https]=${PIDS[nginx-http]}
	URL[nginx-http]=http://127.0.0.1:$ph/v1/items
	URL[nginx-https]=https://127.0.0.1:$ps/v1/items
	HDR[nginx-http]="X-API-Key: none"
	HDR[nginx-https]="X-API-Key: none"
	curl -fso /dev/null --cacert "$CERT" "${URL[nginx-https]}" || die "nginx https does not answer"
}

start_tollgate tollgate-http 0
start_tollgate tollgate-https 1
start_nginx
read -r -a SYSTEMS <<<"${TLS_SYSTEMS:-tollgate-http tollgate-https nginx-http nginx-https}"
read -r -a LOADS <<<"${TLS_LOADS:-keepalive newconn}"

# What was negotiated, for the record.
for s in tollgate-https nginx-https; do
	hostport=${URL[$s]#https://}
	hostport=${hostport%%/*}
	neg=$(openssl s_client -connect "$hostport" -CAfile "$CERT" </dev/null 2>/dev/null |
		awk '/^New,/ {v=$2 " " $5} /Server Temp Key/ {k=$4 $5 $6} /Peer signature type/ {s=$4} END {print v ", " k ", " s}')
	log "$s negotiates: $neg"
	echo "$s $neg" >>"$WORK/negotiated.txt"
done

run() { # SYSTEM LOAD SECONDS OUT: prints WRKRESULT fields
	local s=$1 load=$2 secs=$3 out=$4
	if [[ $load == newconn ]]; then
		timeout $((secs + 30)) env GOMAXPROCS=1 "${PIN_WRK[@]}" "$BIN/hsload" -c "$NC_CONNS" -d "${secs}s" \
			-cafile "$CERT" -H "${HDR[$s]}" -url "${URL[$s]}" >"$out" 2>&1 || true
	else
		timeout $((secs + 30)) "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"${secs}s" --timeout 5s --latency -s "$LUA" \
			-H "${HDR[$s]}" "${URL[$s]}" >"$out" 2>&1 || true
	fi
	local line
	line=$(grep '^WRKRESULT ' "$out" || true)
	echo "${line#WRKRESULT }"
}
field() { local kv; for kv in $1; do [[ ${kv%%=*} == "$2" ]] && { echo "${kv#*=}"; return; }; done; echo 0; }

log "measuring: $ROUNDS rounds × ${#LOADS[@]} loads × ${#SYSTEMS[@]} systems × (${WARMUP}s + ${DURATION}s)"
START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 0; r < ROUNDS; r++)); do
	for load in "${LOADS[@]}"; do
		for ((i = 0; i < ${#SYSTEMS[@]}; i++)); do
			s=${SYSTEMS[$(((i + r) % ${#SYSTEMS[@]}))]}
			run "$s" "$load" "$WARMUP" "$WORK/warm.txt" >/dev/null
			# shellcheck disable=SC2086
			c0=$(cpu_ticks ${PIDS[$s]})
			b0=$(cpu_ticks "$BACKEND_PID")
			res=$(run "$s" "$load" "$DURATION" "$WORK/$s-$load-$r.txt")
			# shellcheck disable=SC2086
			c1=$(cpu_ticks ${PIDS[$s]})
			b1=$(cpu_ticks "$BACKEND_PID")
			n=$(field "$res" requests)
			((n > 0)) || { log "$s $load: no result: $(tail -n 3 "$WORK/$s-$load-$r.txt" | tr '\n' ' ')"; continue; }
			errs=$(($(field "$res" err_connect) + $(field "$res" err_read) + $(field "$res" err_write) + $(field "$res" err_timeout)))
			cpu=$(awk -v t=$((c1 - c0)) -v n="$n" -v k="$CLK_TCK" 'BEGIN {printf "%.1f", t / k * 1e6 / n}')
			bcpu=$(awk -v t=$((b1 - b0)) -v n="$n" -v k="$CLK_TCK" 'BEGIN {printf "%.1f", t / k * 1e6 / n}')
			printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$s" "$r" "$(field "$res" rps)" \
				"$(field "$res" p50_us)" "$(field "$res" p99_us)" "$cpu" "$bcpu" "$(field "$res" non2xx)" "$errs" >>"$TSV"
			log "$load $s round $r: $(field "$res" rps) req/s, proxy CPU $cpu µs/req, non-2xx $(field "$res" non2xx), errors $errs"
		done
	done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Medians over rounds.
report() {
	echo "Host: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)); kernel $(uname -r); $(go version | awk '{print $3}'); $(nginx -v 2>&1 | sed 's/.*: //'), $(nginx -V 2>&1 | awk '/built with OpenSSL/ {print "OpenSSL " $4}'); wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}')."
	echo "Run: $START, load average $LOAD_START at the start, $LOAD_END at the end. Each row: the round (of $ROUNDS, ${DURATION}s each after ${WARMUP}s of warm-up) with the median req/s; the client on CPU 0 (wrk 1 thread, $CONNS connections; hsload GOMAXPROCS=1, $NC_CONNS at a time); backend and proxy on CPU 1 (GOMAXPROCS=1, nginx 1 worker)."
	echo "Negotiated: $(tr '\n' ';' <"$WORK/negotiated.txt")"
	echo
	echo "| load | system | req/s | p50 ms | p99 ms | proxy CPU µs/req | backend CPU µs/req | non-2xx / socket errors |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|"
	for load in "${LOADS[@]}"; do
		for s in "${SYSTEMS[@]}"; do
			awk -F'\t' -v l="$load" -v s="$s" '$1 == l && $2 == s' "$TSV" | sort -t$'\t' -k4,4n | awk -F'\t' -v l="$load" -v s="$s" '
				{ rps[NR] = $4; p50[NR] = $5; p99[NR] = $6; cpu[NR] = $7; b[NR] = $8; n2 += $9; e += $10 }
				END {
					if (NR == 0) exit
					m = int((NR + 1) / 2)
					conns = (l == "keepalive") ? "keep-alive" : "new connection per request"
					printf "| %s | %s | %.0f | %.2f | %.2f | %.1f | %.1f | %d / %d |\n", conns, s, rps[m], p50[m] / 1000, p99[m] / 1000, cpu[m], b[m], n2, e
				}'
		done
	done
}
if [[ -n $OUTFILE ]]; then
	report | tee "$OUTFILE"
	cp "$TSV" "$OUTFILE.tsv"
else
	report
fi
