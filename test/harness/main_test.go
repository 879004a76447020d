package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestRunRejectsBadCommandLines(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "missing command"},
		{"unknown command", []string{"launch"}, `unknown command "launch"`},
		{"up without count", []string{"up", "--dir", "x"}, "give the node count"},
		{"up with a word for count", []string{"up", "three"}, `parse node count "three"`},
		{"up with zero nodes", []string{"up", "0"}, "give the node count"},
		{"up with bad user", []string{"up", "2", "--user", "admin", "--dir", "DIR"}, `user "admin"`},
		{"up with bad subnet", []string{"up", "2", "--subnet", "10.0.0.0/30", "--dir", "DIR"}, "too small"},
		{"up with more subnets than nodes", []string{"up", "2", "--subnets", "3", "--dir", "DIR"}, "at most one per node"},
		{"up with too many subnets", []string{"up", "20", "--subnets", "9", "--dir", "DIR"}, "subnets 9"},
		{"unknown flag", []string{"down", "--force"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, a := range tt.args {
				if a == "DIR" {
					tt.args[i] = t.TempDir()
				}
			}
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) error = %v, want it to mention %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestLeadingIntTakesTheCountBeforeFlags(t *testing.T) {
	n, rest, err := leadingInt([]string{"3", "--dir", "x"})
	if err != nil || n != 3 || len(rest) != 2 {
		t.Fatalf("leadingInt = %d %v %v", n, rest, err)
	}
	n, rest, err = leadingInt([]string{"--dir", "x", "3"})
	if err != nil || n != 0 || len(rest) != 3 {
		t.Fatalf("leadingInt with flags first = %d %v %v", n, rest, err)
	}
}
