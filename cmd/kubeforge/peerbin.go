package main

import (
	"embed"
)

// peerBins holds the kubeforge-peer binaries `make build` put in peerbin/
// (none with a plain `go build`: then kubeforge sends itself to the hosts
// that serve their peers).
//
//go:embed peerbin
var peerBins embed.FS

// peerServer returns the embedded kubeforge-peer for linux/goarch.
func peerServer(goarch string) ([]byte, bool) {
	b, err := peerBins.ReadFile("peerbin/kubeforge-peer-linux-" + goarch)
	return b, err == nil && len(b) > 0
}
