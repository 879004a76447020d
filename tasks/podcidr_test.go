package tasks

import (
	"strings"
	"testing"
)

func TestCIDRAllocatorHandsOutFreeBlocksInOrder(t *testing.T) {
	a, err := newCIDRAllocator("10.244.0.0/16", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.occupy("10.244.1.0/24")
	var got []string
	for i := 0; i < 3; i++ {
		c, err := a.next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	if want := "10.244.0.0/24 10.244.2.0/24 10.244.3.0/24"; strings.Join(got, " ") != want {
		t.Errorf("got %s; want %s", strings.Join(got, " "), want)
	}
	small, err := newCIDRAllocator("10.0.0.0/23", map[string]string{"node-cidr-mask-size": "24"})
	if err != nil {
		t.Fatal(err)
	}
	small.next()
	small.next()
	if _, err := small.next(); err == nil {
		t.Error("no error when the pod subnet is full")
	}
	for _, bad := range []string{"fd00::/48", "nonsense"} {
		if _, err := newCIDRAllocator(bad, nil); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if _, err := newCIDRAllocator("10.244.0.0/16", map[string]string{"node-cidr-mask-size": "12"}); err == nil {
		t.Error("a node mask shorter than the subnet was accepted")
	}
}
