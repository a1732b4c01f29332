package deploy

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	kubeDir    = "kubernetes"
	composeDir = "compose"
	dockerfile = "../Dockerfile" // the image both examples run
	// tollgateName is the sidecar's container name in the Deployment.
	tollgateName = "tollgate"
	// natsClose is what a stopping tollgate needs after
	// server.shutdown_timeout: closing NATS and its log.
	natsClose = 5 * time.Second
)

// listensOnPod returns the port of addr, which must listen on every
// address (0.0.0.0, [::] or an empty host): the pod's IP is not known in
// advance, and loopback is not reachable from the kubelet or the Service.
func listensOnPod(t *testing.T, name, addr string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", name, addr, err)
	}
	if host != "" {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsUnspecified() {
			t.Errorf("%s is %s: want 0.0.0.0:PORT (or [::]:PORT), reachable on the pod's IP", name, addr)
		}
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("%s %q: port: %v", name, addr, err)
	}
	return int32(n)
}

// dockerfileEnv reads the ENV instructions of a Dockerfile's last stage,
// in the KEY=VALUE form (values without spaces or quotes).
func dockerfileEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	env := map[string]string{}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			clear(env)
		case "ENV":
			for _, kv := range f[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || strings.ContainsAny(v, `"'`) {
					t.Fatalf("%s: %q: this test reads ENV KEY=VALUE only", path, line)
				}
				env[k] = v
			}
		}
	}
	return env
}

// flagValue is the value of -name in a command line.
func flagValue(cmd []string, name string) string {
	for i, a := range cmd {
		if (a == "-"+name || a == "--"+name) && i+1 < len(cmd) {
			return cmd[i+1]
		}
		for _, p := range []string{"-" + name + "=", "--" + name + "="} {
			if v, ok := strings.CutPrefix(a, p); ok {
				return v
			}
		}
	}
	return ""
}
