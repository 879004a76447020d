package tasks

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func restoreEnv(t *testing.T, archived string) *Env {
	t.Helper()
	env := observedEnv(t, []string{"cp1", "cp2", "cp3", "w1"}, map[string]bool{"cp1": true, "cp2": true, "cp3": true})
	env.Inv.Cluster.KubernetesVersion = "v1.37.2"
	env.Restore = &Restore{Archive: &Archive{Path: "b.tar.gz", SHA256: "ab12", Manifest: BackupManifest{KubernetesVersion: archived, Revision: 9}}}
	return env
}

func TestPlanRestoreFromWhatTheHostsHold(t *testing.T) {
	env := restoreEnv(t, "v1.37.1")
	cp1, cp2, cp3 := env.hostNamed("cp1"), env.hostNamed("cp2"), env.hostNamed("cp3")
	cp1.Facts.StaticPods, cp1.Facts.EtcdData, cp1.Facts.KubeletVersion = true, true, "v1.37.2" // a running control plane
	// cp2: a restore of this archive placed its data, then stopped.
	cp2.Facts.HeldPods, cp2.Facts.EtcdData = true, true
	cp2.Facts.RestoreMarker = `{"archive":"ab12","token":"kubeforge-restore-feed","phase":"placed","time":"2026-12-01T10:00:00Z"}`
	// cp3: a new host.
	if err := PlanRestore(RestoreOptions{})(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	p := env.Restore.Plan
	if p.Token != "kubeforge-restore-feed" || !p.Resumed {
		t.Errorf("token %q resumed=%v; want the token of the restore under way", p.Token, p.Resumed)
	}
	want := map[string]RestoreHost{
		"cp1": {Host: "cp1", Stop: true, KeepOldData: "/var/lib/etcd.before-restore-"},
		"cp2": {Host: "cp2", Placed: true},
		"cp3": {Host: "cp3", Install: true},
	}
	for _, h := range p.Hosts {
		w := want[h.Host]
		got := h
		if strings.HasPrefix(got.KeepOldData, w.KeepOldData) && w.KeepOldData != "" {
			got.KeepOldData = w.KeepOldData
		}
		if got != w {
			t.Errorf("%s: %+v; want %+v", h.Host, h, w)
		}
	}
	if len(p.Members) != 3 || !strings.HasPrefix(p.Members[0], "cp1=https://") {
		t.Errorf("members %v", p.Members)
	}
	for _, cp := range []*Host{cp1, cp2, cp3} {
		if prm := env.etcdParamsFor(cp); prm.InitialCluster != strings.Join(p.Members, ",") || prm.InitialClusterState != "existing" {
			t.Errorf("%s etcd flags %+v", cp.Name, prm)
		}
	}

	// A marker of another archive is not resumed: a new token.
	env = restoreEnv(t, "v1.37.2")
	env.hostNamed("cp2").Facts.RestoreMarker = `{"archive":"other","token":"kubeforge-restore-feed","phase":"placed"}`
	env.hostNamed("cp2").Facts.EtcdData = true
	if err := PlanRestore(RestoreOptions{})(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if p := env.Restore.Plan; p.Resumed || p.Token == "kubeforge-restore-feed" || p.Hosts[1].Placed || p.Hosts[1].KeepOldData == "" {
		t.Errorf("a marker of another archive was resumed: %+v", p)
	}
}

func TestRestoreRefusesAnotherMinorUnlessAllowed(t *testing.T) {
	for _, tc := range []struct {
		archived, kubelet string
		allow             bool
		want              string
	}{
		{archived: "v1.36.4", want: "the inventory is v1.37.2"},
		{archived: "v1.37.0", kubelet: "v1.38.0", want: "the kubelet on cp1 is v1.38.0"},
		{archived: "v1.36.4", allow: true},
		{archived: "v1.37.0", kubelet: "v1.37.2"},
	} {
		env := restoreEnv(t, tc.archived)
		env.hostNamed("cp1").Facts.KubeletVersion = tc.kubelet
		err := PlanRestore(RestoreOptions{AllowOtherVersion: tc.allow})(context.Background(), env)
		var ref *ErrRefused
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc, err)
		case tc.want != "" && (!errors.As(err, &ref) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v; want a refusal saying %q", tc, err, tc.want)
		}
	}
}

func TestRenewedSinceCountsInventoryHostsOnly(t *testing.T) {
	now := time.Now()
	lease := func(name string, at time.Time) coordinationv1.Lease {
		return coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: at}}}
	}
	renewed, waiting := renewedSince([]coordinationv1.Lease{lease("a", now.Add(time.Second)), lease("b", now.Add(-time.Minute)), lease("gone", now.Add(-time.Hour))},
		now, map[string]bool{"a": true, "b": true})
	if strings.Join(renewed, ",") != "a" || strings.Join(waiting, ",") != "b" {
		t.Errorf("renewed %v waiting %v", renewed, waiting)
	}
}
