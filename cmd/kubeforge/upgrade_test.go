package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestViaBuildsAreReadInVersionOrderAndOnePerMinor(t *testing.T) {
	build := func(version string) string {
		dir := t.TempDir()
		if version != "" {
			if err := os.WriteFile(filepath.Join(dir, "VERSION"), []byte(version+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	v36, v35, v36b := build("v1.36.3"), build("v1.35.4"), build("v1.36.1")
	got, err := viaBuilds([]string{v36, v35})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Version != "v1.35.4" || got[1].Version != "v1.36.3" || got[0].Artifacts != v35 {
		t.Errorf("builds %+v; want v1.35.4 (%s) then v1.36.3", got, v35)
	}
	for _, tc := range []struct {
		name string
		dirs []string
		want string
	}{
		{"two builds of one minor", []string{v36, v36b}, "two builds of one minor"},
		{"no VERSION file", []string{build("")}, "holds a VERSION file"},
		{"a VERSION that is not one", []string{build("latest")}, `its VERSION "latest"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := viaBuilds(tc.dirs); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want one saying %q", err, tc.want)
			}
		})
	}
}
