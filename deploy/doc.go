// Package deploy holds tollgate's deployment examples, and the tests that
// keep them correct: kubernetes/ (a Deployment running an application with
// tollgate as its sidecar, its ConfigMap, Service and PodDisruptionBudget)
// and compose/ (a three-node NATS cluster and three tollgate replicas under
// docker compose). The tests decode every Kubernetes manifest strictly into
// the k8s.io/api types, load the compose file with compose-go (which checks
// it against the compose JSON schema), parse every tollgate config with
// tollgate's own parser and the NATS config with nats-server's, and check
// that the pieces agree: probes on the admin port, listeners the kubelet
// and other containers can reach, a grace period that covers the drain.
// They need no network and no cluster: `make validate-deploy`.
package deploy
