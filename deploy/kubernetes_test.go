package deploy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// kinds are the Kubernetes types the manifests may hold, by apiVersion and
// kind; each document is decoded strictly into a new one.
// (kustomization.yaml is read by TestKustomization.)
var kinds = map[string]func() any{
	"v1/ConfigMap":                  func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                     func() any { return new(corev1.Secret) },
	"v1/Service":                    func() any { return new(corev1.Service) },
	"apps/v1/Deployment":            func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget": func() any { return new(policyv1.PodDisruptionBudget) },
}

// manifests are the decoded Kubernetes objects of kubeDir.
type manifests struct {
	files       []string            // base names of the manifest files, sorted
	kindsOf     map[string][]string // the kinds each file holds
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	services    map[string]*corev1.Service
	deployments map[string]*appsv1.Deployment
	pdbs        map[string]*policyv1.PodDisruptionBudget
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadManifests decodes every document of every *.yaml file in kubeDir but
// kustomization.yaml, strictly: an unknown field, a field of the wrong
// type, a duplicate key or a malformed quantity fails the test.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no manifests in %s", kubeDir)
	}
	m := &manifests{
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, deployments: map[string]*appsv1.Deployment{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, kindsOf: map[string][]string{},
	}
	for _, path := range paths {
		if filepath.Base(path) == "kustomization.yaml" {
			continue
		}
		m.files = append(m.files, filepath.Base(path))
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(raw), -1) {
			where := fmt.Sprintf("%s, document %d", path, i+1)
			if onlyComments(doc) {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			newObj := kinds[tm.APIVersion+"/"+tm.Kind]
			if newObj == nil {
				t.Errorf("%s: apiVersion %q, kind %q: not a type this test knows (add it to kinds)", where, tm.APIVersion, tm.Kind)
				continue
			}
			obj := newObj()
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Errorf("%s: %s %v", where, tm.Kind, err)
				continue
			}
			m.kindsOf[filepath.Base(path)] = append(m.kindsOf[filepath.Base(path)], tm.Kind)
			var meta *metav1.ObjectMeta
			switch o := obj.(type) {
			case *corev1.ConfigMap:
				meta, m.configMaps[o.Name] = &o.ObjectMeta, o
			case *corev1.Secret:
				meta, m.secrets[o.Name] = &o.ObjectMeta, o
			case *corev1.Service:
				meta, m.services[o.Name] = &o.ObjectMeta, o
			case *appsv1.Deployment:
				meta, m.deployments[o.Name] = &o.ObjectMeta, o
			case *policyv1.PodDisruptionBudget:
				meta, m.pdbs[o.Name] = &o.ObjectMeta, o
			}
			checkMeta(t, where, tm.Kind, meta)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

func onlyComments(doc string) bool {
	for line := range strings.Lines(doc) {
		if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
			return false
		}
	}
	return true
}

// checkMeta applies the API server's rules for names and labels.
func checkMeta(t *testing.T, where, kind string, meta *metav1.ObjectMeta) {
	t.Helper()
	check := validation.IsDNS1123Subdomain
	if kind == "Service" {
		check = validation.IsDNS1035Label
	}
	for _, msg := range check(meta.Name) {
		t.Errorf("%s: metadata.name %q: %s", where, meta.Name, msg)
	}
	if meta.Namespace != "" {
		t.Errorf("%s: metadata.namespace %q: leave it to kubectl -n or the kustomization", where, meta.Namespace)
	}
	for _, e := range metavalidation.ValidateLabels(meta.Labels, field.NewPath("metadata", "labels")) {
		t.Errorf("%s: %v", where, e)
	}
}

func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	if len(m.deployments) != 1 {
		t.Fatalf("got %d Deployments, want 1", len(m.deployments))
	}
	for _, d := range m.deployments {
		if _, ok := m.configMaps[tollgateConfigMap(t, m, d)]; !ok {
			t.Errorf("the Deployment's tollgate config map is not among the manifests")
		}
	}
	if len(m.services) == 0 {
		t.Error("no Service")
	}
	if len(m.pdbs) == 0 {
		t.Error("no PodDisruptionBudget")
	}
}

// TestKustomization: kustomization.yaml lists every manifest except the
// Secret's example, which `kubectl apply -k` must never overwrite the real
// Secret with.
func TestKustomization(t *testing.T) {
	m := loadManifests(t)
	raw, err := os.ReadFile(filepath.Join(kubeDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: got %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	var want []string
	for _, f := range m.files {
		if !strings.HasSuffix(f, ".example.yaml") {
			want = append(want, f)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources: got %v, want %v (every manifest but *.example.yaml)", got, want)
	}
	for _, r := range k.Resources {
		if slices.Contains(m.kindsOf[r], "Secret") {
			t.Errorf("kustomization.yaml lists %s, which holds a Secret: apply -k would overwrite the real one with placeholders", r)
		}
	}
}

// TestKubernetesSelectors: the Deployment's selector matches its pods, and
// so do the Service's and the PodDisruptionBudget's.
func TestKubernetesSelectors(t *testing.T) {
	m := loadManifests(t)
	for _, d := range m.deployments {
		pod := labels.Set(d.Spec.Template.Labels)
		opts := metavalidation.LabelSelectorValidationOptions{}
		for _, e := range metavalidation.ValidateLabelSelector(d.Spec.Selector, opts, field.NewPath("spec", "selector")) {
			t.Errorf("Deployment %s: %v", d.Name, e)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(pod) {
			t.Errorf("Deployment %s: selector %v does not select its pod template's labels %v (%v)", d.Name, d.Spec.Selector, pod, err)
		}
		for _, s := range m.services {
			if !labels.SelectorFromSet(s.Spec.Selector).Matches(pod) || len(s.Spec.Selector) == 0 {
				t.Errorf("Service %s: selector %v does not select Deployment %s's pods %v", s.Name, s.Spec.Selector, d.Name, pod)
			}
		}
		for _, p := range m.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(pod) {
				t.Errorf("PodDisruptionBudget %s: selector %v does not select Deployment %s's pods %v", p.Name, p.Spec.Selector, d.Name, pod)
			}
			if p.Spec.MaxUnavailable != nil && p.Spec.MaxUnavailable.Type == intstr.Int && d.Spec.Replicas != nil &&
				int32(p.Spec.MaxUnavailable.IntValue()) >= *d.Spec.Replicas {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %v lets a drain take every one of %d replicas", p.Name, p.Spec.MaxUnavailable, *d.Spec.Replicas)
			}
		}
	}
}

// TestKubernetesContainers: names, ports and references that the API
// server or the kubelet would refuse.
func TestKubernetesContainers(t *testing.T) {
	m := loadManifests(t)
	for _, d := range m.deployments {
		spec := d.Spec.Template.Spec
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			for _, msg := range validation.IsDNS1123Label(v.Name) {
				t.Errorf("volume %q: %s", v.Name, msg)
			}
			volumes[v.Name] = v
			switch {
			case v.ConfigMap != nil:
				cm, ok := m.configMaps[v.ConfigMap.Name]
				if !ok {
					t.Errorf("volume %s: no ConfigMap %q among the manifests", v.Name, v.ConfigMap.Name)
					continue
				}
				for _, it := range v.ConfigMap.Items {
					if _, ok := cm.Data[it.Key]; !ok {
						t.Errorf("volume %s: ConfigMap %s has no key %q", v.Name, cm.Name, it.Key)
					}
				}
			case v.Secret != nil:
				s, ok := m.secrets[v.Secret.SecretName]
				if !ok {
					t.Errorf("volume %s: no Secret %q among the manifests (secret.example.yaml)", v.Name, v.Secret.SecretName)
					continue
				}
				for _, it := range v.Secret.Items {
					if _, ok := secretValue(s, it.Key); !ok {
						t.Errorf("volume %s: Secret %s has no key %q", v.Name, s.Name, it.Key)
					}
				}
			}
		}
		names := map[string]bool{}
		for _, c := range spec.Containers {
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				t.Errorf("container %q: %s", c.Name, msg)
			}
			if names[c.Name] {
				t.Errorf("container %q: named twice", c.Name)
			}
			names[c.Name] = true
			if c.Image == "" {
				t.Errorf("container %s: no image", c.Name)
			}
			for _, p := range c.Ports {
				for _, msg := range validation.IsValidPortName(p.Name) {
					t.Errorf("container %s: port %q: %s", c.Name, p.Name, msg)
				}
				for _, msg := range validation.IsValidPortNum(int(p.ContainerPort)) {
					t.Errorf("container %s: port %s: %s", c.Name, p.Name, msg)
				}
			}
			for _, e := range c.Env {
				for _, msg := range validation.IsEnvVarName(e.Name) {
					t.Errorf("container %s: env %q: %s", c.Name, e.Name, msg)
				}
			}
			for _, vm := range c.VolumeMounts {
				if _, ok := volumes[vm.Name]; !ok {
					t.Errorf("container %s: volume mount %q names no volume", c.Name, vm.Name)
				}
			}
			for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if pr != nil && pr.HTTPGet != nil {
					if _, err := containerPort(c, pr.HTTPGet.Port); err != nil {
						t.Errorf("container %s: probe: %v", c.Name, err)
					}
				}
			}
		}
		if !names[tollgateName] {
			t.Errorf("Deployment %s: no container named %q", d.Name, tollgateName)
		}
		if len(spec.Containers) < 2 {
			t.Errorf("Deployment %s: %d containers, want the application and tollgate in one pod", d.Name, len(spec.Containers))
		}
	}
}

// TestKubernetesTollgate checks the sidecar against its own config, as
// tollgate's parser reads it with the container's environment: the probes
// reach the admin listener on the pod IP, the Service reaches the proxy,
// the data and config are where the config says, and the grace period
// covers the drain.
func TestKubernetesTollgate(t *testing.T) {
	m := loadManifests(t)
	for _, d := range m.deployments {
		spec := d.Spec.Template.Spec
		c := findContainer(t, spec, tollgateName)
		env := podEnv(t, m, c)
		cmName, raw := tollgateConfig(t, m, d)
		cfg, err := config.Parse(strings.NewReader(raw), "ConfigMap "+cmName+" config.yaml", func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("tollgate refuses the ConfigMap's config:\n%v", err)
		}

		// The kubelet probes the pod IP: the admin listener must listen
		// on every address of the pod, not on loopback.
		adminPort := listensOnPod(t, "admin.listen", cfg.Admin.Listen)
		proxyPort := listensOnPod(t, "listen", cfg.Listen)
		if p := namedPort(t, c, "admin"); p != adminPort {
			t.Errorf("container port admin is %d, admin.listen's port %d", p, adminPort)
		}
		if p := namedPort(t, c, "proxy"); p != proxyPort {
			t.Errorf("container port proxy is %d, listen's port %d", p, proxyPort)
		}
		scheme := corev1.URISchemeHTTP
		if cfg.Admin.TLS != nil {
			scheme = corev1.URISchemeHTTPS
		}
		for _, pr := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"startupProbe", c.StartupProbe, "/healthz"}} {
			if pr.probe == nil || pr.probe.HTTPGet == nil {
				t.Errorf("%s: want an httpGet probe of %s on the admin port", pr.name, pr.path)
				continue
			}
			g := pr.probe.HTTPGet
			port, err := containerPort(c, g.Port)
			if err != nil {
				t.Errorf("%s: %v", pr.name, err)
			}
			if g.Path != pr.path || port != adminPort || g.Host != "" || (g.Scheme != "" && g.Scheme != scheme) || (g.Scheme == "" && scheme != corev1.URISchemeHTTP) {
				t.Errorf("%s: got %q %s on port %d (host %q), want %s %s on the admin port %d", pr.name, g.Scheme, g.Path, port, g.Host, scheme, pr.path, adminPort)
			}
		}
		// The admin listener answers only once the credential set is
		// loaded: without a startup probe, liveness would kill a replica
		// that is still loading a large store.
		if sp := c.StartupProbe; sp != nil {
			if budget := time.Duration(max(sp.PeriodSeconds, 1)*max(sp.FailureThreshold, 1)) * time.Second; budget < time.Minute {
				t.Errorf("startupProbe allows %v to start, want at least a minute (1,000,000 credentials take about 14 s of CPU)", budget)
			}
		}

		// The Service exposes the proxy, never the admin API.
		for _, s := range m.services {
			if len(s.Spec.Ports) == 0 {
				t.Errorf("Service %s: no ports", s.Name)
			}
			for _, sp := range s.Spec.Ports {
				port, err := containerPort(c, sp.TargetPort)
				if err != nil {
					t.Errorf("Service %s port %s: %v", s.Name, sp.Name, err)
				}
				if port != proxyPort {
					t.Errorf("Service %s port %s: targets %d, want tollgate's proxy port %d", s.Name, sp.Name, port, proxyPort)
				}
			}
		}

		// Every upstream is the application, on loopback in the same pod.
		for name, u := range cfg.Upstreams {
			host, _, _ := net.SplitHostPort(u.Addr)
			if ip, err := netip.ParseAddr(host); (err != nil || !ip.IsLoopback()) && host != "localhost" {
				t.Errorf("upstream %s: %s is not loopback: the application in the pod listens on loopback only", name, u.Addr)
			}
		}

		// External NATS: an embedded server in an emptyDir would lose the
		// data with the pod, and replicas would not share quotas.
		if cfg.NATS.URL == "" {
			t.Error("nats.url is empty: every replica would embed its own NATS in an emptyDir")
		}
		if cfg.NATS.Replicas < 3 {
			t.Errorf("nats.replicas is %d, want 3 on a NATS cluster", cfg.NATS.Replicas)
		}
		if f := cfg.NATS.Credentials; f != "" {
			checkMountedFile(t, m, spec, c, "nats.credentials", f)
		}

		// The admin token: set (else each replica would generate its own
		// and print it to its log) and from a Secret, not in plain text.
		if cfg.Admin.Token == "" {
			t.Error("admin.token is empty: each replica would generate a different one")
		}
		if cfg.Admin.Token != "" && strings.Contains(raw, cfg.Admin.Token) {
			t.Error("admin.token is written in the ConfigMap: take it from the Secret")
		}
		for _, e := range c.Env {
			if e.Value != "" && e.Value == cfg.Admin.Token {
				t.Errorf("env %s holds the admin token in plain text: use a secretKeyRef", e.Name)
			}
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Optional != nil && *r.SecretKeyRef.Optional {
				t.Errorf("env %s: an optional secret would start tollgate without it", e.Name)
			}
		}

		// data_dir must be writable: the root file system is not.
		if sc := c.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			if vm := mountOf(c, cfg.DataDir); vm == nil || vm.ReadOnly || vm.MountPath != filepath.Clean(cfg.DataDir) {
				t.Errorf("data_dir %s is not a writable volume mount of its own, and the root file system is read-only", cfg.DataDir)
			}
		}

		// Shutdown: tollgate gets SIGTERM after its preStop sleep and
		// drains for up to server.shutdown_timeout; the application must
		// outlive that, and the grace period must cover it all.
		drainEnd := preStopSleep(c) + cfg.Server.ShutdownTimeout.D()
		grace := 30 * time.Second // Kubernetes' default
		if s := spec.TerminationGracePeriodSeconds; s != nil {
			grace = time.Duration(*s) * time.Second
		}
		if grace < drainEnd+natsClose {
			t.Errorf("terminationGracePeriodSeconds is %v, want at least the preStop sleep + server.shutdown_timeout + %v = %v", grace, natsClose, drainEnd+natsClose)
		}
		for _, o := range spec.Containers {
			if o.Name == tollgateName {
				continue
			}
			if s := preStopSleep(o); s < drainEnd {
				t.Errorf("container %s stops %v after the pod does, before tollgate has drained (%v): its preStop sleep must be at least that", o.Name, s, drainEnd)
			}
			if s := preStopSleep(o); grace <= s {
				t.Errorf("container %s: preStop sleep %v leaves it no time to stop within the grace period %v", o.Name, s, grace)
			}
		}

		// Memory: a limit, and the Go runtime told of it.
		limit, ok := c.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			t.Error("no memory limit on tollgate")
		}
		if v, ok := env["GOMEMLIMIT"]; ok && !limit.IsZero() {
			q, err := resource.ParseQuantity(strings.TrimSuffix(v, "B"))
			if err != nil {
				t.Errorf("GOMEMLIMIT %q: %v", v, err)
			} else if q.Cmp(limit) >= 0 {
				t.Errorf("GOMEMLIMIT %s is not below the memory limit %s", v, limit.String())
			}
		}
	}
}

func findContainer(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// containerPort resolves a probe's or a Service's port, a number or the
// name of one of c's ports.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}

func namedPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	p, err := containerPort(c, intstr.FromString(name))
	if err != nil {
		t.Error(err)
	}
	return p
}

func preStopSleep(c corev1.Container) time.Duration {
	if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		return time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	return 0
}

// mountOf is the volume mount of c that holds path, the deepest one.
func mountOf(c corev1.Container, path string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		mp := filepath.Clean(vm.MountPath)
		if (path == mp || strings.HasPrefix(path, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	return best
}

// tollgateConfigPath is the -config file of tollgate's command line.
func tollgateConfigPath(t *testing.T, args []string) string {
	t.Helper()
	for i, a := range args {
		if (a == "-config" || a == "--config") && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "-config="); ok {
			return v
		}
	}
	t.Fatalf("tollgate's args %q name no -config file", args)
	return ""
}

// tollgateConfigMap names the ConfigMap that tollgate's -config file
// comes from.
func tollgateConfigMap(t *testing.T, m *manifests, d *appsv1.Deployment) string {
	t.Helper()
	name, _ := tollgateConfig(t, m, d)
	return name
}

// tollgateConfig finds tollgate's -config file in the pod: a ConfigMap
// mounted as a directory (a subPath mount would never see an edit, and
// tollgate reloads the file when it changes).
func tollgateConfig(t *testing.T, m *manifests, d *appsv1.Deployment) (configMap, text string) {
	t.Helper()
	spec := d.Spec.Template.Spec
	c := findContainer(t, spec, tollgateName)
	path := tollgateConfigPath(t, c.Args)
	vm := mountOf(c, path)
	if vm == nil {
		t.Fatalf("tollgate's config %s is on no volume", path)
	}
	if vm.SubPath != "" || vm.SubPathExpr != "" {
		t.Errorf("tollgate's config is mounted with subPath: an edit of the ConfigMap would never reach it")
	}
	key := strings.TrimPrefix(path, filepath.Clean(vm.MountPath)+"/")
	for _, v := range spec.Volumes {
		if v.Name != vm.Name {
			continue
		}
		if v.ConfigMap == nil {
			t.Fatalf("tollgate's config %s: volume %s is not a ConfigMap", path, v.Name)
		}
		for _, it := range v.ConfigMap.Items {
			if it.Path == key {
				key = it.Key
			}
		}
		cm, ok := m.configMaps[v.ConfigMap.Name]
		if !ok {
			t.Fatalf("tollgate's config: no ConfigMap %q", v.ConfigMap.Name)
		}
		text, ok := cm.Data[key]
		if !ok {
			t.Fatalf("tollgate's config %s: ConfigMap %s has no key %q", path, cm.Name, key)
		}
		return cm.Name, text
	}
	t.Fatalf("tollgate's config: no volume %q", vm.Name)
	return "", ""
}

// checkMountedFile checks that path, named by the config's field, is a
// key of a Secret or ConfigMap volume mounted in c.
func checkMountedFile(t *testing.T, m *manifests, spec corev1.PodSpec, c corev1.Container, field, path string) {
	t.Helper()
	vm := mountOf(c, path)
	if vm == nil {
		t.Errorf("%s %s is on no volume", field, path)
		return
	}
	key := strings.TrimPrefix(path, filepath.Clean(vm.MountPath)+"/")
	for _, v := range spec.Volumes {
		if v.Name != vm.Name {
			continue
		}
		if v.Secret == nil {
			t.Errorf("%s %s: volume %s is not a Secret", field, path, v.Name)
			return
		}
		found := len(v.Secret.Items) == 0
		for _, it := range v.Secret.Items {
			if it.Path == key {
				key, found = it.Key, true
			}
		}
		s := m.secrets[v.Secret.SecretName]
		if _, ok := secretValue(s, key); !found || !ok {
			t.Errorf("%s %s: Secret %s does not provide it", field, path, v.Secret.SecretName)
		}
		return
	}
}

func secretValue(s *corev1.Secret, key string) (string, bool) {
	if s == nil {
		return "", false
	}
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

// podEnv is the environment tollgate's process sees in c: the image's ENV
// (the repository's Dockerfile), then the container's env, with values
// from the Secrets and ConfigMaps among the manifests.
func podEnv(t *testing.T, m *manifests, c corev1.Container) map[string]string {
	t.Helper()
	env := dockerfileEnv(t, dockerfile)
	if len(c.EnvFrom) > 0 {
		t.Errorf("container %s: envFrom is not followed by this test", c.Name)
	}
	for _, e := range c.Env {
		switch r := e.ValueFrom; {
		case r == nil:
			env[e.Name] = e.Value
		case r.SecretKeyRef != nil:
			v, ok := secretValue(m.secrets[r.SecretKeyRef.Name], r.SecretKeyRef.Key)
			if !ok {
				t.Errorf("env %s: no Secret %q with key %q among the manifests", e.Name, r.SecretKeyRef.Name, r.SecretKeyRef.Key)
			}
			env[e.Name] = v
		case r.ConfigMapKeyRef != nil:
			cm := m.configMaps[r.ConfigMapKeyRef.Name]
			v, ok := "", false
			if cm != nil {
				v, ok = cm.Data[r.ConfigMapKeyRef.Key]
			}
			if !ok {
				t.Errorf("env %s: no ConfigMap %q with key %q among the manifests", e.Name, r.ConfigMapKeyRef.Name, r.ConfigMapKeyRef.Key)
			}
			env[e.Name] = v
		default:
			t.Errorf("env %s: valueFrom other than secretKeyRef or configMapKeyRef is not followed by this test", e.Name)
		}
	}
	return env
}
