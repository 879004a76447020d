package tasks

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReadyOnlyFromTheRestartedKubelet: after this run restarted a node's
// kubelet, a Ready condition last reported before the restart (the old
// kubelet's) does not count; one reported at or after it does.
func TestReadyOnlyFromTheRestartedKubelet(t *testing.T) {
	restart := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	node := func(heartbeat time.Time) *corev1.Node {
		return &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.NewTime(heartbeat)}}}}
	}
	for _, tc := range []struct {
		name      string
		heartbeat time.Time
		restarted time.Time
		want      bool
	}{
		{"no restart this run", restart.Add(-time.Hour), time.Time{}, true},
		{"reported before the restart", restart.Add(-time.Second), restart, false},
		{"reported in the second of the restart", restart, restart, true},
		{"reported after the restart", restart.Add(5 * time.Second), restart, true},
	} {
		if got := readySince(node(tc.heartbeat), tc.restarted); got != tc.want {
			t.Errorf("%s: readySince = %v, want %v", tc.name, got, tc.want)
		}
	}
	if readySince(&corev1.Node{}, restart) {
		t.Error("a node without a Ready condition counts as ready since the restart")
	}
}
