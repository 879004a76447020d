package harnesslib

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// DockerError is a failed docker CLI call.
type DockerError struct {
	Args   []string
	Output string
	Err    error
}

func (e *DockerError) Error() string {
	return fmt.Sprintf("docker %s: %v: %s", strings.Join(e.Args, " "), e.Err, e.Output)
}

func (e *DockerError) Unwrap() error { return e.Err }

// docker runs the docker CLI and returns its trimmed stdout.
func docker(ctx context.Context, args ...string) (string, error) {
	return dockerIn(ctx, nil, args...)
}

// dockerIn runs the docker CLI with stdin.
func dockerIn(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdin = stdin
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return "", &DockerError{Args: args, Output: shortErr(append(errb.Bytes(), out.Bytes()...)), Err: err}
	}
	return strings.TrimSpace(out.String()), nil
}

// lines splits docker output into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// instanceFilter selects objects the harness instance made.
func instanceFilter(instance string) []string {
	return []string{"--filter", "label=" + LabelHarness + "=1", "--filter", "label=" + LabelInstance + "=" + instance}
}

// labelArgs are the labels of an object the harness makes.
func labelArgs(instance, node string) []string {
	a := []string{"--label", LabelHarness + "=1", "--label", LabelInstance + "=" + instance}
	if node != "" {
		a = append(a, "--label", LabelNode+"="+node)
	}
	return a
}

// inspectLabel returns a label of a docker object, and whether the object exists.
func inspectLabel(ctx context.Context, kind, name, label string) (string, bool, error) {
	out, err := docker(ctx, kind, "inspect", "--format", fmt.Sprintf("{{index .%s %q}}", labelsField(kind), label), name)
	if err != nil {
		var de *DockerError
		if errors.As(err, &de) && (strings.Contains(strings.ToLower(de.Output), "no such") || strings.Contains(strings.ToLower(de.Output), "not found")) {
			return "", false, nil
		}
		return "", false, err
	}
	if out == "<no value>" {
		out = ""
	}
	return out, true, nil
}

func labelsField(kind string) string {
	if kind == "container" {
		return "Config.Labels"
	}
	return "Labels"
}

// CheckDocker reports a clear error when the docker daemon does not answer.
func CheckDocker(ctx context.Context) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return fmt.Errorf("find docker: %w (run test/scripts/prereqs.sh)", err)
	}
	if _, err := docker(ctx, "version", "--format", "{{.Server.Version}}"); err != nil {
		return fmt.Errorf("reach docker daemon (run test/scripts/prereqs.sh): %w", err)
	}
	return nil
}
