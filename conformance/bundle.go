// Package conformance runs Kubernetes' own conformance suite against a kubeforge cluster, offline: e2e.test and
// ginkgo from a bundle in the artifacts directory (conformance/, built by test/scripts/conformance.sh from the
// same k8s.io/kubernetes module as the artifacts), the test images pulled through the cluster's registry mirrors.
//
// Check says, before anything runs, what would make the run meaningless (no bundle, another version, an image
// no mirror serves, fewer than two schedulable nodes); Run runs the specs in two phases (the parallel ones with
// ginkgo --procs, then the serial ones), reports progress as specs finish, and summarises the JUnit reports.
package conformance

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BundleDir is where an artifacts directory holds the suite.
const BundleDir = "conformance"

// Bundle is the suite of one Kubernetes version.
type Bundle struct {
	Dir     string // absolute
	Version string
	// Images are the images the specs pull, as the version's test/utils/image/manifest.go names them.
	Images []string
}

// E2ETest, Ginkgo and Kubectl are the bundle's programs.
func (b *Bundle) E2ETest() string { return filepath.Join(b.Dir, "bin", "e2e.test") }
func (b *Bundle) Ginkgo() string  { return filepath.Join(b.Dir, "bin", "ginkgo") }
func (b *Bundle) Kubectl() string { return filepath.Join(b.Dir, "bin", "kubectl") }

// LoadBundle reads the bundle of an artifacts directory; the error names what is missing and how to make it.
func LoadBundle(artifacts string) (*Bundle, error) {
	if artifacts == "" {
		return nil, fmt.Errorf("no artifacts directory: set cluster.artifacts in the inventory or pass --artifacts")
	}
	abs, err := filepath.Abs(filepath.Join(artifacts, BundleDir))
	if err != nil {
		return nil, err
	}
	b := &Bundle{Dir: abs}
	const build = "build it with `make conformance-bundle ARTIFACTS=<dir>` (test/scripts/conformance.sh)"
	for _, p := range []string{b.E2ETest(), b.Ginkgo(), b.Kubectl()} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("no conformance bundle in %s: %s is missing; %s", artifacts, p, build)
		}
		if fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("conformance bundle: %s is not executable", p)
		}
	}
	v, err := os.ReadFile(filepath.Join(abs, "VERSION"))
	if err != nil {
		return nil, fmt.Errorf("conformance bundle in %s has no VERSION; %s", artifacts, build)
	}
	b.Version = strings.TrimSpace(string(v))
	f, err := os.Open(filepath.Join(abs, "images.txt"))
	if err != nil {
		return nil, fmt.Errorf("conformance bundle in %s has no images.txt; %s", artifacts, build)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" && !strings.HasPrefix(line, "#") {
			b.Images = append(b.Images, line)
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if len(b.Images) == 0 {
		return nil, fmt.Errorf("conformance bundle in %s lists no images in images.txt", artifacts)
	}
	return b, nil
}
