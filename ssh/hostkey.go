package ssh

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyError is a host key that could not be verified: unknown (not in any known_hosts file)
// or changed (a different key is recorded: possibly a man-in-the-middle; always fatal).
type HostKeyError struct {
	Host        string // inventory name
	Address     string // host:port dialled
	Fingerprint string // SHA256 fingerprint of the key the server presented
	KeyType     string // e.g. ssh-ed25519
	Changed     bool   // a different key is recorded for this host
	KnownFile   string // for Changed: the known_hosts file holding the old key
	KnownLine   int    // for Changed: its line
	Err         error  // the underlying knownhosts error, if any
}

// Error says what happened and what to do.
func (e *HostKeyError) Error() string {
	if e.Changed {
		return fmt.Sprintf("verify host key of %s (%s): HOST KEY CHANGED: the server presented %s %s but %s:%d holds a different key; "+
			"this may be a man-in-the-middle attack; if the host was reinstalled, remove that line (ssh-keygen -R) and connect again",
			e.Host, e.Address, e.KeyType, e.Fingerprint, e.KnownFile, e.KnownLine)
	}
	return fmt.Sprintf("verify host key of %s (%s): unknown host key %s %s; check the fingerprint and pass --accept-new-host-keys to trust it",
		e.Host, e.Address, e.KeyType, e.Fingerprint)
}

// Unwrap returns the underlying error.
func (e *HostKeyError) Unwrap() error { return e.Err }

// hostKeys builds host key callbacks and records accepted keys. One per pool, so writes are serialized.
// The known_hosts files are parsed once per pool, not once per dial (at 1,000 hosts re-parsing a file of
// 1,000 lines on every dial was most of the connect step's CPU and of the process's heap), and parsed again
// when one of them changed (by stat: size and modification time) or the pool recorded a key.
type hostKeys struct {
	mu     sync.Mutex
	parsed map[string]xssh.HostKeyCallback // files and their stats -> the callback of knownhosts.New
	parses int                             // how many times files were parsed (tests)
}

// known returns the known_hosts callback for files, parsing them only when the pool has not yet, or when
// one of them changed since. Called with h.mu held.
func (h *hostKeys) known(files []string, stats []os.FileInfo) (xssh.HostKeyCallback, error) {
	var key strings.Builder
	for i, f := range files {
		fmt.Fprintf(&key, "%s\x00%d\x00%d\x00", f, stats[i].Size(), stats[i].ModTime().UnixNano())
	}
	if cb, ok := h.parsed[key.String()]; ok {
		return cb, nil
	}
	h.parses++
	cb, err := knownhosts.New(files...)
	if err != nil {
		return nil, err
	}
	if h.parsed == nil {
		h.parsed = map[string]xssh.HostKeyCallback{}
	}
	h.parsed[key.String()] = cb
	return cb, nil
}

// callback returns the HostKeyCallback for cfg and the host key algorithms to ask for
// (those of the keys already known for the host, so a known host is checked against its recorded key type).
func (h *hostKeys) callback(cfg *Config) (xssh.HostKeyCallback, []string, error) {
	var files []string
	var stats []os.FileInfo
	for _, f := range append(slices.Clone(cfg.KnownHostsFiles), cfg.KnownHostsWrite) {
		if f == "" || slices.Contains(files, f) {
			continue
		}
		if st, err := os.Stat(f); err == nil {
			files, stats = append(files, f), append(stats, st)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("read known_hosts %s: %w", f, err)
		}
	}
	h.mu.Lock()
	var known xssh.HostKeyCallback
	var err error
	if len(files) > 0 {
		known, err = h.known(files, stats)
	}
	h.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("read known_hosts %s: %w", strings.Join(files, ", "), err)
	}
	addr := cfg.addr()
	algos := knownAlgorithms(known, addr)

	cb := func(_ string, _ net.Addr, key xssh.PublicKey) error {
		var err error = &knownhosts.KeyError{}
		if known != nil {
			// Checked by the address dialled (as OpenSSH records it), also through a bastion tunnel.
			err = known(addr, &net.TCPAddr{}, key)
		}
		if err == nil {
			return nil
		}
		kerr := &HostKeyError{Host: cfg.Host, Address: addr, Fingerprint: xssh.FingerprintSHA256(key), KeyType: key.Type(), Err: err}
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			return kerr // revoked, or another verification error
		}
		if len(ke.Want) > 0 {
			kerr.Changed = true
			kerr.KnownFile, kerr.KnownLine = ke.Want[0].Filename, ke.Want[0].Line
			for _, w := range ke.Want { // prefer the recorded key of the same type
				if w.Key.Type() == key.Type() {
					kerr.KnownFile, kerr.KnownLine = w.Filename, w.Line
				}
			}
			return kerr
		}
		if !cfg.AcceptNewHostKeys {
			return kerr
		}
		if err := h.record(cfg.KnownHostsWrite, addr, key); err != nil {
			return err
		}
		cfg.Logger.Warn("accepted new host key", "address", addr, "key", key.Type()+" "+xssh.FingerprintSHA256(key), "file", cfg.KnownHostsWrite)
		return nil
	}
	return cb, algos, nil
}

// record appends a known_hosts line for addr to file, atomically (temp file + rename).
func (h *hostKeys) record(file, addr string, key xssh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record host key in %s: %w", file, err)
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	data := append(old, knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)+"\n"...)
	if err := writeFileAtomic(file, data, 0o600); err != nil {
		return fmt.Errorf("record host key in %s: %w", file, err)
	}
	clear(h.parsed) // the next dial reads the new key even where the file's stat looks the same
	return nil
}

// knownAlgorithms lists the host key algorithms to offer: those of the keys recorded for addr first, so a
// server with several host keys presents the one we know, then the defaults (a server that has none of the
// recorded types presents another key, which is refused as changed). nil: none known, use the defaults.
func knownAlgorithms(known xssh.HostKeyCallback, addr string) []string {
	if known == nil {
		return nil
	}
	// A key that is in no known_hosts file: the KeyError lists the keys recorded for addr.
	probe, err := xssh.NewPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(known(addr, &net.TCPAddr{}, probe), &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	for _, w := range ke.Want {
		var add []string
		switch t := w.Key.Type(); t {
		case xssh.KeyAlgoRSA:
			add = []string{xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256, xssh.KeyAlgoRSA}
		default:
			add = []string{t}
		}
		for _, a := range add {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	for _, a := range xssh.SupportedAlgorithms().HostKeys {
		if !slices.Contains(algos, a) {
			algos = append(algos, a)
		}
	}
	return algos
}

// writeFileAtomic creates path's directory (0700) and writes path atomically.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
}
