# Targets say what they do; CI runs .ci/run, which runs the README's test command.
.PHONY: build test lint bench fuzz

build:            ## build ./tollgate
	go build -o tollgate ./cmd/tollgate

test:             ## the whole suite with the race detector (the README's command)
	go test -race ./...

lint:             ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	go vet ./...
	go mod tidy -diff
	staticcheck ./... || (echo "install: go install honnef.co/go/tools/cmd/staticcheck@v0.8.2"; exit 1)

bench:            ## Go benchmarks of the hot path with allocation counts
	go test -run '^$$' -bench . -benchmem ./authn/ ./limiter/ ./internal/app/

fuzz:             ## each fuzz target for 30s
	go test -run '^$$' -fuzz FuzzParseAPIKey -fuzztime 30s ./authn/
	go test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/config/
	go test -run '^$$' -fuzz FuzzAppendString -fuzztime 30s ./internal/problems/
	go test -run '^$$' -fuzz FuzzBody -fuzztime 30s ./internal/normalize/
	go test -run '^$$' -fuzz FuzzParseAuthorization -fuzztime 30s ./proxy/
	go test -run '^$$' -fuzz FuzzRequestHead -fuzztime 30s ./proxy/
	go test -run '^$$' -fuzz FuzzRemoveHopHeaders -fuzztime 30s ./proxy/
	go test -run '^$$' -fuzz FuzzScanKey -fuzztime 30s ./internal/store/

.PHONY: cluster-test
cluster-test:     ## issue 14's cluster test with its strict timing bounds (3 nats-server nodes, 3 replicas, kill -9 and restarts; figures for bench/RESULTS.md)
	TOLLGATE_STRICT_TIMING=1 TOLLGATE_CLUSTER_ROUNDS=$${ROUNDS:-5} go test -race -count=1 -run TestClusterFailover -v -timeout 30m ./e2e/

.PHONY: bench-proxy
bench-proxy:      ## load benchmark: tollgate vs its backend and nginx under wrk (bench/run.sh, writes bench/RESULTS.md)
	bench/run.sh

.PHONY: validate-deploy
validate-deploy:  ## check deploy/ offline: Kubernetes manifests decoded strictly into the k8s.io/api types, compose.yaml against the compose schema, their tollgate and NATS configs parsed
	go test -race -count=1 ./deploy/
