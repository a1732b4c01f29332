package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/echo"
)

var (
	plainOnce   sync.Once
	plainBinary string
	plainErr    error
)

// plain builds tollgate without the race detector, whose shadow memory
// would hide what tollgate itself holds.
func plain(t *testing.T) string {
	plainOnce.Do(func() {
		plainBinary = filepath.Join(filepath.Dir(binary), "tollgate-plain")
		out, err := exec.Command("go", "build", "-o", plainBinary, "../cmd/tollgate").CombinedOutput()
		if err != nil {
			plainErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainBinary
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestStreamsGigabytesInBoundedMemory sends 1 GiB up and 1 GiB down
// through tollgate (TOLLGATE_E2E_STREAM_MIB changes the size) and checks
// that its peak RSS stays far below the size of the bodies.
func TestStreamsGigabytesInBoundedMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to read peak RSS")
	}
	mib := int64(1024)
	if v := os.Getenv("TOLLGATE_E2E_STREAM_MIB"); v != "" {
		mib, _ = strconv.ParseInt(v, 10, 64)
	}
	size := mib << 20
	in := newInstance(t, backend(t), 1000)
	cfg, _ := os.ReadFile(in.config)
	cfg = []byte(strings.Replace(string(cfg), "auth: [api_key]}", "auth: [api_key], max_request_body: 1TiB}", 1))
	cfg = []byte(strings.Replace(string(cfg), "routes:", "log: {access: false}\nroutes:", 1))
	cfg = []byte(strings.Replace(string(cfg), "1TiB", strconv.FormatInt(1<<40, 10), 1))
	os.WriteFile(in.config, cfg, 0o600)
	saved := binary
	binary = plain(t)
	in.start()
	binary = saved
	token := tokenRE.FindStringSubmatch(in.logs())[1]
	created := struct{ Key string }{newTenantKey(t, in, token, "acme")}
	pid := in.cmd.Process.Pid
	base := vmHWM(t, pid)

	// Upload, chunked.
	start := time.Now()
	req, _ := http.NewRequest("POST", "http://"+in.proxy+"/upload", io.LimitReader(zeroReader{}, size))
	req.Header.Set("X-API-Key", created.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var seen echo.Reply
	err = json.NewDecoder(resp.Body).Decode(&seen)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || seen.BodyBytes != size {
		t.Fatalf("upload: %d, backend saw %d bytes (%v), want %d", resp.StatusCode, seen.BodyBytes, err, size)
	}
	up := time.Since(start)
	afterUp := vmHWM(t, pid)

	// Download.
	start = time.Now()
	req, _ = http.NewRequest("GET", fmt.Sprintf("http://%s/bytes/%d", in.proxy, size), nil)
	req.Header.Set("X-API-Key", created.Key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes (%v), want %d", n, err, size)
	}
	down := time.Since(start)
	peak := vmHWM(t, pid)
	t.Logf("%d MiB up in %v, down in %v; peak RSS %d MiB at start, %d MiB after upload, %d MiB after download",
		mib, up.Round(time.Millisecond), down.Round(time.Millisecond), base>>20, afterUp>>20, peak>>20)
	if bound := base + 64<<20; peak > bound {
		t.Errorf("peak RSS %d MiB: more than 64 MiB over the %d MiB at start for %d MiB bodies", peak>>20, base>>20, mib)
	}
	in.stop(syscall.SIGTERM)
}
