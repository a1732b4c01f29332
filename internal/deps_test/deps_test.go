// Package deps_test checks the module's structure: every package is
// documented, and the hot-path packages stay independent of each other
// and of the store.
package deps_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/tollgate/tollgate"

type listedPackage struct {
	ImportPath string
	Name       string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	Module     *struct{ Path string }
	Error      *struct{ Err string }
}

// listModule runs `go list -json ./...` from the module root.
func listModule(t *testing.T) []listedPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	out, err := exec.CommandContext(t.Context(), goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD = %q: not inside a module", gomod)
	}
	cmd := exec.CommandContext(t.Context(), goBin, "list", "-e", "-json=ImportPath,Name,Dir,GoFiles,CgoFiles,Imports,Module,Error", "./...")
	cmd.Dir = filepath.Dir(gomod)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		if p.Module == nil || p.Module.Path != module {
			t.Errorf("package %s is not in module %s", p.ImportPath, module)
			continue
		}
		if p.Error != nil {
			t.Errorf("go list: package %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list ./... found no packages")
	}
	return pkgs
}

func TestEveryPackageIsDocumented(t *testing.T) {
	for _, p := range listModule(t) {
		files := append(append([]string{}, p.GoFiles...), p.CgoFiles...)
		if len(files) == 0 {
			continue // test-only directory, like this one
		}
		t.Run(p.ImportPath, func(t *testing.T) {
			fset := token.NewFileSet()
			for _, name := range files {
				f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
				if err != nil {
					t.Fatal(err)
				}
				if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
					return
				}
			}
			t.Errorf("package %s (%s) has no package comment in any of %v", p.ImportPath, p.Dir, files)
		})
	}
}

// TestImportRules: the package rules of the layout. Each package may
// import nothing under the paths its rule forbids (a path forbids itself
// and everything under it).
//
//   - proxy, authn and limiter, the hot path, import neither each other
//     nor NATS, the store or app: they declare the small interfaces they
//     need and app wires implementations in.
//   - access (the types that cross the seams), proxy/wire (connections)
//     and shardmap (the sharded map) import nothing of the module, so any
//     package may use them without a cycle or a hidden coupling.
//   - tenants is called by admin and, through app, by the proxy's
//     self-service path: it does not reach back into either.
func TestImportRules(t *testing.T) {
	hot := []string{module + "/proxy", module + "/authn", module + "/limiter"}
	external := []string{"github.com/nats-io", module + "/internal/store", module + "/internal/app"}
	rules := map[string][]string{
		module + "/internal/access":   {module},
		module + "/proxy/wire":        {module},
		module + "/internal/shardmap": {module},
		module + "/internal/poll":     {module},
		module + "/internal/tenants":  {module + "/proxy", module + "/internal/admin", module + "/internal/app"},
	}
	for _, p := range hot {
		var others []string
		for _, o := range hot {
			if o != p {
				others = append(others, o)
			}
		}
		rules[p] = append(others, external...)
	}
	byPath := packagesByPath(t)
	for path, forbidden := range rules {
		t.Run(path, func(t *testing.T) {
			p, ok := byPath[path]
			if !ok {
				t.Fatalf("package %s not found in the module", path)
			}
			for _, imp := range p.Imports {
				for _, f := range forbidden {
					// proxy/wire is under proxy, yet its own package.
					if imp == f || strings.HasPrefix(imp, f+"/") && !(f == module+"/proxy" && imp == module+"/proxy/wire") {
						t.Errorf("%s imports %s", path, imp)
					}
				}
			}
		})
	}
}

// packagesByPath lists the module's packages by import path.
func packagesByPath(t *testing.T) map[string]listedPackage {
	byPath := map[string]listedPackage{}
	for _, p := range listModule(t) {
		byPath[p.ImportPath] = p
	}
	return byPath
}
