package ssh

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// AuthError is an authentication failure: the server accepted none of the methods tried.
type AuthError struct {
	Host    string
	User    string
	Address string
	Methods []string // methods offered, e.g. "publickey (2 keys)", "password"
	Err     error
}

// Error tells which methods were tried and what to check.
func (e *AuthError) Error() string {
	tried := "none (no identity file, agent key or password was available)"
	if len(e.Methods) > 0 {
		tried = strings.Join(e.Methods, ", ")
	}
	return fmt.Sprintf("authenticate %s@%s (host %s): server refused every method tried: %s; check the user, the identity files or agent keys in the inventory, and the host's authorized_keys",
		e.User, e.Address, e.Host, tried)
}

// Unwrap returns the underlying error.
func (e *AuthError) Unwrap() error { return e.Err }

// authMethods builds the auth methods for cfg. The returned closer releases the agent connection.
func authMethods(cfg *Config) (methods []xssh.AuthMethod, names []string, closer func(), err error) {
	closer = func() {}
	var signers []xssh.Signer
	for _, f := range cfg.IdentityFiles {
		s, err := loadKey(f, cfg.Passphrase)
		if err != nil {
			return nil, nil, closer, err
		}
		signers = append(signers, s)
	}
	if len(signers) > 0 {
		methods = append(methods, xssh.PublicKeys(signers...))
		names = append(names, fmt.Sprintf("publickey (%d identity files)", len(signers)))
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); cfg.UseAgent && sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, nil, closer, fmt.Errorf("connect to ssh-agent %s: %w", sock, err)
		}
		closer = func() { conn.Close() }
		ag := agent.NewClient(conn)
		methods = append(methods, xssh.PublicKeysCallback(ag.Signers))
		names = append(names, "publickey (ssh-agent)")
	}
	if cfg.Password != "" {
		pw := cfg.Password
		methods = append(methods, xssh.Password(pw),
			xssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
		names = append(names, "password", "keyboard-interactive")
	}
	return methods, names, closer, nil
}

// loadKey reads a private key, asking passphrase for an encrypted one.
func loadKey(file string, passphrase func(string) ([]byte, error)) (xssh.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read identity file: %w", err)
	}
	s, err := xssh.ParsePrivateKey(data)
	var missing *xssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if passphrase == nil {
			return nil, fmt.Errorf("identity file %s is encrypted and no passphrase was given (set ssh.passphraseEnv in the inventory, or load the key into ssh-agent)", file)
		}
		pp, perr := passphrase(file)
		if perr != nil {
			return nil, fmt.Errorf("get passphrase for %s: %w", file, perr)
		}
		s, err = xssh.ParsePrivateKeyWithPassphrase(data, pp)
		clear(pp)
		if err != nil {
			return nil, fmt.Errorf("decrypt identity file %s (wrong passphrase?): %w", file, err)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parse identity file %s: %w", file, err)
	}
	return s, nil
}

// isAuthFailure reports whether a handshake error is x/crypto's "unable to authenticate".
func isAuthFailure(err error) bool {
	return err != nil && strings.Contains(err.Error(), "unable to authenticate")
}
