package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/tollgate/tollgate/internal/config"
)

// loadCompose loads compose/compose.yaml as docker compose would, with an
// empty environment (so each ${VAR:-default} takes its default). Loading
// validates the file against the compose JSON schema compose-go embeds.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir, err := filepath.Abs(composeDir)
	if err != nil {
		t.Fatal(err)
	}
	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml")}},
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(t.Context(), details)
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return p
}

func servicesNamed(p *types.Project, prefix string) []types.ServiceConfig {
	var out []types.ServiceConfig
	for name, s := range p.Services {
		if strings.HasPrefix(name, prefix) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func serviceNames(ss []types.ServiceConfig) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

// boundFile is the host file of s mounted at target.
func boundFile(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			if v.Type != types.VolumeTypeBind {
				t.Fatalf("%s: %s is a %s volume, want a bind mount of a file", s.Name, target, v.Type)
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Fatalf("%s: %s: %v", s.Name, target, err)
			}
			return v.Source
		}
	}
	t.Fatalf("%s: nothing is mounted at %s", s.Name, target)
	return ""
}

// natsNode is one NATS service of the compose file with its parsed config.
type natsNode struct {
	service string
	opts    *natsserver.Options
}

// loadNATS parses each NATS node's config with nats-server's own parser,
// in the node's environment.
func loadNATS(t *testing.T, p *types.Project) []natsNode {
	t.Helper()
	var nodes []natsNode
	for _, s := range servicesNamed(p, "nats-") {
		conf := boundFile(t, s, flagValue(s.Command, "config"))
		for k, v := range s.Environment {
			if v != nil {
				t.Setenv(k, *v)
			}
		}
		o, err := natsserver.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("%s: nats-server refuses %s: %v", s.Name, conf, err)
		}
		for k := range s.Environment {
			os.Unsetenv(k) // t.Setenv restores them at the end
		}
		nodes = append(nodes, natsNode{s.Name, o})
	}
	return nodes
}

func TestComposeNATSCluster(t *testing.T) {
	p := loadCompose(t)
	nodes := loadNATS(t, p)
	if got := len(nodes); got != 3 {
		t.Fatalf("got %d NATS services %v, want 3", got, serviceNames(servicesNamed(p, "nats-")))
	}
	stores := map[string]bool{}
	for _, n := range nodes {
		s, o := p.Services[n.service], n.opts
		if o.ServerName != n.service {
			t.Errorf("%s: server_name is %q, want the service's name", n.service, o.ServerName)
		}
		if !o.JetStream {
			t.Errorf("%s: JetStream is off", n.service)
		}
		if !o.SyncAlways {
			t.Errorf("%s: jetstream.sync_interval is not always: an acknowledged ledger increment could be lost", n.service)
		}
		if o.Cluster.Name == "" || o.Cluster.Port == 0 {
			t.Errorf("%s: no cluster name or port", n.service)
		}
		var routes []string
		for _, u := range o.Routes {
			routes = append(routes, u.Host)
		}
		for _, peer := range nodes {
			if want := net.JoinHostPort(peer.service, strconv.Itoa(o.Cluster.Port)); !slices.Contains(routes, want) {
				t.Errorf("%s: routes %v lack %s", n.service, routes, want)
			}
		}
		// The store on a named volume of its own.
		var store *types.ServiceVolumeConfig
		for i, v := range s.Volumes {
			if v.Target == o.StoreDir {
				store = &s.Volumes[i]
			}
		}
		if store == nil || store.Type != types.VolumeTypeVolume {
			t.Errorf("%s: store_dir %s is not on a named volume", n.service, o.StoreDir)
		} else if stores[store.Source] {
			t.Errorf("%s: volume %s is shared with another node", n.service, store.Source)
		} else {
			stores[store.Source] = true
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 || o.HTTPPort == 0 {
			t.Errorf("%s: want a health check on the monitoring port's /healthz", n.service)
		} else if !strings.Contains(strings.Join(s.HealthCheck.Test, " "), fmt.Sprintf(":%d/healthz", o.HTTPPort)) {
			t.Errorf("%s: health check %q is not on the monitoring port %d", n.service, s.HealthCheck.Test, o.HTTPPort)
		}
	}
}

func TestComposeTollgateReplicas(t *testing.T) {
	p := loadCompose(t)
	nodes := loadNATS(t, p)
	replicas := servicesNamed(p, "tollgate-")
	if got := serviceNames(replicas); len(got) != 3 {
		t.Fatalf("got tollgate services %v, want 3", got)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	published := map[string]string{}
	for _, s := range p.Services {
		for _, port := range s.Ports {
			key := port.HostIP + ":" + port.Published
			if other, ok := published[key]; ok {
				t.Errorf("%s and %s both publish %s", other, s.Name, key)
			}
			published[key] = s.Name
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", s.Name, err)
			}
		}
	}
	for _, s := range replicas {
		if s.Build == nil || filepath.Clean(s.Build.Context) != repo || s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("%s: want it built from the repository's Dockerfile, got %+v", s.Name, s.Build)
		}
		conf := boundFile(t, s, flagValue(s.Command, "config"))
		env := dockerfileEnv(t, dockerfile)
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		f, err := os.Open(conf)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(f, conf, func(k string) string { return env[k] })
		f.Close()
		if err != nil {
			t.Fatalf("%s: tollgate refuses its config:\n%v", s.Name, err)
		}
		// Published ports reach a container only on its own address.
		adminPort := listensOnPod(t, s.Name+": admin.listen", cfg.Admin.Listen)
		proxyPort := listensOnPod(t, s.Name+": listen", cfg.Listen)
		var gotAdmin, gotProxy bool
		for _, port := range s.Ports {
			switch int32(port.Target) {
			case adminPort:
				gotAdmin = true
				if port.HostIP != "127.0.0.1" {
					t.Errorf("%s: the admin port is published on %q, want 127.0.0.1 only", s.Name, port.HostIP)
				}
			case proxyPort:
				gotProxy = true
			default:
				t.Errorf("%s: publishes container port %d, which tollgate does not listen on", s.Name, port.Target)
			}
		}
		if !gotAdmin || !gotProxy {
			t.Errorf("%s: want the proxy (%d) and admin (%d) ports published", s.Name, proxyPort, adminPort)
		}
		if cfg.Admin.Token == "" {
			t.Errorf("%s: admin.token is empty: each replica would generate its own", s.Name)
		}

		// Every replica lists every NATS node, at its client port.
		var urls []string
		for u := range strings.SplitSeq(cfg.NATS.URL, ",") {
			urls = append(urls, strings.TrimSpace(u))
		}
		for _, n := range nodes {
			want := fmt.Sprintf("nats://%s:%d", n.service, n.opts.Port)
			if !slices.Contains(urls, want) {
				t.Errorf("%s: nats.url %q lacks %s", s.Name, cfg.NATS.URL, want)
			}
			dep, ok := s.DependsOn[n.service]
			if !ok || dep.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s: want depends_on %s: {condition: service_healthy}", s.Name, n.service)
			}
		}
		if cfg.NATS.Replicas != len(nodes) {
			t.Errorf("%s: nats.replicas is %d, want %d (one per node)", s.Name, cfg.NATS.Replicas, len(nodes))
		}

		// Every upstream is a compose service listening on that port.
		for name, u := range cfg.Upstreams {
			host, port, _ := net.SplitHostPort(u.Addr)
			b, ok := p.Services[host]
			if !ok {
				t.Errorf("%s: upstream %s: %s is not a service of compose.yaml", s.Name, name, u.Addr)
				continue
			}
			if _, addrPort, err := net.SplitHostPort(flagValue(b.Command, "addr")); err != nil || addrPort != port {
				t.Errorf("%s: upstream %s is %s, but %s listens on %q", s.Name, name, u.Addr, host, flagValue(b.Command, "addr"))
			}
		}

		if g := s.StopGracePeriod; g == nil || time.Duration(*g) < cfg.Server.ShutdownTimeout.D()+natsClose {
			t.Errorf("%s: stop_grace_period %v does not cover server.shutdown_timeout (%v) + %v", s.Name, g, cfg.Server.ShutdownTimeout.D(), natsClose)
		}
	}
}
