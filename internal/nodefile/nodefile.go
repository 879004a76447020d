// Package nodefile holds the one type every package uses for a file a host
// receives: its path on the host, its mode and its content.
package nodefile

import "os"

// File is one file a host receives.
type File struct {
	Path string      // absolute path on the host, e.g. /etc/kubernetes/pki/apiserver.crt
	Mode os.FileMode // 0600 for private keys and kubeconfigs with credentials, 0644 for the rest
	Data []byte
}
