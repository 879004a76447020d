// Package parity checks kubeforge against kubeadm as an oracle: for the same
// cluster settings it renders kubeadm's output with kubeadm's own code (the
// kubeadm binary the artifacts build compiles from k8s.io/kubernetes, run as
// `kubeadm init --dry-run` in a throwaway harness container) and kubeforge's,
// flattens both to path=value pairs and compares them field by field. The
// test (parity_test.go, build tag parity) holds the allow-list of intended
// differences.
package parity

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// KubeadmOutput is what `kubeadm init --dry-run` renders: the files it would
// write (keyed by their path on a host) and the API objects it would create.
type KubeadmOutput struct {
	Files   map[string][]byte
	Objects []runtime.Object
}

// RunKubeadm renders config with kubeadm (binary at kubeadm) inside a
// container of image, so nothing is written on the workstation. setup is a
// shell command run in the container first (to shape the host kubeadm sees).
func RunKubeadm(kubeadm, image, config, setup string) (*KubeadmOutput, error) {
	work, err := os.MkdirTemp("", "kubeforge-parity-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "kubeadm.yaml"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	if setup == "" {
		setup = "true"
	}
	script := setup + "\n" + `kubeadm init --dry-run --config /work/kubeadm.yaml --ignore-preflight-errors=all >/work/stdout 2>/work/stderr; rc=$?
mkdir -p /work/out && cp -r /etc/kubernetes/tmp/kubeadm-init-dryrun*/. /work/out/ 2>/dev/null; exit $rc`
	cmd := exec.Command("docker", "run", "--rm", "--network", "none", "--entrypoint", "sh",
		"-v", kubeadm+":/usr/local/bin/kubeadm:ro", "-v", work+":/work", image, "-c", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		stderr, _ := os.ReadFile(filepath.Join(work, "stderr"))
		return nil, fmt.Errorf("kubeadm init --dry-run: %v: %s%s", err, out, lastLines(stderr, 15))
	}
	stdout, err := os.ReadFile(filepath.Join(work, "stdout"))
	if err != nil {
		return nil, err
	}
	o := &KubeadmOutput{Files: map[string][]byte{}}
	if o.Objects, err = dryRunObjects(stdout); err != nil {
		return nil, err
	}
	out := filepath.Join(work, "out")
	err = filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		o.Files[hostPath(rel)] = b
		return nil
	})
	return o, err
}

// hostPath maps a file of kubeadm's dry-run directory to where kubeadm
// writes it on a host.
func hostPath(rel string) string {
	switch ext := filepath.Ext(rel); {
	case rel == "config.yaml" || rel == "instance-config.yaml" || rel == "kubeadm-flags.env":
		return "/var/lib/kubelet/" + rel
	case ext == ".conf":
		return "/etc/kubernetes/" + rel
	case ext == ".yaml":
		return "/etc/kubernetes/manifests/" + rel
	default:
		return "/etc/kubernetes/pki/" + rel
	}
}

// dryRunObjects decodes the objects kubeadm's dry run says it would create:
// each follows a `Would perform action CREATE` line and `Attached object:`,
// up to the next `[phase]` line.
func dryRunObjects(stdout []byte) ([]runtime.Object, error) {
	var objs []runtime.Object
	lines := strings.Split(string(stdout), "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "[dryrun] Would perform action CREATE") || i+1 >= len(lines) || lines[i+1] != "[dryrun] Attached object:" {
			continue
		}
		var b bytes.Buffer
		for i += 2; i < len(lines) && !strings.HasPrefix(lines[i], "["); i++ {
			b.WriteString(lines[i] + "\n")
		}
		i--
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(b.Bytes(), nil, nil)
		if err != nil {
			return nil, fmt.Errorf("decode an object of kubeadm's dry run: %w\n%s", err, b.String())
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("kubeadm's dry run printed no objects")
	}
	return objs, nil
}

func lastLines(b []byte, n int) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
